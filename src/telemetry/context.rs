//! W3C Trace Context (`traceparent`, `tracestate`): what a request says of the trace it
//! belongs to, and the `traceparent` Wharf hands on for its own span.
//! <https://www.w3.org/TR/trace-context/>

use bytes::Bytes;

/// A `traceparent`'s ids and whether its sender sampled the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// The request's trace context: its `traceparent` if one is valid (a request with two,
/// or an invalid one, starts a new trace, as the spec says), and its `tracestate`,
/// passed on as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    pub parent: Option<Parent>,
    pub state: Option<Bytes>,
}

impl Incoming {
    pub fn of(headers: &[(Bytes, Bytes)]) -> Incoming {
        let mut parents = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"traceparent"));
        let parent = match (parents.next(), parents.next()) {
            (Some((_, value)), None) => parse_traceparent(value),
            _ => None,
        };
        // A tracestate only means something next to the traceparent it came with.
        let state = parent.and_then(|_| {
            headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(b"tracestate"))
                .map(|(_, value)| value.clone())
        });
        Incoming { parent, state }
    }
}

/// Parses a `traceparent` value: `version-traceid-parentid-flags`, lower-case hex. A
/// version other than `00` may carry more fields after these, which are ignored; version
/// `ff`, all-zero ids and anything malformed give `None`.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let value = value.trim_ascii();
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_u8(&value[..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = u128::from_str_radix(lower_hex(&value[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&value[36..52])?, 16).ok()?;
    let flags = hex_u8(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` of a span: version 00. Written digit by digit, without the
/// formatting machinery: every request that telemetry sees gets one, twice.
pub fn format_traceparent(trace_id: u128, span_id: u64, sampled: bool) -> Bytes {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    out.extend(
        (0..32)
            .rev()
            .map(|i| DIGITS[((trace_id >> (i * 4)) & 0xf) as usize]),
    );
    out.push(b'-');
    out.extend(
        (0..16)
            .rev()
            .map(|i| DIGITS[((span_id >> (i * 4)) & 0xf) as usize]),
    );
    out.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    Bytes::from(out)
}

fn lower_hex(digits: &[u8]) -> Option<&str> {
    digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(digits).ok())
        .flatten()
}

fn hex_u8(digits: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(digits)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_spec_example_and_writes_it_back() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.span_id, 0x00f067aa0ba902b7);
        assert!(parent.sampled);
        assert_eq!(
            format_traceparent(parent.trace_id, parent.span_id, true),
            VALID.as_bytes()
        );
        let unsampled = parse_traceparent(
            &VALID.as_bytes()[..54]
                .iter()
                .chain(b"0")
                .copied()
                .collect::<Vec<_>>(),
        );
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may add fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn two_traceparents_start_a_new_trace_and_tracestate_needs_one() {
        let field = |n: &'static str, v: &'static str| (Bytes::from(n), Bytes::from(v));
        let one = Incoming::of(&[
            field("TraceParent", VALID),
            field("tracestate", "congo=t61rcWkgMzE"),
        ]);
        assert!(one.parent.is_some());
        assert_eq!(one.state.as_deref(), Some(&b"congo=t61rcWkgMzE"[..]));
        let two = Incoming::of(&[field("traceparent", VALID), field("traceparent", VALID)]);
        assert_eq!(two, Incoming::default());
        let lone = Incoming::of(&[field("tracestate", "congo=t61rcWkgMzE")]);
        assert_eq!(lone, Incoming::default());
    }
}

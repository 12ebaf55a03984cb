//! A served file's validators and what a request's conditions make of them: `ETag`
//! in Unit's form (`"<mtime hex>-<size hex>"`), `Last-Modified`, `If-None-Match` /
//! `If-Modified-Since` → 304 (RFC 9110 §13.2.2 order: `If-None-Match` decides when
//! present), and one byte range (`Range`, `If-Range`) → 206 or 416.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    pub last_modified: String,
    mtime: i64,
}

impl Validators {
    pub fn new(mtime: i64, size: u64) -> Self {
        let modified = if mtime >= 0 {
            UNIX_EPOCH + Duration::from_secs(mtime.unsigned_abs())
        } else {
            UNIX_EPOCH
        };
        Self {
            // Unit prints the signed time_t in hex; a file older than 1970 is unusual
            // enough that its two's-complement form does no harm.
            etag: format!("\"{mtime:x}-{size:x}\""),
            last_modified: httpdate::fmt_http_date(modified),
            mtime,
        }
    }

    /// Whether the client's copy is current (304), from the request's fields.
    pub fn not_modified<'a>(&self, mut fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let mut none_match: Option<bool> = None;
        let mut since: Option<&[u8]> = None;
        for (name, value) in &mut fields {
            if name.eq_ignore_ascii_case(b"if-none-match") {
                let hit = etag_list_matches(value, &self.etag, false);
                none_match = Some(none_match.unwrap_or(false) || hit);
            } else if name.eq_ignore_ascii_case(b"if-modified-since") && since.is_none() {
                since = Some(value);
            }
        }
        if let Some(hit) = none_match {
            return hit;
        }
        since
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
            .is_some_and(|date| self.mtime <= seconds(date))
    }

    /// Whether an `If-Range` value still names this version (a strong ETag, or the
    /// exact `Last-Modified` date).
    fn if_range_holds(&self, value: &[u8]) -> bool {
        let value = trim(value);
        if value.first() == Some(&b'"') || value.starts_with(b"W/") {
            return value == self.etag.as_bytes();
        }
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| httpdate::parse_http_date(text).ok())
            .is_some_and(|date| seconds(date) == self.mtime)
    }
}

fn seconds(date: SystemTime) -> i64 {
    date.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Whether a comma-separated list of entity tags (or `*`) matches `etag`: weakly
/// (`W/` ignored) unless `strong`.
fn etag_list_matches(list: &[u8], etag: &str, strong: bool) -> bool {
    list.split(|&b| b == b',').map(trim).any(|tag| {
        if tag == b"*" {
            return true;
        }
        match tag.strip_prefix(b"W/") {
            Some(_) if strong => false,
            Some(weak) => weak == etag.as_bytes(),
            None => tag == etag.as_bytes(),
        }
    })
}

/// What a request's `Range` makes of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The whole file (no range, an ignored one, or several).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// No range of the request lies in the file: 416.
    Unsatisfiable,
}

/// The span to send. Only one `bytes` range is served; a request for several gets the
/// whole file (RFC 9110 §14.2 lets a server ignore `Range`), as does a malformed one or
/// one whose `If-Range` no longer holds.
pub fn span<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    size: u64,
    validators: &Validators,
) -> Span {
    let mut range = None;
    let mut ranges = 0;
    let mut if_range = None;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"range") {
            range = Some(value);
            ranges += 1;
        } else if name.eq_ignore_ascii_case(b"if-range") {
            if_range = Some(value);
        }
    }
    let Some(range) = range.filter(|_| ranges == 1) else {
        return Span::Whole;
    };
    if if_range.is_some_and(|value| !validators.if_range_holds(value)) {
        return Span::Whole;
    }
    let range = trim(range);
    let Some(spec) = range
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| trim(&range[6..]))
    else {
        return Span::Whole;
    };
    if spec.contains(&b',') {
        return Span::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Span::Whole;
    };
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    let number = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match number(last) {
            None => Span::Whole,
            Some(0) => Span::Unsatisfiable,
            Some(_) if size == 0 => Span::Unsatisfiable,
            Some(n) => Span::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (false, _) => {
            let Some(start) = number(first) else {
                return Span::Whole;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return Span::Whole,
                }
            };
            if start >= size {
                Span::Unsatisfiable
            } else {
                Span::Part {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        (true, true) => Span::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn unit_validators() {
        let v = Validators::new(0x5f00_0000, 26);
        assert_eq!(v.etag, "\"5f000000-1a\"");
        assert_eq!(v.last_modified, "Sat, 04 Jul 2020 04:05:20 GMT");
    }

    #[test]
    fn conditions() {
        let v = Validators::new(0x5f00_0000, 26);
        let date = v.last_modified.clone();
        let etag = v.etag.clone();
        assert!(v.not_modified(fields(&[("If-None-Match", &etag)])));
        assert!(v.not_modified(fields(&[("if-none-match", &format!("\"x\", W/{etag}"))])));
        assert!(v.not_modified(fields(&[("If-None-Match", "*")])));
        assert!(v.not_modified(fields(&[("If-Modified-Since", &date)])));
        assert!(!v.not_modified(fields(&[(
            "If-Modified-Since",
            "Thu, 02 Jul 2020 00:00:00 GMT"
        )])));
        // If-None-Match decides when present.
        assert!(!v.not_modified(fields(&[
            ("If-None-Match", "\"x\""),
            ("If-Modified-Since", &date)
        ])));
        assert!(!v.not_modified(fields(&[("If-Modified-Since", "garbage")])));
        assert!(!v.not_modified(fields(&[])));
    }

    #[test]
    fn ranges() {
        let v = Validators::new(100, 10);
        let s = |range: &str| span(fields(&[("Range", range)]), 10, &v);
        assert_eq!(s("bytes=0-3"), Span::Part { start: 0, end: 3 });
        assert_eq!(s("bytes=4-"), Span::Part { start: 4, end: 9 });
        assert_eq!(s("bytes=-3"), Span::Part { start: 7, end: 9 });
        assert_eq!(s("bytes=-30"), Span::Part { start: 0, end: 9 });
        assert_eq!(s("bytes=5-100"), Span::Part { start: 5, end: 9 });
        assert_eq!(s("bytes=10-"), Span::Unsatisfiable);
        assert_eq!(s("bytes=-0"), Span::Unsatisfiable);
        assert_eq!(s("bytes=3-1"), Span::Whole);
        assert_eq!(s("bytes=0-1,4-5"), Span::Whole);
        assert_eq!(s("items=0-1"), Span::Whole);
        assert_eq!(s("bytes=a-1"), Span::Whole);
        let stale = [("Range", "bytes=0-1"), ("If-Range", "\"other\"")];
        assert_eq!(span(fields(&stale), 10, &v), Span::Whole);
        let etag = v.etag.clone();
        let fresh = [("Range", "bytes=0-1"), ("If-Range", etag.as_str())];
        assert_eq!(
            span(fields(&fresh), 10, &v),
            Span::Part { start: 0, end: 1 }
        );
    }
}

//! Request heads: parsing them off the read buffer (`httparse`) and checking what they
//! say about the exchange (RFC 9112: `Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Expect`, the request-target), as pure functions over bytes. Every
//! refusal is one `HeadError`, and `HeadError::status` is the one place that says which
//! status the client gets for it.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::encode::{has_token, parse_decimal};
use super::{Settings, Target, TargetError, Version};

/// Largest request head.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 512;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum HeadError {
    #[error("the request head is malformed")]
    Malformed,
    #[error("the request head is too large or has too many fields")]
    TooLarge,
    #[error("the request names an HTTP version other than 1.0 and 1.1")]
    Version,
    #[error("the request head did not arrive in time")]
    Timeout,
    #[error("the request has no Host field (HTTP/1.1) or more than one")]
    Host,
    #[error("the request's Content-Length is invalid or conflicting")]
    ContentLength,
    #[error("the request's Content-Length is too large to represent")]
    LengthOverflow,
    #[error("the request's Transfer-Encoding is empty or comes with a Content-Length")]
    TransferEncoding,
    #[error("the request's Transfer-Encoding is not just `chunked`")]
    UnsupportedCoding,
    #[error("the request body is larger than the limit")]
    BodyTooLarge,
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl HeadError {
    /// The status the client is answered with.
    pub(super) fn status(self) -> u16 {
        match self {
            Self::Malformed
            | Self::Host
            | Self::ContentLength
            | Self::TransferEncoding
            | Self::Target(_) => 400,
            Self::Timeout => 408,
            Self::LengthOverflow | Self::BodyTooLarge => 413,
            Self::TooLarge => 431,
            Self::UnsupportedCoding => 501,
            Self::Version => 505,
        }
    }
}

/// A parsed request head, every part a slice of the bytes it came in.
pub(super) struct Head {
    pub(super) method: Bytes,
    pub(super) target: Bytes,
    pub(super) version: Version,
    pub(super) headers: Vec<(Bytes, Bytes)>,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// What a head says about its exchange.
pub(super) struct Semantics {
    pub(super) framing: BodyFraming,
    pub(super) keep_alive: bool,
    /// The framing cannot be trusted for a next request.
    pub(super) force_close: bool,
    pub(super) expect_continue: bool,
}

/// A head that passed every check, with its request-target parsed.
pub(super) struct Checked {
    pub(super) method: Bytes,
    pub(super) target: Target,
    pub(super) version: Version,
    pub(super) headers: Vec<(Bytes, Bytes)>,
    pub(super) semantics: Semantics,
}

/// Checks a head, in the order whose first refusal the client hears: framing and
/// connection fields, the body's size against `max_body_size`, then the request-target
/// (taken as sent with `verbatim_targets`). With `discard_unsafe_fields`, fields
/// `is_safe_field_name` refuses are dropped.
pub(super) fn check(head: Head, settings: &Settings) -> Result<Checked, HeadError> {
    let max_body_size = settings.max_body_size;
    let semantics = examine(&head)?;
    if let BodyFraming::Length(n) = semantics.framing
        && n > max_body_size
    {
        return Err(HeadError::BodyTooLarge);
    }
    let Head {
        method,
        target,
        version,
        mut headers,
    } = head;
    // (Checked first: `retain` costs more than a look, and nearly every head is clean.)
    if settings.discard_unsafe_fields && !headers.iter().all(|(name, _)| is_safe_field_name(name)) {
        headers.retain(|(name, _)| is_safe_field_name(name));
    }
    let target = if settings.verbatim_targets {
        Target::verbatim(target)
    } else {
        Target::parse(target)?
    };
    Ok(Checked {
        method,
        target,
        version,
        headers,
        semantics,
    })
}

/// A header field name Unit considers safe: letters, digits and `-` only.
pub fn is_safe_field_name(name: &[u8]) -> bool {
    // One table look-up a byte: this runs on every request header field.
    const SAFE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b as u8).is_ascii_alphanumeric() || b == b'-' as usize;
            b += 1;
        }
        table
    };
    name.iter().all(|&b| SAFE[usize::from(b)])
}

/// Takes a request head off the front of `buf`: `Ok(None)` while incomplete. The head is
/// split off the read buffer, not copied: every part of the request is a slice of it.
/// `spans` is scratch space, kept by the connection so that a request costs no
/// allocation for it.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<[usize; 4]>,
) -> Result<Option<Head>, HeadError> {
    let Some((len, method, target, minor)) = locate(buf, spans)? else {
        return Ok(None);
    };
    let head = buf.split_to(len).freeze();
    let headers = spans
        .iter()
        .map(|&[name_at, name_end, value_at, value_end]| {
            (
                head.slice(name_at..name_end),
                head.slice(value_at..value_end),
            )
        })
        .collect();
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    Ok(Some(Head {
        method: head.slice(method[0]..method[1]),
        target: head.slice(target[0]..target[1]),
        version,
        headers,
    }))
}

/// Where a complete head, its method, target and fields (into `spans`) lie in `buf`, and
/// its minor version.
type Located = (usize, [usize; 2], [usize; 2], u8);

fn locate(buf: &[u8], spans: &mut Vec<[usize; 4]>) -> Result<Option<Located>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) if names_another_version(buf) => {
            return Err(HeadError::Version);
        }
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed);
    };
    // httparse hands out slices of the head; keep where each lies.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let at = (s.as_ptr() as usize).wrapping_sub(base);
        match at.checked_add(s.len()) {
            Some(end) if end <= len => Ok([at, end]),
            // An empty part need not point into the head.
            _ if s.is_empty() => Ok([0, 0]),
            _ => Err(HeadError::Malformed),
        }
    };
    spans.clear();
    for header in request.headers.iter() {
        let [name_at, name_end] = span(header.name.as_bytes())?;
        let [value_at, value_end] = span(header.value)?;
        spans.push([name_at, name_end, value_at, value_end]);
    }
    Ok(Some((
        len,
        span(method.as_bytes())?,
        span(target.as_bytes())?,
        minor,
    )))
}

/// The request line ends in a well-formed version other than HTTP/1.0 and 1.1.
fn names_another_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    version.strip_prefix(b"HTTP/").is_some_and(|rest| {
        rest.first().is_some_and(u8::is_ascii_digit)
            && rest.iter().all(|&b| b.is_ascii_digit() || b == b'.')
    })
}

/// The head's framing and connection fields, as seen in one pass.
#[derive(Default)]
struct Fields {
    hosts: usize,
    length: Option<u64>,
    transfer_encoding: bool,
    codings: usize,
    /// Some coding is not `chunked`.
    not_only_chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    fn read(headers: &[(Bytes, Bytes)]) -> Result<Self, HeadError> {
        let mut fields = Self::default();
        for (name, value) in headers {
            let name = name.as_ref();
            if name.eq_ignore_ascii_case(b"host") {
                fields.hosts += 1;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value)?;
                if fields.length.is_some_and(|l| l != n) {
                    return Err(HeadError::ContentLength);
                }
                fields.length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                fields.transfer_encoding = true;
                for coding in value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty())
                {
                    fields.codings += 1;
                    fields.not_only_chunked |= !coding.eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                fields.close |= has_token(value, b"close");
                fields.keep_alive |= has_token(value, b"keep-alive");
            } else if name.eq_ignore_ascii_case(b"expect") {
                fields.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(fields)
    }
}

fn content_length(value: &[u8]) -> Result<u64, HeadError> {
    let value = value.trim_ascii();
    match parse_decimal(value) {
        Some(n) => Ok(n),
        None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
            Err(HeadError::LengthOverflow)
        }
        None => Err(HeadError::ContentLength),
    }
}

/// Checks the head's framing and connection fields.
pub(super) fn examine(head: &Head) -> Result<Semantics, HeadError> {
    let fields = Fields::read(&head.headers)?;
    let http11 = head.version == Version::Http11;
    if fields.hosts > 1 || (fields.hosts == 0 && http11) {
        return Err(HeadError::Host);
    }
    let framing = if fields.transfer_encoding {
        if fields.length.is_some() || fields.codings == 0 {
            return Err(HeadError::TransferEncoding);
        }
        if fields.codings > 1 || fields.not_only_chunked {
            return Err(HeadError::UnsupportedCoding);
        }
        BodyFraming::Chunked
    } else {
        match fields.length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    Ok(Semantics {
        framing,
        keep_alive: !fields.close && (http11 || fields.keep_alive),
        force_close: fields.transfer_encoding && !http11,
        expect_continue: fields.expect_continue && http11,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default settings with bodies up to `max_body_size` bytes.
    fn limits(max_body_size: u64) -> Settings {
        Settings {
            max_body_size,
            ..Settings::default()
        }
    }

    #[test]
    fn safe_field_names_are_letters_digits_and_dashes() {
        for b in 0..=u8::MAX {
            let safe = b.is_ascii_alphanumeric() || b == b'-';
            assert_eq!(is_safe_field_name(&[b]), safe, "byte {b}");
        }
        assert!(is_safe_field_name(b"X-Forwarded-For"));
        assert!(!is_safe_field_name(b"X_Forwarded_For"));
    }

    #[test]
    fn heads_are_split_off_the_read_buffer() {
        let mut buf = BytesMut::from(
            &b"GET /a?x HTTP/1.1\r\nHost: t\r\nX-Empty:\r\n\r\nPOST /b HTTP/1.0\r\n\r\nGE"[..],
        );
        let mut spans = Vec::new();
        let head = parse_head(&mut buf, &mut spans)
            .expect("a valid head")
            .expect("a complete head");
        assert_eq!(&head.method[..], b"GET");
        assert_eq!(&head.target[..], b"/a?x");
        assert_eq!(head.version, Version::Http11);
        let fields: Vec<(&[u8], &[u8])> =
            head.headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(fields, [(&b"Host"[..], &b"t"[..]), (b"X-Empty", b"")]);
        // The next (pipelined) head is next in line.
        let head = parse_head(&mut buf, &mut spans)
            .expect("a valid head")
            .expect("a complete head");
        assert_eq!(&head.method[..], b"POST");
        assert_eq!(head.version, Version::Http10);
        assert!(head.headers.is_empty());
        assert!(matches!(parse_head(&mut buf, &mut spans), Ok(None)));
        assert_eq!(&buf[..], b"GE");
    }

    #[test]
    fn versions_are_told_apart() {
        assert!(names_another_version(b"GET / HTTP/2.0\r\n"));
        assert!(names_another_version(b"\r\nGET / HTTP/1.2\r\n"));
        assert!(!names_another_version(b"GET / HTTX/1.1\r\n"));
        assert!(!names_another_version(b"GET / HTTP/\r\n"));
    }

    /// The status each refusal gets, by table.
    #[test]
    fn refusals_map_to_their_status() {
        // (More cases, through a socket, in `http::tests`.)
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
            (b"GET / HTTP/3\r\nHost: t\r\n\r\n", 505),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
                413,
            ),
            (b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (b"GET /a%00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (b"GET /../a HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ];
        for &(bytes, status) in cases {
            let mut buf = BytesMut::from(bytes);
            let checked = parse_head(&mut buf, &mut Vec::new())
                .and_then(|head| check(head.expect("a complete head"), &limits(10)));
            let got = checked.err().map(HeadError::status);
            assert_eq!(got, Some(status), "{}", String::from_utf8_lossy(bytes));
        }
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: t\r\nX_Y: 1\r\n\r\n"[..]);
        let head = parse_head(&mut buf, &mut Vec::new())
            .expect("a valid head")
            .expect("a complete head");
        let checked = check(head, &limits(10)).expect("accepted");
        assert_eq!(checked.headers.len(), 1);
        assert_eq!(checked.target.path(), b"/a");
        assert_eq!(checked.semantics.framing, BodyFraming::None);
    }
}

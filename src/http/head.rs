//! Request heads: parsing them off the read buffer (`httparse`) and checking what they
//! say about the exchange (RFC 9112: `Host`, `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Expect`, the request-target), as pure functions over bytes. Every
//! refusal is one `HeadError`, and `HeadError::status` is the one place that says which
//! status the client gets for it.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::encode::{has_token, parse_decimal};
use super::form::{self, FormError};
use super::host::is_valid_host;
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
    #[error("the request line is too long")]
    LineTooLong,
    #[error("the request names an HTTP version other than 1.0 and 1.1")]
    Version,
    #[error("the request head did not arrive in time")]
    Timeout,
    #[error("the request has no Host field (HTTP/1.1) or more than one")]
    Host,
    #[error("the request's Host is not a host name or address with a port")]
    InvalidHost,
    #[error("the request's Content-Length is invalid or conflicting")]
    ContentLength,
    #[error("the request's Content-Length is too large to represent")]
    LengthOverflow,
    #[error(
        "the request's Transfer-Encoding is empty, repeated, not ending in `chunked`, \
         or comes with a Content-Length"
    )]
    TransferEncoding,
    #[error("the request's Transfer-Encoding is not just `chunked`")]
    UnsupportedCoding,
    #[error("the request body is larger than the limit")]
    BodyTooLarge,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Form(#[from] FormError),
}

impl HeadError {
    /// The status the client is answered with.
    pub(super) fn status(self) -> u16 {
        match self {
            Self::Malformed
            | Self::Host
            | Self::InvalidHost
            | Self::ContentLength
            | Self::TransferEncoding
            | Self::Target(_) => 400,
            Self::Timeout => 408,
            Self::LengthOverflow | Self::BodyTooLarge => 413,
            Self::LineTooLong => 414,
            Self::TooLarge => 431,
            Self::Form(error) => error.status(),
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
/// connection fields, the body's size against `max_body_size`, then the request-target:
/// its form (an absolute-form target's authority then replaces `Host`), then its path
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
    let origin = form::origin(&method, target)?;
    if let Some(authority) = origin.authority {
        set_host(&mut headers, authority);
    }
    let target = origin.target;
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

/// RFC 9112 §3.2.2: an absolute-form target's authority stands for `Host`, which the
/// client must still send; it is replaced (or, from an HTTP/1.0 client, added).
fn set_host(headers: &mut Vec<(Bytes, Bytes)>, authority: Bytes) {
    match headers
        .iter_mut()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"host"))
    {
        Some((_, value)) => *value = authority,
        None => headers.push((Bytes::from_static(b"Host"), authority)),
    }
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
    let located = match locate(buf, spans) {
        Err(HeadError::Version) if another_version(buf) == Some(Another::Later11) => {
            downgrade_minor(buf);
            locate(buf, spans)?
        }
        located => located?,
    };
    let Some((len, method, target, minor)) = located else {
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
        Err(httparse::Error::Version) => {
            return Err(match another_version(buf) {
                Some(_) => HeadError::Version,
                None => HeadError::Malformed,
            });
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

/// A well-formed version other than HTTP/1.0 and 1.1 that `another_version` found.
#[derive(Debug, PartialEq, Eq)]
enum Another {
    /// `HTTP/1.2` to `HTTP/1.9`: served as 1.1 (RFC 9110 §2.5).
    Later11,
    Other,
}

/// Where the version of a request line of exactly three parts lies in `buf`, and what
/// it is, if it is well-formed but not HTTP/1.0 or 1.1. A line with more parts (a space
/// in the target) is malformed, whatever its end says.
fn another_version(buf: &[u8]) -> Option<Another> {
    let (_, version) = request_line_version(buf)?;
    let rest = version.strip_prefix(b"HTTP/")?;
    if !(rest.first().is_some_and(u8::is_ascii_digit)
        && rest.iter().all(|&b| b.is_ascii_digit() || b == b'.'))
    {
        return None;
    }
    Some(match rest {
        [b'1', b'.', minor] if minor.is_ascii_digit() => Another::Later11,
        _ => Another::Other,
    })
}

/// The version part of the first request line in `buf` and where it starts, if the
/// line has exactly three space-separated parts.
fn request_line_version(buf: &[u8]) -> Option<(usize, &[u8])> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    // (A line still arriving is taken as far as it goes: httparse refuses a version as
    // soon as its bytes are in.)
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return None;
    }
    let space = line.iter().rposition(|&b| b == b' ')?;
    Some((start + space + 1, &line[space + 1..]))
}

/// Makes a request line naming `HTTP/1.2` to `HTTP/1.9` name `HTTP/1.1`, so that it is
/// parsed and served as 1.1 (RFC 9110 §2.5: a later minor version is understood as the
/// highest one the server speaks).
fn downgrade_minor(buf: &mut [u8]) {
    if let Some((at, version)) = request_line_version(buf)
        && version.len() == 8
    {
        buf[at + 7] = b'1';
    }
}

/// Whether the request line has ended in `buf` (a head too large without its end has
/// a too long target, 414, rather than too many fields, 431).
pub(super) fn has_request_line(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf[start..].contains(&b'\n')
}

/// The head's framing and connection fields, as seen in one pass.
#[derive(Default)]
struct Fields {
    hosts: usize,
    /// Some `Host` value is not a host (`is_valid_host`).
    bad_host: bool,
    length: Option<u64>,
    /// `Transfer-Encoding` fields.
    transfer_encodings: usize,
    codings: usize,
    /// Times `chunked` is named.
    chunked: usize,
    /// The last coding named is `chunked`.
    ends_chunked: bool,
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
                fields.bad_host |= !is_valid_host(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value)?;
                if fields.length.is_some_and(|l| l != n) {
                    return Err(HeadError::ContentLength);
                }
                fields.length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                fields.transfer_encodings += 1;
                for coding in value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty())
                {
                    fields.codings += 1;
                    fields.ends_chunked = coding.eq_ignore_ascii_case(b"chunked");
                    fields.chunked += usize::from(fields.ends_chunked);
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
    if fields.bad_host {
        return Err(HeadError::InvalidHost);
    }
    let transfer_encoding = fields.transfer_encodings > 0;
    let framing = if transfer_encoding {
        // RFC 9112 §6.3: a request body whose last coding is not `chunked` has no
        // knowable length (400), as has one chunked twice (§6.1) or framed twice. A
        // second `Transfer-Encoding` field is refused too (as nginx does): whoever
        // joins the two may read another framing.
        if fields.length.is_some()
            || fields.transfer_encodings > 1
            || !fields.ends_chunked
            || fields.chunked > 1
        {
            return Err(HeadError::TransferEncoding);
        }
        // Chunked last, after a coding Wharf does not decode (`gzip, chunked`).
        if fields.codings > 1 {
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
        force_close: transfer_encoding && !http11,
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
        assert_eq!(another_version(b"GET / HTTP/2.0\r\n"), Some(Another::Other));
        assert_eq!(another_version(b"GET / HTTP/3"), Some(Another::Other));
        assert_eq!(
            another_version(b"\r\nGET / HTTP/1.2\r\n"),
            Some(Another::Later11)
        );
        assert_eq!(another_version(b"GET / HTTP/1.9"), Some(Another::Later11));
        assert_eq!(
            another_version(b"GET / HTTP/1.10\r\n"),
            Some(Another::Other)
        );
        assert_eq!(another_version(b"GET / HTTX/1.1\r\n"), None);
        assert_eq!(another_version(b"GET / HTTP/\r\n"), None);
        // A space in the target: the line has four parts.
        assert_eq!(another_version(b"GET /a b HTTP/1.1\r\n"), None);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.2\r\nHost: t\r\n\r\n"[..]);
        let head = parse_head(&mut buf, &mut Vec::new())
            .expect("served as 1.1")
            .expect("a complete head");
        assert_eq!(head.version, Version::Http11);
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
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
            (b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
            (b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
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
        // Absolute-form: the path from the target, the authority for `Host`.
        let mut buf =
            BytesMut::from(&b"GET http://A:81/deny/x?q HTTP/1.1\r\nHost: other\r\n\r\n"[..]);
        let head = parse_head(&mut buf, &mut Vec::new())
            .expect("a valid head")
            .expect("a complete head");
        let checked = check(head, &limits(10)).expect("accepted");
        assert_eq!(checked.target.path(), b"/deny/x");
        assert_eq!(checked.target.query(), b"q");
        assert_eq!(&checked.headers[0].1[..], b"A:81");
    }
}

/// Property tests: the head parser never panics, and agrees with `httparse` (which it
/// wraps) on which heads are valid and on every part of them, as the slices it keeps.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// A head of plausible parts, some of them wrong.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        let method =
            prop::sample::select(vec!["GET", "POST", "HEAD", "OPTIONS", "G T", "", "CONNECT"]);
        let target = prop::collection::vec(
            prop::sample::select(b"/az09?#%.:@ *\t\x01\x7f\xe9".to_vec()),
            0..12,
        );
        let version = prop::sample::select(vec![
            "HTTP/1.1",
            "HTTP/1.0",
            "HTTP/2.0",
            "HTTP/1.",
            "http/1.1",
            "HTTP/1.1 ",
        ]);
        let field = (
            prop::collection::vec(prop::sample::select(b"Host-x_: \x00".to_vec()), 0..6),
            prop::collection::vec(prop::sample::select(b"ab :\t\r\x01\xff".to_vec()), 0..8),
        );
        let fields = prop::collection::vec(field, 0..4);
        let ending = prop::sample::select(vec!["\r\n", "\n", "", "\r\n\r\n"]);
        (method, target, version, fields, ending).prop_map(
            |(method, target, version, fields, ending)| {
                let mut out = format!("{method} ").into_bytes();
                out.extend_from_slice(&target);
                out.extend_from_slice(format!(" {version}\r\n").as_bytes());
                for (name, value) in fields {
                    out.extend_from_slice(&name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(&value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(ending.as_bytes());
                out
            },
        )
    }

    /// What `httparse` makes of `input`: `Some(Ok(parts))` for a complete head.
    #[allow(clippy::type_complexity)]
    fn httparse_says(
        input: &[u8],
    ) -> Option<Result<(Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>), ()>> {
        let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(input) {
            Ok(httparse::Status::Complete(_)) => Some(Ok((
                request.method.unwrap_or_default().as_bytes().to_vec(),
                request.path.unwrap_or_default().as_bytes().to_vec(),
                request
                    .headers
                    .iter()
                    .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                    .collect(),
            ))),
            Ok(httparse::Status::Partial) => None,
            Err(_) => Some(Err(())),
        }
    }

    fn check_agreement(input: &[u8]) -> Result<(), TestCaseError> {
        let mut buf = BytesMut::from(input);
        let ours = parse_head(&mut buf, &mut Vec::new());
        // (A later 1.x minor is served as 1.1, where httparse refuses it.)
        let later_minor = another_version(input) == Some(Another::Later11);
        match (httparse_says(input), ours) {
            (None, Ok(None)) => {}
            (Some(Err(())), Err(e)) => {
                prop_assert!((400..=505).contains(&e.status()));
            }
            (Some(Ok((method, target, fields))), Ok(Some(head))) => {
                prop_assert_eq!(&head.method[..], &method[..]);
                prop_assert_eq!(&head.target[..], &target[..]);
                let ours: Vec<(Vec<u8>, Vec<u8>)> = head
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                prop_assert_eq!(ours, fields);
                // Whatever the checks then say, they never panic, and refuse with a
                // client or a not-supported status.
                if let Err(e) = check(head, &Settings::default()) {
                    prop_assert!((400..=505).contains(&e.status()));
                }
            }
            (_, _) if later_minor => {}
            (theirs, ours) => {
                return Err(TestCaseError::fail(format!(
                    "httparse: {theirs:?}, ours: {:?}",
                    ours.map(|h| h.is_some())
                )));
            }
        }
        Ok(())
    }

    proptest! {
        // Modest counts, so the unit tests stay fast; no regression files.
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn plausible_heads_agree_with_httparse(input in head()) {
            check_agreement(&input)?;
        }

        #[test]
        fn arbitrary_bytes_agree_with_httparse(input in prop::collection::vec(any::<u8>(), 0..120)) {
            check_agreement(&input)?;
        }
    }
}

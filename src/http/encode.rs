//! Response heads: the status line, the handler's fields (checked), the framing the
//! server chooses for the body (`choose_framing`) and the fields the server adds, written
//! into the output buffer by `encode_head`; and the number, date and token helpers that
//! heads are made and read with.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Sent, Version};

/// What the exchange knows when its response starts.
pub(super) struct ResponseContext {
    /// The client's version (`None` when its head could not be parsed).
    pub(super) version: Option<Version>,
    pub(super) head_request: bool,
    /// The connection closes after this response.
    pub(super) close: bool,
    pub(super) server_version: bool,
}

/// What the head is written for: the kind of body, and its size when it is at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyShape {
    Empty,
    Full(u64),
    Streamed,
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseFraming {
    /// No body at all (HEAD, 1xx, 204, 304).
    Bodiless,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The head as written: how the body follows, and whether the connection closes after.
pub(super) struct Encoded {
    pub(super) framing: ResponseFraming,
    pub(super) close: bool,
}

/// A status a handler may send (three digits, as a `return` action may give); any other
/// becomes 500. Guests are held to 100–599 where their answer is read
/// (`runtime::guest::GUEST_STATUSES`).
pub(super) fn valid_status(status: u16) -> u16 {
    if (100..=999).contains(&status) {
        status
    } else {
        tracing::warn!(status, "the handler gave an invalid status; answering 500");
        500
    }
}

/// Appends the head of a response with a valid `status` to `buf`; `sent` records what
/// it declares.
pub(super) fn encode_head(
    buf: &mut Vec<u8>,
    status: u16,
    headers: &[(Bytes, Bytes)],
    shape: BodyShape,
    context: &ResponseContext,
    sent: &mut Sent,
) -> Encoded {
    sent.status = status;
    buf.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(buf, u64::from(status));
    buf.push(b' ');
    buf.extend_from_slice(reason(status).as_bytes());
    buf.extend_from_slice(b"\r\n");
    let fields = push_fields(buf, headers);
    // A 1xx as the final answer leaves the exchange undefined; end it.
    let mut close = context.close || fields.close || status < 200;
    let framing = choose_framing(status, shape, fields.declared, context);
    match framing {
        ResponseFraming::Length(n) => {
            sent.content_length = Some(n);
            push_length(buf, n);
        }
        ResponseFraming::Chunked => {
            sent.chunked = true;
            buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        ResponseFraming::UntilClose => close = true,
        ResponseFraming::Bodiless => {
            if let Some(n) = shown_length(status, shape, fields.declared, context) {
                sent.content_length = Some(n);
                push_length(buf, n);
            }
        }
    }
    if context.server_version && !fields.has_server {
        buf.extend_from_slice(
            concat!("Server: Wharf/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
        );
    }
    if !fields.has_date {
        push_date(buf);
    }
    sent.close = close;
    if close {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if context.version == Some(Version::Http10) {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    Encoded { framing, close }
}

/// What the handler's fields say, beyond the fields themselves.
#[derive(Default)]
struct HandlerFields {
    declared: Option<u64>,
    has_date: bool,
    has_server: bool,
    /// `Connection: close`.
    close: bool,
}

/// Writes the handler's fields, in order, but for invalid ones and those the server
/// owns (framing and `Connection`), which it reads instead.
fn push_fields(buf: &mut Vec<u8>, headers: &[(Bytes, Bytes)]) -> HandlerFields {
    let mut fields = HandlerFields::default();
    for (name, value) in headers {
        if !is_token(name) || !is_field_value(value) {
            // Escaped: the name is the guest's, and must not forge log lines.
            tracing::warn!(
                name = %name.escape_ascii(),
                "dropping a response header field with an invalid name or value"
            );
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(value) {
                Some(n) if fields.declared.is_none_or(|d| d == n) => fields.declared = Some(n),
                _ => tracing::warn!(
                    "dropping an invalid or conflicting Content-Length from the handler"
                ),
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            tracing::warn!("dropping a Transfer-Encoding header field from the handler");
            continue;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            fields.close |= has_token(value, b"close");
            continue;
        }
        fields.has_date |= name.eq_ignore_ascii_case(b"date");
        fields.has_server |= name.eq_ignore_ascii_case(b"server");
        push_field(buf, name, value);
    }
    fields
}

/// The framing of a body of `shape` with the handler's `declared` length: its own length
/// when whole, else the declared one, else chunked (or until close for HTTP/1.0).
pub(super) fn choose_framing(
    status: u16,
    shape: BodyShape,
    declared: Option<u64>,
    context: &ResponseContext,
) -> ResponseFraming {
    let natural = match shape {
        BodyShape::Empty => ResponseFraming::Length(0),
        BodyShape::Full(n) => ResponseFraming::Length(n),
        BodyShape::Streamed => match declared {
            Some(n) => ResponseFraming::Length(n),
            None if context.version == Some(Version::Http10) => ResponseFraming::UntilClose,
            None => ResponseFraming::Chunked,
        },
    };
    if let (ResponseFraming::Length(n), Some(d), false) =
        (natural, declared, shape == BodyShape::Streamed)
        && n != d
        && !(context.head_request && n == 0)
    {
        tracing::warn!(
            declared = d,
            actual = n,
            "the handler's Content-Length does not match its body; using the body's"
        );
    }
    let bodiless_status = status < 200 || status == 204 || status == 304;
    if bodiless_status || context.head_request {
        ResponseFraming::Bodiless
    } else {
        natural
    }
}

/// The `Content-Length` a bodiless response shows: what a GET would have carried, where
/// that is known.
fn shown_length(
    status: u16,
    shape: BodyShape,
    declared: Option<u64>,
    context: &ResponseContext,
) -> Option<u64> {
    match (shape, declared) {
        _ if status < 200 || status == 204 => None,
        (BodyShape::Empty, Some(d)) if context.head_request || status == 304 => Some(d),
        (BodyShape::Streamed, Some(d)) => Some(d),
        (BodyShape::Full(n), _) => Some(n),
        (BodyShape::Empty, _) if status == 304 => None,
        (BodyShape::Empty, _) => Some(0),
        (BodyShape::Streamed, None) => None,
    }
}

/// Fields a trailer section must not carry (RFC 9110 §6.5.1): framing, routing,
/// connection management, and what describes the content or controls the response, so
/// that a trailer cannot change how the message already sent is read.
const NOT_IN_TRAILERS: [&[u8]; 14] = [
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"connection",
    b"keep-alive",
    b"te",
    b"upgrade",
    b"host",
    b"content-type",
    b"content-encoding",
    b"content-range",
    b"set-cookie",
    b"authorization",
    b"www-authenticate",
];

/// Appends the trailer section of a chunked body (after its `0\r\n`, before the final
/// `\r\n`): each valid field but those a trailer must not carry.
pub(super) fn push_trailers(buf: &mut Vec<u8>, trailers: &[(Bytes, Bytes)]) {
    for (name, value) in trailers {
        let forbidden = NOT_IN_TRAILERS.iter().any(|f| name.eq_ignore_ascii_case(f));
        if forbidden || !is_token(name) || !is_field_value(value) {
            tracing::debug!(name = %name.escape_ascii(), "dropping a trailer field");
            continue;
        }
        push_field(buf, name, value);
    }
}

fn push_field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

fn push_length(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(b"Content-Length: ");
    push_decimal(buf, n);
    buf.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through `fmt`.
pub(crate) fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

pub(super) fn push_hex(buf: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
    buf.extend_from_slice(b"\r\n");
}

/// The `Date` value, formatted at most once a second per thread.
fn push_date(buf: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        buf.extend_from_slice(b"Date: ");
        buf.extend_from_slice(text.as_bytes());
        buf.extend_from_slice(b"\r\n");
    });
}

/// A plain decimal (1*DIGIT), as in `Content-Length`.
pub(super) fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A comma-separated header value holds `token` (case-insensitively).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

fn is_token(name: &[u8]) -> bool {
    // One table look-up a byte: this runs on every response header field.
    const TOKEN: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let others = b"!#$%&'*+-.^_`|~";
        let mut i = 0;
        while i < others.len() {
            table[others[i] as usize] = true;
            i += 1;
        }
        table
    };
    !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)])
}

/// RFC 9110 §5.5: visible bytes, spaces, HTAB and obs-text; no other control byte
/// (CR, LF and NUL would break the framing, the rest confuse what reads the head).
fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// The reason phrase Unit sends for `status`.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_rfc_9110_tchars() {
        for b in 0..=u8::MAX {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token(&[b]), tchar, "byte {b}");
        }
        assert!(!is_token(b""));
        assert!(is_token(b"Content-Type"));
        assert!(!is_token(b"Bad Name"));
    }

    #[test]
    fn field_values_refuse_control_bytes_but_htab() {
        for b in 0..=u8::MAX {
            let allowed = b == b'\t' || (b >= b' ' && b != 0x7f);
            assert_eq!(is_field_value(&[b'a', b, b'b']), allowed, "byte {b}");
        }
        assert!(is_field_value(b"text/html; charset=\xe9"));
    }

    #[test]
    fn statuses_outside_100_to_999_become_500() {
        for (given, sent) in [(0, 500), (99, 500), (100, 100), (999, 999), (1000, 500)] {
            assert_eq!(valid_status(given), sent, "{given}");
        }
    }

    #[test]
    fn numbers() {
        let mut buf = Vec::new();
        push_decimal(&mut buf, 0);
        push_decimal(&mut buf, u64::MAX);
        push_hex(&mut buf, 0x1a2b);
        assert_eq!(buf, b"0184467440737095516151a2b\r\n");
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
        assert!(has_token(b"Keep-Alive, Upgrade", b"keep-alive"));
    }
}

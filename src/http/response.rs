//! Writing responses: the status line and head, the framing the server chooses, and the
//! body (whole or streamed), through a small coalescing writer whose every write must
//! make progress within `send_timeout`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::pipe::PipeReader;
use super::{Response, ResponseBody, Sent, StreamAbort, Version};

/// Pieces up to this size are copied into the write buffer; larger ones go out with a
/// vectored write next to whatever is buffered.
const COALESCE: usize = 16 * 1024;
/// A write buffer that grew past this is given back after a response.
const KEEP_BUFFER: usize = 64 * 1024;

/// The connection's write half with its buffer.
pub(super) struct Output<W> {
    writer: W,
    buf: Vec<u8>,
    send_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    pub(super) fn new(writer: W, send_timeout: Duration) -> Self {
        Self {
            writer,
            buf: Vec::with_capacity(4096),
            send_timeout,
        }
    }

    /// Sends `HTTP/1.1 100 Continue` at once.
    pub(super) async fn send_continue(&mut self) -> io::Result<()> {
        self.buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush().await
    }

    async fn put(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.buf.len() + piece.len() <= COALESCE {
            self.buf.extend_from_slice(piece);
            return Ok(());
        }
        let (mut head, mut body) = (0, 0);
        while head < self.buf.len() || body < piece.len() {
            let slices = [
                IoSlice::new(&self.buf[head..]),
                IoSlice::new(&piece[body..]),
            ];
            let n = timed(self.send_timeout, self.writer.write_vectored(&slices)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(self.buf.len() - head);
            head += from_head;
            body += n - from_head;
        }
        self.buf.clear();
        Ok(())
    }

    /// Sends everything buffered.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut at = 0;
        while at < self.buf.len() {
            let n = timed(self.send_timeout, self.writer.write(&self.buf[at..])).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n;
        }
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::with_capacity(4096);
        }
        timed(self.send_timeout, self.writer.flush()).await
    }

    /// Flushes and half-closes the connection.
    pub(super) async fn finish(&mut self) -> io::Result<()> {
        self.flush().await?;
        timed(self.send_timeout, self.writer.shutdown()).await
    }
}

async fn timed<T>(limit: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    // Most writes complete at once: try first, and start the clock only for one that
    // has to wait (a timer costs a clock read and a runtime handle even unused).
    let mut work = pin!(work);
    if let Poll::Ready(done) = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        return done;
    }
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "send timeout")),
    }
}

/// What the exchange knows when the response starts.
pub(super) struct Exchange {
    /// The client's version (`None` when its head could not be parsed).
    pub(super) version: Option<Version>,
    pub(super) head_request: bool,
    /// The connection closes after this response.
    pub(super) close: bool,
    pub(super) server_version: bool,
}

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    Bodiless,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes `response`; `Ok(true)` when the connection must close afterwards (asked for,
/// close-delimited, or the body did not match its framing). An `Err` means the client
/// could not be written to. `sent` records what went out, even when writing failed.
pub(super) async fn write_response<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    response: Response,
    exchange: &Exchange,
    sent: &mut Sent,
) -> io::Result<bool> {
    let Response {
        status,
        headers,
        body,
    } = response;
    let status = if (100..=999).contains(&status) {
        status
    } else {
        tracing::warn!(status, "the handler gave an invalid status; answering 500");
        500
    };
    sent.status = status;
    let mut close = exchange.close;
    let buf = &mut out.buf;
    buf.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(buf, u64::from(status));
    buf.push(b' ');
    buf.extend_from_slice(reason(status).as_bytes());
    buf.extend_from_slice(b"\r\n");

    let mut declared: Option<u64> = None;
    let mut has_date = false;
    let mut has_server = false;
    for (name, value) in &headers {
        if !is_token(name) || !is_field_value(value) {
            tracing::warn!(
                name = %String::from_utf8_lossy(name),
                "dropping a response header field with an invalid name or value"
            );
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_decimal(value) {
                Some(n) if declared.is_none_or(|d| d == n) => declared = Some(n),
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
            if has_token(value, b"close") {
                close = true;
            }
            continue;
        }
        has_date |= name.eq_ignore_ascii_case(b"date");
        has_server |= name.eq_ignore_ascii_case(b"server");
        push_field(buf, name, value);
    }

    let http10 = exchange.version == Some(Version::Http10);
    let bodiless_status = status < 200 || status == 204 || status == 304;
    if status < 200 {
        // A 1xx as the final answer leaves the exchange undefined; end it.
        close = true;
    }
    let natural = match &body {
        ResponseBody::Empty => Framing::Length(0),
        ResponseBody::Full(bytes) => Framing::Length(bytes.len() as u64),
        ResponseBody::Stream(_) | ResponseBody::Pipe(_) => match declared {
            Some(n) => Framing::Length(n),
            None if http10 => Framing::UntilClose,
            None => Framing::Chunked,
        },
    };
    if let (Framing::Length(n), Some(d), false) = (natural, declared, body.is_streamed())
        && n != d
        && !(exchange.head_request && n == 0)
    {
        tracing::warn!(
            declared = d,
            actual = n,
            "the handler's Content-Length does not match its body; using the body's"
        );
    }
    let framing = if bodiless_status || exchange.head_request {
        Framing::Bodiless
    } else {
        natural
    };
    match framing {
        Framing::Length(n) => {
            sent.content_length = Some(n);
            push_length(buf, n);
        }
        Framing::Chunked => {
            sent.chunked = true;
            buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        Framing::UntilClose => close = true,
        Framing::Bodiless => {
            // Tell what a GET would have carried, where that is known.
            let shown = match (&body, declared) {
                _ if status < 200 || status == 204 => None,
                (ResponseBody::Empty, Some(d)) if exchange.head_request || status == 304 => Some(d),
                (ResponseBody::Stream(_) | ResponseBody::Pipe(_), Some(d)) => Some(d),
                (ResponseBody::Full(bytes), _) => Some(bytes.len() as u64),
                (ResponseBody::Empty, _) if status == 304 => None,
                (ResponseBody::Empty, _) => Some(0),
                (ResponseBody::Stream(_) | ResponseBody::Pipe(_), None) => None,
            };
            if let Some(n) = shown {
                sent.content_length = Some(n);
                push_length(buf, n);
            }
        }
    }
    if exchange.server_version && !has_server {
        buf.extend_from_slice(
            concat!("Server: Wharf/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
        );
    }
    if !has_date {
        push_date(buf);
    }
    sent.close = close;
    if close {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");

    match body {
        ResponseBody::Empty => {}
        ResponseBody::Full(bytes) => {
            if framing != Framing::Bodiless {
                out.put(&bytes).await?;
                sent.body_bytes = bytes.len() as u64;
            }
        }
        ResponseBody::Stream(mut pieces) => {
            close |= send_stream(out, &mut pieces, framing, &mut sent.body_bytes).await?;
            sent.close |= close;
        }
        ResponseBody::Pipe(mut pieces) => {
            close |= send_stream(out, &mut pieces, framing, &mut sent.body_bytes).await?;
            sent.close |= close;
        }
    }
    out.flush().await?;
    Ok(close)
}

/// Streams the pieces; `Ok(true)` when the body broke its framing, so the connection
/// must close.
async fn send_stream<W: AsyncWrite + Unpin, P: Pieces>(
    out: &mut Output<W>,
    pieces: &mut P,
    framing: Framing,
    body_bytes: &mut u64,
) -> io::Result<bool> {
    let mut sent: u64 = 0;
    loop {
        let piece = match next_piece(out, pieces).await? {
            None => break,
            Some(Ok(piece)) => piece,
            Some(Err(StreamAbort(why))) => {
                tracing::warn!("the response body stream was aborted: {why}");
                return Ok(true);
            }
        };
        if piece.is_empty() {
            continue;
        }
        match framing {
            Framing::Bodiless => {}
            Framing::UntilClose => {
                out.put(&piece).await?;
                *body_bytes += piece.len() as u64;
            }
            Framing::Chunked => {
                push_hex(&mut out.buf, piece.len());
                out.put(&piece).await?;
                *body_bytes += piece.len() as u64;
                out.buf.extend_from_slice(b"\r\n");
            }
            Framing::Length(n) => {
                let room = n - sent;
                if piece.len() as u64 > room {
                    let fits = usize::try_from(room).unwrap_or(usize::MAX);
                    out.put(&piece[..fits]).await?;
                    *body_bytes += fits as u64;
                    tracing::warn!(
                        content_length = n,
                        "the response body is longer than its Content-Length"
                    );
                    out.flush().await?;
                    // Let the producer finish, but the connection cannot be trusted now.
                    while poll_fn(|cx| pieces.poll_piece(cx)).await.is_some() {}
                    return Ok(true);
                }
                out.put(&piece).await?;
                *body_bytes += piece.len() as u64;
            }
        }
        sent += piece.len() as u64;
    }
    match framing {
        Framing::Chunked => {
            out.buf.extend_from_slice(b"0\r\n\r\n");
            Ok(false)
        }
        Framing::Length(n) if sent < n => {
            tracing::warn!(
                content_length = n,
                sent,
                "the response body ended short of its Content-Length"
            );
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The next streamed piece; flushes first when none is ready, so small pieces that come
/// together go out together while a slow producer's pieces go out at once.
async fn next_piece<W: AsyncWrite + Unpin, P: Pieces>(
    out: &mut Output<W>,
    pieces: &mut P,
) -> io::Result<Option<Result<Bytes, StreamAbort>>> {
    if let Poll::Ready(piece) = poll_fn(|cx| Poll::Ready(pieces.poll_piece(cx))).await {
        return Ok(piece);
    }
    out.flush().await?;
    Ok(poll_fn(|cx| pieces.poll_piece(cx)).await)
}

/// Where a streamed body's pieces come from.
trait Pieces {
    /// The next piece; `Ready(None)` once the body is complete.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>>;
}

impl Pieces for mpsc::Receiver<Result<Bytes, StreamAbort>> {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        self.poll_recv(cx)
    }
}

impl Pieces for PipeReader {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        PipeReader::poll_piece(self, cx)
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

fn push_hex(buf: &mut Vec<u8>, mut n: usize) {
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

fn is_field_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
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
    use super::super::error_response;
    use super::*;

    async fn render(response: Response, exchange: &Exchange) -> (String, bool) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut out = Output::new(server, Duration::from_secs(5));
        let close = write_response(&mut out, response, exchange, &mut Sent::default())
            .await
            .expect("written");
        drop(out);
        let mut text = Vec::new();
        let mut client = client;
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut text)
            .await
            .expect("read");
        (String::from_utf8(text).expect("utf-8"), close)
    }

    fn exchange(version: Version, head_request: bool) -> Exchange {
        Exchange {
            version: Some(version),
            head_request,
            close: false,
            server_version: false,
        }
    }

    fn without_date(text: &str) -> String {
        text.split("\r\n")
            .filter(|l| !l.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[tokio::test]
    async fn heads_keep_order_and_drop_invalid_fields() {
        let response = Response {
            status: 299,
            headers: vec![
                (Bytes::from_static(b"X-B"), Bytes::from_static(b"1")),
                (Bytes::from_static(b"bad name"), Bytes::from_static(b"x")),
                (
                    Bytes::from_static(b"X-Bad"),
                    Bytes::from_static(b"a\r\nInjected: 1"),
                ),
                (Bytes::from_static(b"x-a"), Bytes::from_static(b"2")),
                (
                    Bytes::from_static(b"Transfer-Encoding"),
                    Bytes::from_static(b"gzip"),
                ),
                (
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from_static(b"99"),
                ),
            ],
            body: ResponseBody::Full(Bytes::from_static(b"hi")),
        };
        let (text, close) = render(response, &exchange(Version::Http11, false)).await;
        assert!(!close);
        assert_eq!(
            without_date(&text),
            "HTTP/1.1 299 Unknown\r\nX-B: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert!(text.contains("\r\nDate: "));
    }

    #[tokio::test]
    async fn streams_are_framed_by_version() {
        let stream = |pieces: &[&'static [u8]]| {
            let (tx, rx) = mpsc::channel(8);
            for &p in pieces {
                tx.try_send(Ok(Bytes::from_static(p))).expect("room");
            }
            ResponseBody::Stream(rx)
        };
        let response = Response {
            status: 200,
            headers: vec![],
            body: stream(&[b"ab", b"", b"cde"]),
        };
        let (text, close) = render(response, &exchange(Version::Http11, false)).await;
        assert!(!close);
        assert!(
            without_date(&text)
                .ends_with("Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{text}"
        );

        let response = Response {
            status: 200,
            headers: vec![],
            body: stream(&[b"ab", b"cde"]),
        };
        let (text, close) = render(response, &exchange(Version::Http10, false)).await;
        assert!(close);
        assert!(
            without_date(&text).ends_with("Connection: close\r\n\r\nabcde"),
            "{text}"
        );

        let headers = vec![(
            Bytes::from_static(b"content-length"),
            Bytes::from_static(b"4"),
        )];
        let response = Response {
            status: 200,
            headers,
            body: stream(&[b"ab", b"cde"]),
        };
        let (text, close) = render(response, &exchange(Version::Http11, false)).await;
        assert!(
            close,
            "a stream longer than its Content-Length closes the connection"
        );
        assert!(
            without_date(&text).ends_with("Content-Length: 4\r\n\r\nabcd"),
            "{text}"
        );

        let headers = vec![(
            Bytes::from_static(b"content-length"),
            Bytes::from_static(b"5"),
        )];
        let response = Response {
            status: 200,
            headers,
            body: stream(&[b"ab", b"cde"]),
        };
        let (text, close) = render(response, &exchange(Version::Http10, true)).await;
        assert!(!close);
        assert!(
            without_date(&text).ends_with("Content-Length: 5\r\nConnection: keep-alive\r\n\r\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bodiless_statuses_and_error_pages() {
        let response = Response {
            status: 204,
            headers: vec![],
            body: ResponseBody::Empty,
        };
        let (text, _) = render(response, &exchange(Version::Http11, false)).await;
        assert!(!text.contains("Content-Length"), "{text}");
        let mut ex = exchange(Version::Http11, false);
        ex.close = true;
        ex.server_version = true;
        let (text, close) = render(error_response(413), &ex).await;
        assert!(close);
        let page = "<!DOCTYPE html><title>Error 413</title><p>Error 413.\r\n";
        let start = format!(
            "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/html\r\nContent-Length: {}\r\nServer: Wharf/",
            page.len()
        );
        assert!(text.starts_with(&start), "{text}");
        assert!(
            text.ends_with(
                "Connection: close\r\n\r\n<!DOCTYPE html><title>Error 413</title><p>Error 413.\r\n"
            ),
            "{text}"
        );
    }

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

//! The output side of a connection: its write half behind a small coalescing buffer whose
//! every write must make progress within `send_timeout`, and `write_response`, which sends
//! a whole response — the head from `encode`, then the body, whole or streamed as its
//! producer hands over pieces.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::encode::{
    BodyShape, Encoded, ResponseContext, ResponseFraming, encode_head, push_hex, push_trailers,
    valid_status,
};
use super::file::{COPY_BUFFER, FileBody, SendFile};
use super::{BodyStream, Response, ResponseBody, Sent, StreamAbort};

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

/// A response body as the writer sends it.
enum Payload {
    /// At hand (perhaps empty).
    Whole(Bytes),
    Stream(Box<dyn BodyStream + Send>),
    File(FileBody),
}

impl Payload {
    /// The one look at which kind of body a response has.
    fn of(body: ResponseBody) -> (BodyShape, Self) {
        match body {
            ResponseBody::Empty => (BodyShape::Empty, Self::Whole(Bytes::new())),
            ResponseBody::Full(bytes) => (BodyShape::Full(bytes.len() as u64), Self::Whole(bytes)),
            ResponseBody::Stream(stream) => (BodyShape::Streamed, Self::Stream(stream)),
            ResponseBody::File(file) => (BodyShape::Full(file.len), Self::File(file)),
        }
    }
}

/// Writes `response`; `Ok(true)` when the connection must close afterwards (asked for,
/// close-delimited, or the body did not match its framing). An `Err` means the client
/// could not be written to. `sent` records what went out, even when writing failed.
pub(super) async fn write_response<W: AsyncWrite + Unpin + SendFile>(
    out: &mut Output<W>,
    response: Response,
    context: &ResponseContext,
    sent: &mut Sent,
) -> io::Result<bool> {
    let Response {
        status,
        headers,
        body,
    } = response;
    let status = valid_status(status);
    let (shape, payload) = Payload::of(body);
    let Encoded { framing, mut close } =
        encode_head(&mut out.buf, status, &headers, shape, context, sent);
    match payload {
        Payload::Whole(bytes) => {
            if framing != ResponseFraming::Bodiless && !bytes.is_empty() {
                out.put(&bytes).await?;
                sent.body_bytes = bytes.len() as u64;
            }
        }
        Payload::Stream(mut stream) => {
            close |= send_stream(out, &mut *stream, framing, &mut sent.body_bytes).await?;
            stream.recycle();
            sent.close |= close;
        }
        Payload::File(file) => {
            if framing != ResponseFraming::Bodiless && file.len > 0 {
                let complete = send_file(out, &file, &mut sent.body_bytes).await?;
                if !complete {
                    close = true;
                    sent.close = true;
                }
            }
        }
    }
    out.flush().await?;
    Ok(close)
}

/// Sends a file body (its length is the `Content-Length` already written): with
/// `sendfile` where the stream allows, else copied through one bounded buffer. `Ok(false)`
/// when the file turned out shorter than announced (changed under us), so the connection
/// must close.
async fn send_file<W: AsyncWrite + Unpin + SendFile>(
    out: &mut Output<W>,
    body: &FileBody,
    body_bytes: &mut u64,
) -> io::Result<bool> {
    if body.len <= COALESCE as u64 {
        return small_file(out, body, body_bytes);
    }
    out.flush().await?;
    let mut offset = body.offset;
    let end = body.offset + body.len;
    let mut copy: Vec<u8> = Vec::new();
    while offset < end {
        let rest = end - offset;
        let writer = &mut out.writer;
        let direct = timed(
            out.send_timeout,
            poll_fn(
                |cx| match writer.poll_send_file(cx, &body.file, offset, rest) {
                    Poll::Ready(None) => Poll::Ready(Ok(None)),
                    Poll::Ready(Some(result)) => Poll::Ready(result.map(Some)),
                    Poll::Pending => Poll::Pending,
                },
            ),
        )
        .await?;
        let n = match direct {
            Some(n) => n,
            None => {
                if copy.is_empty() {
                    copy = vec![0; COPY_BUFFER];
                }
                let want = usize::try_from(rest).unwrap_or(usize::MAX).min(copy.len());
                // A regular file's read is served from the page cache or the disk
                // without blocking on a peer, as Unit reads it on its event loop.
                let n = read_at(&body.file, &mut copy[..want], offset)?;
                if n > 0 {
                    out.put(&copy[..n]).await?;
                    out.flush().await?;
                }
                n
            }
        };
        if n == 0 {
            tracing::warn!(
                missing = rest,
                "the file being sent ended before its Content-Length; closing"
            );
            return Ok(false);
        }
        offset += n as u64;
        *body_bytes += n as u64;
    }
    Ok(true)
}

/// A small file goes into the write buffer behind its head, so that head and body leave
/// in one write (one wake-up of the client) rather than a write and a `sendfile`.
fn small_file<W>(out: &mut Output<W>, body: &FileBody, body_bytes: &mut u64) -> io::Result<bool> {
    let len = usize::try_from(body.len).unwrap_or(usize::MAX);
    let start = out.buf.len();
    out.buf.resize(start + len, 0);
    let mut filled = 0;
    while filled < len {
        let n = read_at(
            &body.file,
            &mut out.buf[start + filled..],
            body.offset + filled as u64,
        )?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    out.buf.truncate(start + filled);
    *body_bytes += filled as u64;
    if filled < len {
        tracing::warn!(
            missing = len - filled,
            "the file being sent ended before its Content-Length; closing"
        );
        return Ok(false);
    }
    Ok(true)
}

fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Streams the pieces; `Ok(true)` when the body broke its framing, so the connection
/// must close.
async fn send_stream<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    stream: &mut (dyn BodyStream + Send),
    framing: ResponseFraming,
    body_bytes: &mut u64,
) -> io::Result<bool> {
    let mut sent: u64 = 0;
    loop {
        let piece = match next_piece(out, stream).await? {
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
        if let ResponseFraming::Length(n) = framing
            && piece.len() as u64 > n - sent
        {
            overflow(out, stream, &piece, n, sent, body_bytes).await?;
            return Ok(true);
        }
        put_piece(out, &piece, framing, body_bytes).await?;
        sent += piece.len() as u64;
    }
    match framing {
        ResponseFraming::Chunked => {
            out.buf.extend_from_slice(b"0\r\n");
            push_trailers(&mut out.buf, &stream.trailers());
            out.buf.extend_from_slice(b"\r\n");
            Ok(false)
        }
        ResponseFraming::Length(n) if sent < n => {
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

/// Writes one piece that fits its framing.
async fn put_piece<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    piece: &[u8],
    framing: ResponseFraming,
    body_bytes: &mut u64,
) -> io::Result<()> {
    match framing {
        ResponseFraming::Bodiless => return Ok(()),
        ResponseFraming::UntilClose | ResponseFraming::Length(_) => out.put(piece).await?,
        ResponseFraming::Chunked => {
            push_hex(&mut out.buf, piece.len());
            out.put(piece).await?;
            out.buf.extend_from_slice(b"\r\n");
        }
    }
    *body_bytes += piece.len() as u64;
    Ok(())
}

/// Sends what fits of a piece that runs past the `Content-Length` of `n`, `sent` bytes
/// in, then lets the producer finish unheard: the connection cannot be trusted now.
async fn overflow<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    stream: &mut (dyn BodyStream + Send),
    piece: &[u8],
    n: u64,
    sent: u64,
    body_bytes: &mut u64,
) -> io::Result<()> {
    let fits = usize::try_from(n - sent).unwrap_or(usize::MAX);
    out.put(&piece[..fits]).await?;
    *body_bytes += fits as u64;
    tracing::warn!(
        content_length = n,
        "the response body is longer than its Content-Length"
    );
    out.flush().await?;
    while poll_fn(|cx| stream.poll_piece(cx)).await.is_some() {}
    Ok(())
}

/// The next streamed piece; flushes first when none is ready, so small pieces that come
/// together go out together while a slow producer's pieces go out at once.
async fn next_piece<W: AsyncWrite + Unpin>(
    out: &mut Output<W>,
    stream: &mut (dyn BodyStream + Send),
) -> io::Result<Option<Result<Bytes, StreamAbort>>> {
    if let Poll::Ready(piece) = poll_fn(|cx| Poll::Ready(stream.poll_piece(cx))).await {
        return Ok(piece);
    }
    out.flush().await?;
    Ok(poll_fn(|cx| stream.poll_piece(cx)).await)
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::super::{Version, error_response};
    use super::*;

    async fn render(response: Response, context: &ResponseContext) -> (String, bool) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut out = Output::new(server, Duration::from_secs(5));
        let close = write_response(&mut out, response, context, &mut Sent::default())
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

    fn context(version: Version, head_request: bool) -> ResponseContext {
        ResponseContext {
            version: Some(version),
            head_request,
            close: false,
            server_version: false,
        }
    }

    /// A 200 with `body` whose handler declares a `Content-Length` of `length`.
    fn declaring(length: &'static [u8], body: ResponseBody) -> Response {
        Response {
            status: 200,
            headers: vec![(
                Bytes::from_static(b"content-length"),
                Bytes::from_static(length),
            )],
            body,
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
        let (text, close) = render(response, &context(Version::Http11, false)).await;
        assert!(!close);
        assert_eq!(
            without_date(&text),
            "HTTP/1.1 299 Unknown\r\nX-B: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert!(text.contains("\r\nDate: "));
    }

    /// One piece, then the given trailer fields.
    struct WithTrailers(Option<Bytes>, Vec<(Bytes, Bytes)>);

    impl BodyStream for WithTrailers {
        fn poll_piece(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Bytes, StreamAbort>>> {
            Poll::Ready(self.0.take().map(Ok))
        }

        fn trailers(&mut self) -> Vec<(Bytes, Bytes)> {
            std::mem::take(&mut self.1)
        }
    }

    #[tokio::test]
    async fn trailers_follow_the_last_chunk_and_only_there() {
        let field =
            |n: &'static [u8], v: &'static [u8]| (Bytes::from_static(n), Bytes::from_static(v));
        let response = |headers| Response {
            status: 200,
            headers,
            body: ResponseBody::Stream(Box::new(WithTrailers(
                Some(Bytes::from_static(b"abc")),
                vec![
                    field(b"X-Checksum", b"900150983cd24fb0"),
                    field(b"Content-Length", b"3"),
                    field(b"bad name", b"x"),
                    field(b"X-Bad", b"a\r\nInjected: 1"),
                    field(b"grpc-status", b"0"),
                ],
            ))),
        };
        let (text, close) = render(response(vec![]), &context(Version::Http11, false)).await;
        assert!(!close);
        assert!(
            text.ends_with(
                "\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 900150983cd24fb0\r\ngrpc-status: 0\r\n\r\n"
            ),
            "{text}"
        );
        // No chunks to end, no trailers: HTTP/1.0, or a declared length.
        let (text, _) = render(response(vec![]), &context(Version::Http10, false)).await;
        assert!(text.ends_with("\r\n\r\nabc"), "{text}");
        let declared = vec![field(b"Content-Length", b"3")];
        let (text, _) = render(response(declared), &context(Version::Http11, false)).await;
        assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    }

    #[tokio::test]
    async fn streams_are_framed_by_version() {
        let stream = |pieces: &[&'static [u8]]| {
            let (tx, rx) = mpsc::channel(8);
            for &p in pieces {
                tx.try_send(Ok(Bytes::from_static(p))).expect("room");
            }
            ResponseBody::Stream(Box::new(rx))
        };
        let response = Response {
            status: 200,
            headers: vec![],
            body: stream(&[b"ab", b"", b"cde"]),
        };
        let (text, close) = render(response, &context(Version::Http11, false)).await;
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
        let (text, close) = render(response, &context(Version::Http10, false)).await;
        assert!(close);
        assert!(
            without_date(&text).ends_with("Connection: close\r\n\r\nabcde"),
            "{text}"
        );

        let response = declaring(b"4", stream(&[b"ab", b"cde"]));
        let (text, close) = render(response, &context(Version::Http11, false)).await;
        assert!(
            close,
            "a stream longer than its Content-Length closes the connection"
        );
        assert!(
            without_date(&text).ends_with("Content-Length: 4\r\n\r\nabcd"),
            "{text}"
        );

        let response = declaring(b"5", stream(&[b"ab", b"cde"]));
        let (text, close) = render(response, &context(Version::Http10, true)).await;
        assert!(!close);
        assert!(
            without_date(&text).ends_with("Content-Length: 5\r\nConnection: keep-alive\r\n\r\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn file_bodies_are_copied_where_sendfile_cannot_go() {
        let mut file = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut file, b"0123456789").expect("write");
        let response = Response {
            status: 206,
            headers: vec![],
            body: ResponseBody::File(FileBody {
                file,
                offset: 2,
                len: 5,
            }),
        };
        let (text, close) = render(response, &context(Version::Http11, false)).await;
        assert!(!close);
        assert!(
            without_date(&text).ends_with("Content-Length: 5\r\n\r\n23456"),
            "{text}"
        );

        // A file shorter than announced (truncated meanwhile) closes the connection.
        let file = tempfile::tempfile().expect("tempfile");
        let response = Response {
            status: 200,
            headers: vec![],
            body: ResponseBody::File(FileBody {
                file,
                offset: 0,
                len: 3,
            }),
        };
        let (text, close) = render(response, &context(Version::Http11, false)).await;
        assert!(close, "{text}");
    }

    #[tokio::test]
    async fn bodiless_statuses_and_error_pages() {
        let response = Response {
            status: 204,
            headers: vec![],
            body: ResponseBody::Empty,
        };
        let (text, _) = render(response, &context(Version::Http11, false)).await;
        assert!(!text.contains("Content-Length"), "{text}");
        let mut ex = context(Version::Http11, false);
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
}

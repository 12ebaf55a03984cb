//! Accepting connections and serving HTTP/1.1 exchanges on them.
//!
//! One task serves a connection. Within it, an exchange runs the handler, a body pump
//! (read half → the request body's channel) and, once the handler has answered, the
//! response writer (→ write half) side by side, so a handler can stream its response
//! while it still reads the request body.

use std::any::Any;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};

use super::body::{BodyDecoder, Decoded, Piece};
use super::deadline::Deadline;
use super::response::{Exchange, Output, has_token, parse_decimal, write_response};
use super::{
    BodyError, ConnectionStats, Handler, Request, RequestBody, Sent, Settings, Target, Version,
    error_response,
};

/// Largest request head.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 512;
/// Usual size of a read while a head is awaited.
const HEAD_READ: usize = 8 * 1024;
/// Reads reserve more room when less than this is free.
const MIN_SPARE: usize = 1024;
/// Largest piece of request body handed over at once.
const MAX_PIECE: usize = 64 * 1024;
/// Pieces the pump may read ahead of the handler.
const BODY_PIECES: usize = 4;
/// Most unread request body read past to keep a connection open.
const DRAIN_LIMIT: u64 = 1024 * 1024;
/// How long a closing connection reads past what the client still sends, so that the
/// last response is not lost to a reset.
const LINGER: Duration = Duration::from_secs(2);

/// A bound socket to serve.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Self {
        Self::Unix(listener)
    }
}

/// The addresses of a connection, as requests report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer; `None` on a Unix socket.
    pub remote: Option<SocketAddr>,
    /// The local address; `None` on a Unix socket.
    pub local: Option<SocketAddr>,
}

/// Accepts connections on `listener` and serves each on its own task, until `shutdown`
/// holds `true`; then returns (dropping the listener). Connections then finish the
/// request in hand and close; idle ones close at once. A `shutdown` whose sender is
/// gone never fires.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    settings: Arc<ArcSwap<Settings>>,
    stats: Arc<ConnectionStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(connection) => spawn_connection(connection, &handler, &settings, &stats, &shutdown),
            Err(e) if is_transient(&e) => tracing::debug!("accept: {e}"),
            Err(e) => {
                // Out of descriptors or memory: pause rather than spin.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!("listener stopped accepting");
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn spawn_connection<H: Handler>(
    connection: Accepted,
    handler: &Arc<H>,
    settings: &ArcSwap<Settings>,
    stats: &Arc<ConnectionStats>,
    shutdown: &watch::Receiver<bool>,
) {
    let handler = Arc::clone(handler);
    // Each connection runs with the settings current when it was accepted.
    let settings = settings.load_full();
    let shutdown = shutdown.clone();
    let stats = Arc::clone(stats);
    stats.accepted.increment();
    stats.active.increment();
    match connection {
        Accepted::Tcp(mut stream, remote) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let info = ConnectionInfo {
                remote: Some(remote),
                local: stream.local_addr().ok(),
            };
            tokio::spawn(async move {
                let (reader, writer) = stream.split();
                serve_connection(reader, writer, info, &*handler, &settings, &stats, shutdown)
                    .await;
                stats.closed();
            });
        }
        Accepted::Unix(mut stream) => {
            tokio::spawn(async move {
                let (reader, writer) = stream.split();
                let info = ConnectionInfo::default();
                serve_connection(reader, writer, info, &*handler, &settings, &stats, shutdown)
                    .await;
                stats.closed();
            });
        }
    }
}

/// Serves one accepted connection, given as its two halves, until it closes.
pub async fn serve_connection<R, W, H>(
    reader: R,
    writer: W,
    info: ConnectionInfo,
    handler: &H,
    settings: &Settings,
    stats: &ConnectionStats,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Handler,
{
    tracing::debug!(remote = ?info.remote, "connection opened");
    let mut shutdown = shutdown;
    if *shutdown.borrow() {
        // Already shutting down: make `shutting_down` see it.
        shutdown.mark_changed();
    }
    let mut stop_signal = shutdown.clone();
    let connection = Connection {
        reader,
        deadline: Deadline::new(),
        stop: Box::pin(async move { shutdown_requested(&mut stop_signal).await }),
        stop_armed: false,
        rbuf: BytesMut::new(),
        spans: Vec::new(),
        out: Output::new(writer, settings.send_timeout),
        handler,
        settings,
        stats,
        info,
        shutdown,
    };
    connection.run().await;
    tracing::debug!(remote = ?info.remote, "connection closed");
}

/// Whether the server is shutting down, without the channel's lock unless it changed
/// (it only ever changes to `true`).
fn shutting_down(shutdown: &watch::Receiver<bool>) -> bool {
    shutdown.has_changed().unwrap_or(false) && *shutdown.borrow()
}

/// Resolves once `shutdown` holds `true`.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What follows an exchange.
enum Next {
    KeepAlive,
    /// Half-close and go.
    Close,
    /// Half-close, then read past what the client still sends for a while.
    Linger,
    /// The client cannot be written to: just go.
    Drop,
}

struct Connection<'a, R, W, H> {
    reader: R,
    /// The timer of the connection's waits for request heads.
    deadline: Deadline,
    /// Resolves once the server shuts down. Polled once, at the first wait for a next
    /// request: it then stays registered with the shutdown signal, with this task's
    /// waker, and later waits check `shutting_down` instead (each poll would take the
    /// signal's lock, which every connection shares).
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stop_armed: bool,
    rbuf: BytesMut,
    /// Scratch space for parsing heads.
    spans: Vec<[usize; 4]>,
    out: Output<W>,
    handler: &'a H,
    settings: &'a Settings,
    stats: &'a ConnectionStats,
    info: ConnectionInfo,
    shutdown: watch::Receiver<bool>,
}

/// A parsed request head.
struct Head {
    method: Bytes,
    target: Bytes,
    version: Version,
    headers: Vec<(Bytes, Bytes)>,
}

enum HeadRead {
    Head(Head),
    /// Nothing more is coming (closed, idle too long, or shutting down).
    Idle,
    /// Answer with this status and close.
    Reject(u16),
}

/// What the head says about the exchange.
struct Meta {
    framing: Framing,
    keep_alive: bool,
    /// The framing cannot be trusted for a next request.
    force_close: bool,
    expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// How the body pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    /// The whole body was read.
    Complete,
    /// The body could not be read (the handler was told).
    Failed,
    /// The handler dropped the body before its end.
    Abandoned,
}

impl<R, W, H> Connection<'_, R, W, H>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Handler,
{
    async fn run(mut self) {
        let mut first = true;
        let next = loop {
            self.stats.idle.increment();
            let read = self.read_head(first).await;
            self.stats.idle.decrement();
            let head = match read {
                HeadRead::Head(head) => {
                    self.stats.requests.increment();
                    head
                }
                HeadRead::Idle => break Next::Close,
                HeadRead::Reject(status) => break self.reject(status, None).await,
            };
            first = false;
            match self.exchange(head).await {
                Next::KeepAlive => {}
                next => break next,
            }
        };
        match next {
            Next::Close | Next::KeepAlive => {
                if let Err(e) = self.out.finish().await {
                    tracing::debug!("closing: {e}");
                }
            }
            Next::Linger => match self.out.finish().await {
                Ok(()) => self.linger().await,
                Err(e) => tracing::debug!("closing: {e}"),
            },
            Next::Drop => {}
        }
    }

    /// Reads the next request head. The first byte may take `header_read_timeout` on a
    /// new connection and `idle_timeout` on a kept-alive one; the rest of the head must
    /// follow within `header_read_timeout` of it.
    async fn read_head(&mut self, first: bool) -> HeadRead {
        let settings = self.settings;
        // When the head's first bytes were seen. Taken only once a head turns out to be
        // incomplete: a whole head (the usual case) costs no clock read.
        let mut started = None;
        loop {
            if !self.rbuf.is_empty() {
                match parse_head(&mut self.rbuf, &mut self.spans) {
                    Ok(Some(head)) => return HeadRead::Head(head),
                    Ok(None) if self.rbuf.len() >= MAX_HEAD => return HeadRead::Reject(431),
                    Ok(None) => {
                        started.get_or_insert_with(Instant::now);
                    }
                    Err(status) => return HeadRead::Reject(status),
                }
            }
            reserve(&mut self.rbuf, HEAD_READ);
            // (The connection's one timer: see `deadline`. `checked_add`: a timeout too
            // large to represent never expires.)
            match started {
                Some(at) => self
                    .deadline
                    .set(at.checked_add(settings.header_read_timeout)),
                None if first => self.deadline.set_after(settings.header_read_timeout),
                None => self.deadline.set_after(settings.idle_timeout),
            }
            let idle = started.is_none();
            let Self {
                reader,
                rbuf,
                deadline,
                stop,
                stop_armed,
                shutdown,
                ..
            } = self;
            let mut read_buf = pin!(reader.read_buf(rbuf));
            let read = poll_fn(|cx| {
                // Shutting down ends a wait for a next request, not a head under way.
                if idle {
                    let stopped = if *stop_armed {
                        shutting_down(shutdown)
                    } else {
                        *stop_armed = true;
                        stop.as_mut().poll(cx).is_ready()
                    };
                    if stopped {
                        return Poll::Ready(None);
                    }
                }
                if let Poll::Ready(read) = read_buf.as_mut().poll(cx) {
                    return Poll::Ready(Some(Ok(read)));
                }
                deadline.poll_expired(cx).map(|()| Some(Err(())))
            })
            .await;
            let Some(read) = read else {
                return HeadRead::Idle;
            };
            match read {
                Ok(Ok(0)) => return HeadRead::Idle,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!("reading a request head: {e}");
                    return HeadRead::Idle;
                }
                Err(_) if started.is_some() => return HeadRead::Reject(408),
                Err(_) => return HeadRead::Idle,
            }
        }
    }

    /// Answers with a server error page; the connection then closes.
    async fn reject(&mut self, status: u16, request: Option<(Version, bool)>) -> Next {
        tracing::debug!(status, remote = ?self.info.remote, "rejecting a request");
        let exchange = Exchange {
            version: request.map(|(version, _)| version),
            head_request: request.is_some_and(|(_, head)| head),
            close: true,
            server_version: self.settings.server_version,
        };
        let mut sent = Sent::default();
        match write_response(&mut self.out, error_response(status), &exchange, &mut sent).await {
            Ok(_) => Next::Linger,
            Err(e) => {
                tracing::debug!("writing an error response: {e}");
                Next::Drop
            }
        }
    }

    /// Serves one request whose head has been read.
    async fn exchange(&mut self, head: Head) -> Next {
        let head_request = head.method.as_ref() == b"HEAD";
        let version = head.version;
        let meta = match examine(&head) {
            Ok(meta) => meta,
            Err(status) => return self.reject(status, Some((version, head_request))).await,
        };
        let settings = self.settings;
        let mut decoder = match meta.framing {
            Framing::None => BodyDecoder::none(),
            Framing::Length(n) if n > settings.max_body_size => {
                return self.reject(413, Some((version, head_request))).await;
            }
            Framing::Length(n) => BodyDecoder::length(n),
            Framing::Chunked => BodyDecoder::chunked(settings.max_body_size),
        };
        let expect = meta.expect_continue && !decoder.is_done();
        // With `Expect: 100-continue`, the body's first read sends `wanted`; the exchange
        // then sends `100 Continue` (if no answer has begun) and `go` starts the pump.
        let (wanted_tx, mut wanted_rx, mut go_tx, go_rx) = if expect {
            let (wanted_tx, wanted_rx) = oneshot::channel();
            let (go_tx, go_rx) = oneshot::channel();
            (Some(wanted_tx), Some(wanted_rx), Some(go_tx), Some(go_rx))
        } else {
            (None, None, None, None)
        };
        let (pieces, body) = if decoder.is_done() {
            (None, RequestBody::empty())
        } else {
            let (tx, rx) = mpsc::channel(BODY_PIECES);
            (
                Some(tx),
                RequestBody::streamed(decoder.remaining(), rx, wanted_tx),
            )
        };
        let Head {
            method,
            target,
            version,
            mut headers,
        } = head;
        // (Checked first: `retain` costs more than a look, and nearly every head is clean.)
        if settings.discard_unsafe_fields
            && !headers.iter().all(|(name, _)| is_safe_field_name(name))
        {
            headers.retain(|(name, _)| is_safe_field_name(name));
        }
        let logged_target = target.clone();
        let target = match Target::parse(target) {
            Ok(target) => target,
            Err(e) => {
                tracing::debug!("bad request: {e}");
                return self.reject(400, Some((version, head_request))).await;
            }
        };
        let request = Request::new(
            method,
            target,
            version,
            headers,
            self.info.remote,
            self.info.local,
            body,
        );
        let Self {
            reader,
            rbuf,
            out,
            handler,
            shutdown,
            ..
        } = self;
        let mut pump_end = pieces.is_none().then_some(PumpEnd::Complete);
        let mut started = !expect;
        let written = {
            let mut pump = pin!(pump_body(
                reader,
                rbuf,
                &mut decoder,
                pieces.as_ref(),
                go_rx,
                settings.body_read_timeout
            ));
            let mut answer = CatchUnwind(pin!(handler.handle_completing(request)));
            let answer = loop {
                tokio::select! {
                    biased;
                    answer = &mut answer => break answer,
                    wanted = body_wanted(&mut wanted_rx), if wanted_rx.is_some() => {
                        if wanted {
                            if let Err(e) = out.send_continue().await {
                                tracing::debug!("sending 100 Continue: {e}");
                                return Next::Drop;
                            }
                            started = true;
                            if let Some(go) = go_tx.take() {
                                let _ = go.send(());
                            }
                        }
                    }
                    end = &mut pump, if pump_end.is_none() => pump_end = Some(end),
                }
            };
            let (response, completion) = answer.unwrap_or_else(|panic| {
                tracing::error!(
                    target = %String::from_utf8_lossy(&logged_target),
                    "the request handler panicked: {}",
                    panic_message(&*panic)
                );
                (error_response(500), None)
            });
            // A handler that took the whole body can answer before the pump has handed
            // over the end marker it no longer needs (the body's length was known): let
            // the pump finish if it can without waiting, or that body looks abandoned.
            if pump_end.is_none()
                && let Poll::Ready(end) = poll_fn(|cx| Poll::Ready(pump.as_mut().poll(cx))).await
            {
                pump_end = Some(end);
            }
            // Close when the body will stay unread: dropped by the handler, and never
            // asked of the client or too long to read past.
            let abandoned = matches!(pump_end, None | Some(PumpEnd::Abandoned))
                && pieces.as_ref().is_some_and(mpsc::Sender::is_closed);
            let unreadable = abandoned
                && (!started || matches!(meta.framing, Framing::Length(n) if n > DRAIN_LIMIT));
            let exchange = Exchange {
                version: Some(version),
                head_request,
                close: !meta.keep_alive
                    || meta.force_close
                    || shutting_down(shutdown)
                    || pump_end == Some(PumpEnd::Failed)
                    || unreadable,
                server_version: settings.server_version,
            };
            let mut sent = Sent::default();
            let written = {
                let mut write = pin!(write_response(out, response, &exchange, &mut sent));
                loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written,
                        wanted = body_wanted(&mut wanted_rx), if wanted_rx.is_some() => {
                            // Too late for `100 Continue`; the client sends the body anyway
                            // once it tires of waiting.
                            if wanted {
                                started = true;
                                if let Some(go) = go_tx.take() {
                                    let _ = go.send(());
                                }
                            }
                        }
                        end = &mut pump, if pump_end.is_none() => pump_end = Some(end),
                    }
                }
            };
            if let Some(completion) = completion {
                completion(&sent);
            }
            written
        };
        drop(pieces);
        let close = match written {
            Ok(close) => close,
            Err(e) => {
                tracing::debug!("writing a response: {e}");
                return Next::Drop;
            }
        };
        let body_read = match pump_end {
            Some(PumpEnd::Complete) => true,
            Some(PumpEnd::Failed) => false,
            Some(PumpEnd::Abandoned) | None => {
                !close
                    && started
                    && drain(reader, rbuf, &mut decoder, settings.body_read_timeout).await
            }
        };
        if !body_read {
            Next::Linger
        } else if close || shutting_down(shutdown) {
            if rbuf.is_empty() {
                Next::Close
            } else {
                Next::Linger
            }
        } else {
            Next::KeepAlive
        }
    }

    /// Reads past the rest of what the client sends, for a while.
    async fn linger(&mut self) {
        let deadline = Instant::now() + LINGER;
        loop {
            self.rbuf.clear();
            reserve(&mut self.rbuf, HEAD_READ);
            match timeout_at(deadline, self.reader.read_buf(&mut self.rbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
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

/// Makes room for a read of about `want` bytes.
fn reserve(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(want);
    }
}

/// Takes a request head off the front of `buf`: `Ok(None)` while incomplete, `Err` with
/// the status to answer when it is invalid. The head is split off the read buffer, not
/// copied: every part of the request is a slice of it. `spans` is scratch space, kept by
/// the connection so that a request costs no allocation for it.
fn parse_head(buf: &mut BytesMut, spans: &mut Vec<[usize; 4]>) -> Result<Option<Head>, u16> {
    let (len, method, target, minor) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let len = match request.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(httparse::Error::Version) if names_another_version(buf) => return Err(505),
            Err(_) => return Err(400),
        };
        let (Some(method), Some(target), Some(minor)) =
            (request.method, request.path, request.version)
        else {
            return Err(400);
        };
        // Where each part lies in the head (httparse hands out slices of it).
        let base = buf.as_ptr() as usize;
        let span = |s: &[u8]| {
            let at = (s.as_ptr() as usize).wrapping_sub(base);
            match at.checked_add(s.len()) {
                Some(end) if end <= len => Ok([at, end]),
                // An empty part need not point into the head.
                _ if s.is_empty() => Ok([0, 0]),
                _ => Err(400u16),
            }
        };
        spans.clear();
        for header in request.headers.iter() {
            let [name_at, name_end] = span(header.name.as_bytes())?;
            let [value_at, value_end] = span(header.value)?;
            spans.push([name_at, name_end, value_at, value_end]);
        }
        (
            len,
            span(method.as_bytes())?,
            span(target.as_bytes())?,
            minor,
        )
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

/// Checks the head's framing and connection fields.
fn examine(head: &Head) -> Result<Meta, u16> {
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut codings = 0;
    let mut only_chunked = true;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for (name, value) in &head.headers {
        let name = name.as_ref();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = value.trim_ascii();
            let n = match parse_decimal(value) {
                Some(n) => n,
                None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                    return Err(413);
                }
                None => return Err(400),
            };
            if length.is_some_and(|l| l != n) {
                return Err(400);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|c| !c.is_empty())
            {
                codings += 1;
                only_chunked &= coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(value, b"close");
            keep_alive |= has_token(value, b"keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    if hosts > 1 || (hosts == 0 && head.version == Version::Http11) {
        return Err(400);
    }
    let framing = if transfer_encoding {
        if length.is_some() || codings == 0 {
            return Err(400);
        }
        if codings > 1 || !only_chunked {
            return Err(501);
        }
        Framing::Chunked
    } else {
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    let http11 = head.version == Version::Http11;
    Ok(Meta {
        framing,
        keep_alive: !close && (http11 || keep_alive),
        force_close: transfer_encoding && !http11,
        expect_continue: expect_continue && http11,
    })
}

/// Catches a panic in the future it polls.
struct CatchUnwind<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for CatchUnwind<'_, F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Resolves when the body's reader first asks for it (`true`) or is dropped unread.
async fn body_wanted(slot: &mut Option<oneshot::Receiver<()>>) -> bool {
    let Some(rx) = slot else {
        return std::future::pending().await;
    };
    let wanted = rx.await.is_ok();
    *slot = None;
    wanted
}

/// Feeds the body from the connection to the handler, piece by piece. With `go`, waits
/// for it first (the client expects `100 Continue`).
async fn pump_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    decoder: &mut BodyDecoder,
    pieces: Option<&mpsc::Sender<Piece>>,
    go: Option<oneshot::Receiver<()>>,
    stall: Duration,
) -> PumpEnd {
    let Some(pieces) = pieces else {
        return PumpEnd::Complete;
    };
    if let Some(go) = go
        && go.await.is_err()
    {
        return PumpEnd::Abandoned;
    }
    loop {
        let piece = match decoder.decode(rbuf, MAX_PIECE) {
            Ok(Decoded::Data(bytes)) => Piece::Data(bytes),
            Ok(Decoded::End) => {
                // The connection is past the body whether or not the handler hears it.
                let _ = pieces.send(Piece::End).await;
                return PumpEnd::Complete;
            }
            Ok(Decoded::NeedMore) => {
                reserve(rbuf, read_size(decoder));
                match timeout(stall, reader.read_buf(rbuf)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    Ok(Ok(_)) => Piece::Failed(BodyError::Closed),
                    Ok(Err(e)) => {
                        tracing::debug!("reading a request body: {e}");
                        Piece::Failed(BodyError::Closed)
                    }
                    Err(_) => Piece::Failed(BodyError::Timeout),
                }
            }
            Err(e) => Piece::Failed(e),
        };
        if let Piece::Failed(e) = piece {
            tracing::debug!("request body: {e}");
            decoder.fail(e);
            let _ = pieces.send(piece).await;
            return PumpEnd::Failed;
        }
        if pieces.send(piece).await.is_err() {
            return PumpEnd::Abandoned;
        }
    }
}

fn read_size(decoder: &BodyDecoder) -> usize {
    let want = decoder
        .remaining()
        .map_or(MAX_PIECE as u64, |r| r.min(MAX_PIECE as u64));
    usize::try_from(want).unwrap_or(MAX_PIECE).max(HEAD_READ)
}

/// Reads past the rest of an unread body, if it is small enough; `true` when the
/// connection is then at the next request.
async fn drain<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    decoder: &mut BodyDecoder,
    stall: Duration,
) -> bool {
    let mut left = DRAIN_LIMIT;
    if decoder.remaining().is_some_and(|r| r > left) {
        return false;
    }
    loop {
        match decoder.decode(rbuf, MAX_PIECE) {
            Ok(Decoded::Data(bytes)) => match left.checked_sub(bytes.len() as u64) {
                Some(l) => left = l,
                None => return false,
            },
            Ok(Decoded::End) => return true,
            Ok(Decoded::NeedMore) => {
                reserve(rbuf, read_size(decoder));
                match timeout(stall, reader.read_buf(rbuf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return false,
                }
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Buf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixStream};
    use tokio::sync::{mpsc, watch};
    use tokio::task::JoinHandle;

    use super::super::{Response, ResponseBody, StreamAbort};
    use super::*;

    /// Long enough never to trip on a loaded machine.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// Echoes the request (or, by target, streams, panics or ignores the body).
    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, request: Request) -> Response {
            match &request.target.raw()[..] {
                b"/panic" => panic!("the test handler panics"),
                b"/ignore" => text("ignored"),
                b"/stream" => stream(None, &["one ", "two ", "three"]),
                b"/stream-length" => stream(Some(13), &["one ", "two ", "three"]),
                b"/stream-short" => stream(Some(20), &["one ", "two ", "three"]),
                b"/duplex" => {
                    // Answers at once and streams the body back as it arrives.
                    let (tx, rx) = mpsc::channel(1);
                    let mut body = request.body;
                    tokio::spawn(async move {
                        while let Ok(Some(piece)) = body.chunk().await {
                            if tx.send(Ok(piece)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Response {
                        status: 200,
                        headers: vec![],
                        body: ResponseBody::Stream(rx),
                    }
                }
                b"/stream-abort" => {
                    let (tx, rx) = mpsc::channel(4);
                    tokio::spawn(async move {
                        let _ = tx.send(Ok(Bytes::from_static(b"partial"))).await;
                        let _ = tx.send(Err(StreamAbort("test".into()))).await;
                    });
                    Response {
                        status: 200,
                        headers: vec![],
                        body: ResponseBody::Stream(rx),
                    }
                }
                _ => echo(request).await,
            }
        }
    }

    fn text(body: &str) -> Response {
        Response {
            status: 200,
            headers: vec![(
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"text/plain"),
            )],
            body: ResponseBody::Full(Bytes::copy_from_slice(body.as_bytes())),
        }
    }

    fn stream(length: Option<u64>, pieces: &[&'static str]) -> Response {
        let (tx, rx) = mpsc::channel(1);
        let pieces = pieces.to_vec();
        tokio::spawn(async move {
            for piece in pieces {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tx
                    .send(Ok(Bytes::from_static(piece.as_bytes())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let headers = length
            .map(|n| {
                vec![(
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from(n.to_string()),
                )]
            })
            .unwrap_or_default();
        Response {
            status: 200,
            headers,
            body: ResponseBody::Stream(rx),
        }
    }

    async fn echo(mut request: Request) -> Response {
        let mut out = format!(
            "{} {} {}\n",
            String::from_utf8_lossy(&request.method),
            String::from_utf8_lossy(request.target.raw()),
            request.version.as_str()
        );
        for (name, value) in &request.headers {
            out.push_str(&format!(
                "{}: {}\n",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            ));
        }
        out.push_str(&format!("length: {:?}\n\n", request.body.content_length()));
        loop {
            match request.body.chunk().await {
                Ok(Some(piece)) => out.push_str(&String::from_utf8_lossy(&piece)),
                Ok(None) => break,
                Err(e) => {
                    out.push_str(&format!("body error: {e:?}"));
                    break;
                }
            }
        }
        text(&out)
    }

    struct Server {
        address: SocketAddr,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    async fn start(settings: Settings) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(serve(
            listener.into(),
            Arc::new(Echo),
            Arc::new(ArcSwap::from_pointee(settings)),
            Arc::default(),
            stop,
        ));
        Server {
            address,
            shutdown,
            task,
        }
    }

    fn quick_settings() -> Settings {
        Settings {
            header_read_timeout: Duration::from_millis(200),
            body_read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            ..Settings::default()
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    struct Client<S> {
        stream: S,
        buf: BytesMut,
    }

    impl Client<TcpStream> {
        async fn connect(address: SocketAddr) -> Self {
            Self {
                stream: TcpStream::connect(address).await.expect("connect"),
                buf: BytesMut::new(),
            }
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("send");
        }

        /// More bytes, or `false` at the end of the stream.
        async fn fill(&mut self) -> bool {
            self.buf.reserve(4096);
            match timeout(PATIENCE, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) => n > 0,
                Ok(Err(_)) => false,
                Err(_) => panic!("the server sent nothing for {PATIENCE:?}"),
            }
        }

        /// The next response; `None` if the connection closes first.
        async fn reply(&mut self, head_request: bool) -> Option<Reply> {
            let (len, status, headers) = loop {
                let mut slots = [httparse::EMPTY_HEADER; 64];
                let mut response = httparse::Response::new(&mut slots);
                match response.parse(&self.buf).expect("a valid response head") {
                    httparse::Status::Complete(len) => {
                        let headers = response
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect::<Vec<_>>();
                        break (len, response.code.expect("status"), headers);
                    }
                    httparse::Status::Partial => {
                        if !self.fill().await {
                            assert!(self.buf.is_empty(), "the connection closed mid-head");
                            return None;
                        }
                    }
                }
            };
            self.buf.advance(len);
            let mut reply = Reply {
                status,
                headers,
                body: Vec::new(),
            };
            if head_request || status < 200 || status == 204 || status == 304 {
                return Some(reply);
            }
            if reply.header("transfer-encoding").is_some() {
                let mut decoder = BodyDecoder::chunked(u64::MAX);
                loop {
                    match decoder
                        .decode(&mut self.buf, 1 << 20)
                        .expect("valid chunks")
                    {
                        Decoded::Data(piece) => reply.body.extend_from_slice(&piece),
                        Decoded::End => break,
                        Decoded::NeedMore => {
                            assert!(self.fill().await, "the connection closed mid-body")
                        }
                    }
                }
            } else if let Some(length) = reply.header("content-length") {
                let length: usize = length.parse().expect("a numeric Content-Length");
                while self.buf.len() < length {
                    assert!(self.fill().await, "the connection closed mid-body");
                }
                reply.body = self.buf.split_to(length).to_vec();
            } else {
                while self.fill().await {}
                reply.body = self.buf.split().to_vec();
            }
            Some(reply)
        }

        async fn get(&mut self, target: &str) -> Reply {
            self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
                .await;
            self.reply(false).await.expect("a response")
        }

        /// The server closes the connection (after any bytes still to come).
        async fn closed(&mut self) -> bool {
            loop {
                self.buf.clear();
                if !self.fill().await {
                    return true;
                }
            }
        }
    }

    #[tokio::test]
    async fn header_case_and_order_are_kept() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"GET /a?b=c HTTP/1.1\r\nHost: test\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            "GET /a?b=c HTTP/1.1\nHost: test\nX-B: 1\nx-a: 2\nX-B: 3\nlength: Some(0)\n\n"
        );
        assert!(reply.header("date").is_some());
        assert!(
            reply
                .header("server")
                .is_some_and(|s| s.starts_with("Wharf/"))
        );
        assert_eq!(reply.header("connection"), None);
    }

    #[tokio::test]
    async fn keep_alive_serves_requests_in_turn() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        for i in 0..3 {
            let reply = client.get(&format!("/{i}")).await;
            assert!(reply.text().starts_with(&format!("GET /{i} HTTP/1.1\n")));
        }
        client
            .send(b"GET /last HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(
                b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
                  POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
                  POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                  GET /stream HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /4 HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .await;
        let first = client.reply(false).await.expect("reply 1");
        assert!(first.text().starts_with("GET /1 "));
        let second = client.reply(false).await.expect("reply 2");
        assert!(second.text().starts_with("POST /2 ") && second.text().ends_with("\n\nhello"));
        let third = client.reply(false).await.expect("reply 3");
        assert!(third.text().starts_with("POST /3 ") && third.text().ends_with("\n\nabc"));
        let fourth = client.reply(false).await.expect("reply 4");
        assert_eq!(fourth.text(), "one two three");
        let fifth = client.reply(false).await.expect("reply 5");
        assert!(fifth.text().starts_with("GET /4 "));
    }

    #[tokio::test]
    async fn chunked_request_bodies_are_decoded() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        client
            .send(b"7 ; a=\"b\"\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert!(
            reply.text().ends_with("length: None\n\nhello, world"),
            "{}",
            reply.text()
        );
        // The connection is still usable.
        assert!(client.get("/after").await.text().starts_with("GET /after "));
    }

    #[tokio::test]
    async fn content_length_bodies_are_streamed() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        let body = vec![b'x'; 300_000];
        let mut request =
            b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n".to_vec();
        request.extend_from_slice(&body);
        client.send(&request).await;
        let reply = client.reply(false).await.expect("a response");
        assert!(
            reply
                .text()
                .ends_with(&format!("length: Some(300000)\n\n{}", "x".repeat(300_000)))
        );
        assert!(client.get("/after").await.text().starts_with("GET /after "));
    }

    #[tokio::test]
    async fn responses_stream_while_the_body_arrives() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST /duplex HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        while !client.buf.ends_with(b"5\r\nhello\r\n") {
            assert!(client.fill().await, "closed early");
        }
        client.send(b"6\r\n world\r\n0\r\n\r\n").await;
        while !client.buf.ends_with(b"6\r\n world\r\n0\r\n\r\n") {
            assert!(client.fill().await, "closed early");
        }
        client.buf.clear();
        assert!(client.get("/after").await.text().starts_with("GET /after "));
    }

    #[tokio::test]
    async fn expect_continue_is_answered_when_the_body_is_read() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(
                b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            )
            .await;
        let interim = client.reply(false).await.expect("100 Continue");
        assert_eq!(interim.status, 100);
        client.send(b"body").await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 200);
        assert!(reply.text().ends_with("\n\nbody"));

        // A handler that never reads: no 100, and the connection closes after.
        client
            .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "ignored");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn unread_small_bodies_are_read_past() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            .await;
        assert_eq!(
            client.reply(false).await.expect("a response").text(),
            "ignored"
        );
        client.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").await;
        assert_eq!(
            client.reply(false).await.expect("a response").text(),
            "ignored"
        );
        assert!(client.get("/after").await.text().starts_with("GET /after "));

        // Too much to read past: the connection closes.
        client
            .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\nabc")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.text(), "ignored");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let settings = Settings {
            max_body_size: 10,
            ..Settings::default()
        };
        let server = start(settings).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 413);
        assert_eq!(
            reply.text(),
            "<!DOCTYPE html><title>Error 413</title><p>Error 413.\r\n"
        );
        assert_eq!(reply.header("content-type"), Some("text/html"));
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);

        // A chunked body that grows too large reaches the handler as an error.
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert!(
            reply.text().ends_with("\n\nhello body error: TooLarge"),
            "{}",
            reply.text()
        );
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);
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

    #[tokio::test]
    async fn bad_requests_get_error_pages() {
        let server = start(Settings::default()).await;
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: t\r\nFolded: a\r\n b\r\n\r\n", 400),
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200),
        ];
        for &(request, status) in cases {
            let mut client = Client::connect(server.address).await;
            client.send(request).await;
            let reply = client.reply(false).await.expect("a response");
            assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
            if status != 200 {
                assert!(reply.text().contains(&format!("Error {status}")));
            } else {
                assert!(
                    reply.text().ends_with("body error: Malformed"),
                    "{}",
                    reply.text()
                );
            }
            assert!(client.closed().await);
        }

        let mut client = Client::connect(server.address).await;
        let mut request = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..600 {
            request.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        client.send(&request).await;
        assert_eq!(client.reply(false).await.expect("a response").status, 431);

        let mut client = Client::connect(server.address).await;
        let mut request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ".to_vec();
        request.extend_from_slice(&vec![b'a'; 70 * 1024]);
        client.send(&request).await;
        assert_eq!(client.reply(false).await.expect("a response").status, 431);

        // Many fields are fine.
        let mut client = Client::connect(server.address).await;
        let mut request = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..150 {
            request.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        client.send(&request).await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 200);
        assert!(reply.text().contains("\nX-149: 149\n"));
    }

    #[tokio::test]
    async fn http10_streams_end_with_the_connection() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client.send(b"GET /stream HTTP/1.0\r\n\r\n").await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.text(), "one two three");
        assert_eq!(reply.header("connection"), Some("close"));
        assert_eq!(reply.header("content-length"), None);
        assert_eq!(reply.header("transfer-encoding"), None);

        // HTTP/1.0 keep-alive, when asked for and the length is known.
        let mut client = Client::connect(server.address).await;
        for _ in 0..2 {
            client
                .send(b"GET /stream-length HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .await;
            let reply = client.reply(false).await.expect("a response");
            assert_eq!(reply.header("connection"), Some("keep-alive"));
            assert_eq!(reply.text(), "one two three");
        }
        client.send(b"GET / HTTP/1.0\r\n\r\n").await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn streamed_responses_follow_their_framing() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        let reply = client.get("/stream").await;
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        assert_eq!(reply.text(), "one two three");
        let reply = client.get("/stream-length").await;
        assert_eq!(reply.header("content-length"), Some("13"));
        assert_eq!(reply.header("transfer-encoding"), None);
        assert_eq!(reply.text(), "one two three");

        // Short of its Content-Length: the connection closes.
        client
            .send(b"GET /stream-short HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut raw = Vec::new();
        let _ = timeout(PATIENCE, client.stream.read_to_end(&mut raw))
            .await
            .expect("closed");
        assert!(raw.ends_with(b"\r\n\r\none two three"));

        // Aborted: the chunked body is left unterminated and the connection closes.
        let mut client = Client::connect(server.address).await;
        client
            .send(b"GET /stream-abort HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut raw = Vec::new();
        let _ = timeout(PATIENCE, client.stream.read_to_end(&mut raw))
            .await
            .expect("closed");
        assert!(
            raw.ends_with(b"\r\n\r\n7\r\npartial\r\n"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }

    #[tokio::test]
    async fn head_requests_get_heads_only() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        for (target, length) in [
            ("/", None),
            ("/ignore", Some("7")),
            ("/stream-length", Some("13")),
            ("/stream", None),
        ] {
            client
                .send(format!("HEAD {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let reply = client.reply(true).await.expect("a response");
            assert_eq!(reply.status, 200);
            if let Some(length) = length {
                assert_eq!(reply.header("content-length"), Some(length));
            }
            assert_eq!(reply.header("transfer-encoding"), None);
        }
        // No body bytes were sent: the next response follows at once.
        assert!(client.get("/after").await.text().starts_with("GET /after "));
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_500() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        let reply = client.get("/panic").await;
        assert_eq!(reply.status, 500);
        assert!(reply.text().contains("Error 500"));
        assert!(client.get("/after").await.text().starts_with("GET /after "));
        let mut other = Client::connect(server.address).await;
        assert_eq!(other.get("/").await.status, 200);
    }

    #[tokio::test]
    async fn slow_heads_and_idle_connections_time_out() {
        let server = start(quick_settings()).await;
        // Part of a head, then silence: 408 and close.
        let mut client = Client::connect(server.address).await;
        client.send(b"GET / HTTP/1.1\r\nHost:").await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, 408);
        assert!(client.closed().await);
        // Nothing at all: a silent close.
        let mut client = Client::connect(server.address).await;
        assert!(client.reply(false).await.is_none());
        // Idle after a request: a silent close.
        let mut client = Client::connect(server.address).await;
        assert_eq!(client.get("/").await.status, 200);
        assert!(client.reply(false).await.is_none());
        // A stalled body: the handler hears of it.
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert!(
            reply.text().ends_with("\n\nabcbody error: Timeout"),
            "{}",
            reply.text()
        );
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn clients_closing_mid_body_are_reported() {
        let server = start(Settings::default()).await;
        let mut client = Client::connect(server.address).await;
        client
            .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            .await;
        client.stream.shutdown().await.expect("half-close");
        let reply = client.reply(false).await.expect("a response");
        assert!(
            reply.text().ends_with("\n\nabcbody error: Closed"),
            "{}",
            reply.text()
        );
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_connections() {
        let server = start(Settings::default()).await;
        let mut idle = Client::connect(server.address).await;
        assert_eq!(idle.get("/").await.status, 200);
        server.shutdown.send_replace(true);
        timeout(PATIENCE, server.task)
            .await
            .expect("serve returns")
            .expect("no panic");
        assert!(idle.closed().await);
        assert!(TcpStream::connect(server.address).await.is_err());
    }

    #[tokio::test]
    async fn unix_sockets_are_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("http.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(serve(
            listener.into(),
            Arc::new(Echo),
            Arc::new(ArcSwap::from_pointee(Settings::default())),
            Arc::default(),
            stop,
        ));
        let stream = UnixStream::connect(&path).await.expect("connect");
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
        };
        let reply = client.get("/unix").await;
        assert!(reply.text().starts_with("GET /unix HTTP/1.1\n"));
        shutdown.send_replace(true);
        timeout(PATIENCE, task)
            .await
            .expect("serve returns")
            .expect("no panic");
    }

    #[test]
    fn versions_are_told_apart() {
        assert!(names_another_version(b"GET / HTTP/2.0\r\n"));
        assert!(names_another_version(b"\r\nGET / HTTP/1.2\r\n"));
        assert!(!names_another_version(b"GET / HTTX/1.1\r\n"));
        assert!(!names_another_version(b"GET / HTTP/\r\n"));
    }
}

//! One connection's protocol state, as hyper's `conn.rs` keeps it: the read side is a
//! `Reading` (the first head, a next head, or closed and how), and each exchange's
//! request body has its own `BodyState`. An exchange runs the handler, a body pump (read
//! half → the request body's channel) and, once the handler has answered, the response
//! writer (→ write half) side by side, through one helper (`drive`), so a handler can
//! stream its response while it still reads the request body.

use std::any::Any;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout_at};

use super::body::{BodyError, Piece, RequestBody};
use super::counted::Counted;
use super::deadline::Deadline;
use super::decode::{BodyDecoder, Decoded};
use super::encode::ResponseContext;
use super::file::SendFile;
use super::head::{self, BodyFraming, Head, HeadError, MAX_HEAD, Semantics, parse_head};
use super::output::{Output, write_response};
use super::{Completion, ConnectionStats, Handler, Request, Response, Sent, Settings, Version};

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

/// The addresses of a connection, as requests report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer; `None` on a Unix socket.
    pub remote: Option<SocketAddr>,
    /// The local address; `None` on a Unix socket.
    pub local: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
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
    W: AsyncWrite + Unpin + SendFile,
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
        reader: Counted::new(reader, &stats.received),
        deadline: Deadline::new(),
        stop: Box::pin(async move { shutdown_requested(&mut stop_signal).await }),
        stop_armed: false,
        rbuf: BytesMut::new(),
        spans: Vec::new(),
        out: Output::new(Counted::new(writer, &stats.sent), settings.send_timeout),
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
/// (it only ever changes to `true`). A listener that stopped may have dropped its
/// sender since: its last value still tells.
fn shutting_down(shutdown: &watch::Receiver<bool>) -> bool {
    match shutdown.has_changed() {
        Ok(changed) => changed && *shutdown.borrow(),
        Err(_closed) => *shutdown.borrow(),
    }
}

/// Resolves once `shutdown` holds `true`.
pub(super) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The read side of a connection.
enum Reading {
    /// Waiting for the first request head.
    Init,
    /// Waiting for a next request head, the last exchange complete.
    KeepAlive,
    Closed(Closing),
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
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

enum HeadRead<P> {
    /// A head, and what was pinned to serve it if it arrived in pieces.
    Head(Head, Option<P>),
    /// The client closed.
    Idle,
    /// The server, or the connection's listener, stops while no head is under way.
    Stopped,
    /// Answer with the error's status and close.
    Reject(HeadError),
}

/// What a wait for more of a head ended with.
enum Filled {
    More,
    /// The client closed or failed.
    End,
    /// The server (or the connection's listener) stops.
    Stopped,
    /// The deadline passed.
    Expired,
}

/// How the body pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    /// The whole body was read.
    Complete,
    /// The body could not be read (the handler was told).
    Failed(BodyError),
    /// The handler dropped the body before its end.
    Abandoned,
}

/// One exchange's request body, on the connection's side.
struct BodyState {
    decoder: BodyDecoder,
    framing: BodyFraming,
    /// The handler's body; `None` when there is no body to send it.
    pieces: Option<mpsc::Sender<Piece>>,
    signals: BodySignals,
}

/// What the handler's side and the pump have said about the body so far.
struct BodySignals {
    /// How the pump ended, once it has.
    pump_end: Option<PumpEnd>,
    /// The client sends the body: it was not asked to wait, or has been told to go on.
    started: bool,
    /// With `Expect: 100-continue`: resolves when the handler first reads the body.
    wanted: Option<oneshot::Receiver<()>>,
    /// Starts the pump of an expected body.
    go: Option<oneshot::Sender<()>>,
}

impl BodyState {
    /// The body a head announces, the handler's side of it, and (with
    /// `Expect: 100-continue`) the pump's signal to start.
    fn new(
        semantics: &Semantics,
        max_body_size: u64,
    ) -> (Self, RequestBody, Option<oneshot::Receiver<()>>) {
        let decoder = BodyDecoder::new(semantics.framing, max_body_size);
        let expect = semantics.expect_continue && !decoder.is_done();
        // With `Expect: 100-continue`, the body's first read sends `wanted`; the exchange
        // then sends `100 Continue` (if no answer has begun) and `go` starts the pump.
        let (wanted_tx, wanted, go, go_rx) = if expect {
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
            let body = RequestBody::streamed(decoder.remaining(), rx, wanted_tx);
            (Some(tx), body)
        };
        let signals = BodySignals {
            pump_end: pieces.is_none().then_some(PumpEnd::Complete),
            started: !expect,
            wanted,
            go,
        };
        let state = Self {
            decoder,
            framing: semantics.framing,
            pieces,
            signals,
        };
        (state, body, go_rx)
    }
}

impl BodySignals {
    /// The handler asked for the body: let the pump read it.
    fn start(&mut self) {
        self.started = true;
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }
}

/// What `drive` stopped for.
enum Step<T> {
    Done(T),
    /// The handler first asked for a body the client waits to send.
    Wanted,
}

/// Polls `work` to its end while keeping the body side going: the pump runs, and the
/// handler's first ask for the body is handed back (`Step::Wanted`) for the caller to
/// act on. As a biased select: `work` first, then the ask, then the pump. The one loop
/// both phases of an exchange (the handler, then the response) run in.
async fn drive<T>(
    mut work: Pin<&mut impl Future<Output = T>>,
    mut pump: Pin<&mut impl Future<Output = PumpEnd>>,
    signals: &mut BodySignals,
) -> Step<T> {
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Step::Done(done));
            }
            if let Some(wanted) = &mut signals.wanted
                && let Poll::Ready(asked) = Pin::new(wanted).poll(cx)
            {
                signals.wanted = None;
                if asked.is_ok() {
                    return Poll::Ready(Step::Wanted);
                }
                continue;
            }
            if signals.pump_end.is_none()
                && let Poll::Ready(end) = pump.as_mut().poll(cx)
            {
                signals.pump_end = Some(end);
                continue;
            }
            return Poll::Pending;
        }
    })
    .await
}

impl<R, W, H> Connection<'_, R, W, H>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + SendFile,
    H: Handler,
{
    async fn run(mut self) {
        let mut reading = Reading::Init;
        loop {
            reading = match reading {
                Reading::Init => self.next_request(true).await,
                Reading::KeepAlive => self.next_request(false).await,
                Reading::Closed(closing) => return self.close(closing).await,
            };
        }
    }

    async fn close(&mut self, closing: Closing) {
        match closing {
            Closing::Close => {
                if let Err(e) = self.out.finish().await {
                    tracing::debug!("closing: {e}");
                }
            }
            Closing::Linger => match self.out.finish().await {
                Ok(()) => self.linger().await,
                Err(e) => tracing::debug!("closing: {e}"),
            },
            Closing::Drop => {}
        }
    }

    /// Reads the next head and serves its exchange.
    async fn next_request(&mut self, first: bool) -> Reading {
        self.stats.idle.increment();
        let read = self.read_head(first).await;
        self.stats.idle.decrement();
        match read {
            HeadRead::Head(head, pinned) => {
                self.stats.requests.increment();
                self.exchange(head, pinned).await
            }
            HeadRead::Idle => Reading::Closed(Closing::Close),
            // A kept-alive connection whose listener went away: told as an idle one is.
            HeadRead::Stopped if !first => {
                Reading::Closed(self.reject(HeadError::Timeout, None).await)
            }
            HeadRead::Stopped => Reading::Closed(Closing::Close),
            HeadRead::Reject(error) => Reading::Closed(self.reject(error, None).await),
        }
    }

    /// Reads the next request head. The first byte may take `header_read_timeout` on a
    /// new connection and `idle_timeout` on a kept-alive one; the rest of the head must
    /// follow within `header_read_timeout` of it.
    async fn read_head(&mut self, first: bool) -> HeadRead<H::Pinned> {
        let settings = self.settings;
        // When the head's first bytes were seen. Taken only once a head turns out to be
        // incomplete: a whole head (the usual case) costs no clock read, and pins
        // nothing.
        let mut started = None;
        let mut pinned = None;
        loop {
            if !self.rbuf.is_empty() {
                match parse_head(&mut self.rbuf, &mut self.spans) {
                    Ok(Some(head)) => return HeadRead::Head(head, pinned),
                    Ok(None) if self.rbuf.len() >= MAX_HEAD => {
                        return HeadRead::Reject(if head::has_request_line(&self.rbuf) {
                            HeadError::TooLarge
                        } else {
                            HeadError::LineTooLong
                        });
                    }
                    Ok(None) => {
                        if started.is_none() {
                            started = Some(Instant::now());
                            pinned = self.handler.pin();
                        }
                    }
                    Err(error) => return HeadRead::Reject(error),
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
            match self.fill(started.is_none()).await {
                Filled::More => {}
                Filled::End => return HeadRead::Idle,
                Filled::Stopped => return HeadRead::Stopped,
                // As Unit: 408 before the close, whether a head was under way, a new
                // connection sent nothing, or a kept-alive one stayed idle.
                Filled::Expired => return HeadRead::Reject(HeadError::Timeout),
            }
        }
    }

    /// Reads more of a head, until the deadline; a wait for a next request (`idle`)
    /// also ends when the server shuts down, a head under way does not.
    async fn fill(&mut self, idle: bool) -> Filled {
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
        poll_fn(|cx| {
            if idle {
                let stopped = if *stop_armed {
                    shutting_down(shutdown)
                } else {
                    *stop_armed = true;
                    stop.as_mut().poll(cx).is_ready()
                };
                if stopped {
                    return Poll::Ready(Filled::Stopped);
                }
            }
            match read_buf.as_mut().poll(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Filled::End),
                Poll::Ready(Ok(_)) => return Poll::Ready(Filled::More),
                Poll::Ready(Err(e)) => {
                    tracing::debug!("reading a request head: {e}");
                    return Poll::Ready(Filled::End);
                }
                Poll::Pending => {}
            }
            deadline.poll_expired(cx).map(|()| Filled::Expired)
        })
        .await
    }

    /// Answers with the refusal's error page; the connection then closes.
    async fn reject(&mut self, error: HeadError, request: Option<(Version, bool)>) -> Closing {
        let status = error.status();
        tracing::debug!(status, remote = ?self.info.remote, "rejecting a request: {error}");
        let context = ResponseContext {
            version: request.map(|(version, _)| version),
            head_request: request.is_some_and(|(_, head)| head),
            close: true,
            server_version: self.settings.server_version,
        };
        let mut sent = Sent::default();
        let page = self.handler.refusal(status);
        match write_response(&mut self.out, page, &context, &mut sent).await {
            Ok(_) => Closing::Linger,
            Err(e) => {
                tracing::debug!("writing an error response: {e}");
                Closing::Drop
            }
        }
    }

    /// Serves one request whose head has been read.
    async fn exchange(&mut self, head: Head, pinned: Option<H::Pinned>) -> Reading {
        let head_request = head.method.as_ref() == b"HEAD";
        let version = head.version;
        let settings = self.settings;
        let checked = match head::check(head, settings) {
            Ok(checked) => checked,
            Err(error) => {
                let closing = self.reject(error, Some((version, head_request))).await;
                return Reading::Closed(closing);
            }
        };
        let (mut body, request_body, go) =
            BodyState::new(&checked.semantics, settings.max_body_size);
        let mut request = Request::new(
            checked.method,
            checked.target,
            checked.version,
            checked.headers,
            self.info.remote,
            self.info.local,
            request_body,
        );
        request.tls = self.info.tls;
        let context = ResponseContext {
            version: Some(version),
            head_request,
            close: !checked.semantics.keep_alive || checked.semantics.force_close,
            server_version: settings.server_version,
        };
        let close = match self.respond(request, pinned, context, &mut body, go).await {
            Ok(close) => close,
            Err(closing) => return Reading::Closed(closing),
        };
        let body_read = match body.signals.pump_end {
            Some(PumpEnd::Complete) => true,
            Some(PumpEnd::Failed(_)) => false,
            Some(PumpEnd::Abandoned) | None => {
                !close
                    && body.signals.started
                    && drain(
                        &mut self.reader,
                        &mut self.rbuf,
                        &mut body.decoder,
                        settings,
                    )
                    .await
            }
        };
        if !body_read {
            Reading::Closed(Closing::Linger)
        } else if close || shutting_down(&self.shutdown) {
            if self.rbuf.is_empty() {
                Reading::Closed(Closing::Close)
            } else {
                Reading::Closed(Closing::Linger)
            }
        } else {
            Reading::KeepAlive
        }
    }

    /// Runs the handler and writes its response while the pump feeds it the body; `Ok`
    /// tells whether the connection closes after, `Err` how it ends at once. `context`
    /// comes with what the head said about closing.
    async fn respond(
        &mut self,
        request: Request,
        pinned: Option<H::Pinned>,
        mut context: ResponseContext,
        body: &mut BodyState,
        go: Option<oneshot::Receiver<()>>,
    ) -> Result<bool, Closing> {
        let Self {
            reader,
            rbuf,
            out,
            handler,
            settings,
            shutdown,
            ..
        } = self;
        let BodyState {
            decoder,
            framing,
            pieces,
            signals,
        } = body;
        let written = {
            let mut pump = pin!(pump_body(
                reader,
                rbuf,
                decoder,
                pieces.as_ref(),
                go,
                settings
            ));
            let (mut response, completion) =
                answer(*handler, request, pinned, pump.as_mut(), signals, out).await?;
            // A handler that took the whole body can answer before the pump has handed
            // over the end marker it no longer needs (the body's length was known): let
            // the pump finish if it can without waiting, or that body looks abandoned.
            if signals.pump_end.is_none()
                && let Poll::Ready(end) = poll_fn(|cx| Poll::Ready(pump.as_mut().poll(cx))).await
            {
                signals.pump_end = Some(end);
            }
            // Close when the body will stay unread: dropped by the handler, and never
            // asked of the client or too long to read past.
            let abandoned = matches!(signals.pump_end, None | Some(PumpEnd::Abandoned))
                && pieces.as_ref().is_some_and(mpsc::Sender::is_closed);
            let unreadable = abandoned
                && (!signals.started
                    || matches!(*framing, BodyFraming::Length(n) if n > DRAIN_LIMIT));
            let failed = match signals.pump_end {
                Some(PumpEnd::Failed(error)) => Some(error),
                _ => None,
            };
            // The client's body failed before the answer: the client hears why (400,
            // 408, 413), whatever the handler made of the failure.
            if let Some(error) = failed {
                response = handler.refusal(error.status());
            }
            context.close |= shutting_down(shutdown) || failed.is_some() || unreadable;
            send(out, response, completion, &context, pump.as_mut(), signals).await
        };
        *pieces = None;
        written.map_err(|e| {
            tracing::debug!("writing a response: {e}");
            Closing::Drop
        })
    }
}

/// Runs the handler to its answer (a 500 if it panics), sending `100 Continue` when it
/// first asks for a body the client waits to send; `Err` if that cannot be sent.
async fn answer<H: Handler, W: AsyncWrite + Unpin>(
    handler: &H,
    request: Request,
    pinned: Option<H::Pinned>,
    mut pump: Pin<&mut impl Future<Output = PumpEnd>>,
    signals: &mut BodySignals,
    out: &mut Output<W>,
) -> Result<(Response, Option<Completion>), Closing> {
    let logged_target = request.target.raw().clone();
    let mut serving = CatchUnwind(pin!(handler.serve(request, pinned)));
    let answered = loop {
        match drive(Pin::new(&mut serving), pump.as_mut(), signals).await {
            Step::Done(answered) => break answered,
            Step::Wanted => {
                if let Err(e) = out.send_continue().await {
                    tracing::debug!("sending 100 Continue: {e}");
                    return Err(Closing::Drop);
                }
                signals.start();
            }
        }
    };
    Ok(answered.unwrap_or_else(|panic| {
        tracing::error!(
            target = %String::from_utf8_lossy(&logged_target),
            "the request handler panicked: {}",
            panic_message(&*panic)
        );
        (handler.refusal(500), None)
    }))
}

/// Writes the response while the body side goes on, then runs the completion with what
/// went out; `Ok(true)` when the connection closes after.
async fn send<W: AsyncWrite + Unpin + SendFile>(
    out: &mut Output<W>,
    response: Response,
    completion: Option<Completion>,
    context: &ResponseContext,
    mut pump: Pin<&mut impl Future<Output = PumpEnd>>,
    signals: &mut BodySignals,
) -> io::Result<bool> {
    let mut sent = Sent::default();
    let written = {
        let mut write = pin!(write_response(out, response, context, &mut sent));
        loop {
            match drive(write.as_mut(), pump.as_mut(), signals).await {
                Step::Done(written) => break written,
                // Too late for `100 Continue`; the client sends the body anyway once it
                // tires of waiting.
                Step::Wanted => signals.start(),
            }
        }
    };
    if let Some(completion) = completion {
        completion(&sent);
    }
    written
}

impl<R: AsyncRead + Unpin, W, H> Connection<'_, R, W, H> {
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

/// Makes room for a read of about `want` bytes.
fn reserve(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(want);
    }
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

/// Feeds the body from the connection to the handler, piece by piece. With `go`, waits
/// for it first (the client expects `100 Continue`).
async fn pump_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    decoder: &mut BodyDecoder,
    pieces: Option<&mpsc::Sender<Piece>>,
    go: Option<oneshot::Receiver<()>>,
    settings: &Settings,
) -> PumpEnd {
    let Some(pieces) = pieces else {
        return PumpEnd::Complete;
    };
    if let Some(go) = go
        && go.await.is_err()
    {
        return PumpEnd::Abandoned;
    }
    let limits = BodyLimits::from_now(settings);
    loop {
        let piece = match decoder.decode(rbuf, MAX_PIECE) {
            Ok(Decoded::Data(bytes)) => Piece::Data(bytes),
            Ok(Decoded::End) => {
                // The connection is past the body whether or not the handler hears it.
                let _ = pieces.send(Piece::End).await;
                return PumpEnd::Complete;
            }
            Ok(Decoded::NeedMore) => match read_body(reader, rbuf, decoder, &limits).await {
                Ok(()) => continue,
                Err(e) => Piece::Failed(e),
            },
            Err(e) => Piece::Failed(e),
        };
        if let Piece::Failed(e) = piece {
            tracing::debug!("request body: {e}");
            decoder.fail(e);
            let _ = pieces.send(piece).await;
            return PumpEnd::Failed(e);
        }
        if pieces.send(piece).await.is_err() {
            return PumpEnd::Abandoned;
        }
    }
}

/// The waits a body's reads are bounded by.
struct BodyLimits {
    /// Longest silence (`body_read_timeout`).
    stall: Duration,
    /// When the whole body must be in (`body_total_timeout`); `None` if too far off to
    /// represent.
    deadline: Option<Instant>,
}

impl BodyLimits {
    /// The limits of a body first read now.
    fn from_now(settings: &Settings) -> Self {
        Self {
            stall: settings.body_read_timeout,
            deadline: Instant::now().checked_add(settings.body_total_timeout),
        }
    }
}

/// Reads more of a body, which must come within the stall and by the deadline.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    decoder: &BodyDecoder,
    limits: &BodyLimits,
) -> Result<(), BodyError> {
    reserve(rbuf, read_size(decoder));
    let until = match (Instant::now().checked_add(limits.stall), limits.deadline) {
        (Some(stall), Some(deadline)) => Some(stall.min(deadline)),
        (stall, deadline) => stall.or(deadline),
    };
    let read = reader.read_buf(rbuf);
    let read = match until {
        Some(until) => timeout_at(until, read).await,
        None => Ok(read.await),
    };
    match read {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(BodyError::Closed),
        Ok(Err(e)) => {
            tracing::debug!("reading a request body: {e}");
            Err(BodyError::Closed)
        }
        Err(_) => Err(BodyError::Timeout),
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
    settings: &Settings,
) -> bool {
    let limits = BodyLimits::from_now(settings);
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
                if read_body(reader, rbuf, decoder, &limits).await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

//! The data plane's HTTP/1.1 server.
//!
//! Wharf serves guests with its own small HTTP/1.1 implementation (request heads parsed
//! by `httparse`) rather than a framework, because Unit's guest ABI hands the guest the
//! request headers in the client's case and order, which the maps of actix-web and hyper
//! do not keep. It owns connection handling — keep-alive, pipelining, chunked request
//! bodies, `Expect: 100-continue`, streamed responses with back-pressure, timeouts and
//! size limits — and hands each request to a `Handler`.
//!
//! Laid out as hyper's `proto/h1` is, one concern per file: `head` parses and checks
//! request heads (pure, one error type mapped to a status in one place), `decode` takes
//! request bodies out of the read buffer, `encode` writes response heads and chooses
//! their framing, `output` is the write half and sends whole responses, `conn` is one
//! connection's state machine, and `server` the accept loop. This file holds the types
//! a handler sees.

mod body;
mod conn;
mod counted;
mod deadline;
mod decode;
mod encode;
mod file;
pub mod form;
mod head;
pub mod host;
mod output;
pub mod pipe;
mod server;
pub mod target;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::counter::Counter;

pub use body::{BodyError, READ_AHEAD, RequestBody};
pub use conn::{ConnectionInfo, serve_connection};
pub(crate) use encode::push_decimal;
pub use file::{FileBody, SendFile};
pub use head::is_safe_field_name;
pub use server::{Listener, serve};
pub use target::{Target, TargetError};

/// A request as the client sent it, with the facts every reader of it derives from the
/// same bytes (its path, query and host) derived once, here.
pub struct Request {
    /// The method token, as sent.
    pub method: Bytes,
    /// The request-target: as sent, and its decoded path and query.
    pub target: Target,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Header fields in the client's order and case; repeated names stay separate.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The host name of the first `Host` field (`host::host_name`); empty without one.
    pub host: Bytes,
    /// The peer; `None` on a Unix socket.
    pub remote: Option<SocketAddr>,
    /// The local address the connection arrived on; `None` on a Unix socket.
    pub local: Option<SocketAddr>,
    /// Whether the connection is TLS (`$scheme` is `https`).
    pub tls: bool,
    /// The body, streamed from the connection as the handler reads it.
    pub body: RequestBody,
}

impl Request {
    /// A request from its parts; its host is derived from `headers` here.
    pub fn new(
        method: Bytes,
        target: Target,
        version: Version,
        headers: Vec<(Bytes, Bytes)>,
        remote: Option<SocketAddr>,
        local: Option<SocketAddr>,
        body: RequestBody,
    ) -> Self {
        let host = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(b"host"))
            .map(|(_, value)| host::host_name(value))
            .unwrap_or_default();
        Self {
            method,
            target,
            version,
            headers,
            host,
            remote,
            local,
            tls: false,
            body,
        }
    }

    /// A `GET` of `target` with `headers` from 10.0.0.1:5555, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(target: &str, headers: &[(&str, &str)]) -> Self {
        let target =
            Target::parse(Bytes::copy_from_slice(target.as_bytes())).expect("a valid test target");
        let headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect();
        let remote = "10.0.0.1:5555".parse().ok();
        Self::new(
            Bytes::from_static(b"GET"),
            target,
            Version::Http11,
            headers,
            remote,
            None,
            RequestBody::empty(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

/// A response head and its body.
pub struct Response {
    pub status: u16,
    /// Header fields to send, in order; the server adds `Date`, `Server` (unless
    /// disabled), `Connection` and the framing header (`Content-Length` or
    /// `Transfer-Encoding: chunked`) itself. A `Content-Length` here is honoured: the
    /// body must then have exactly that many bytes, or the connection is closed.
    pub headers: Vec<(Bytes, Bytes)>,
    pub body: ResponseBody,
}

pub enum ResponseBody {
    Empty,
    Full(Bytes),
    /// Pieces polled by the writer as it sends them, so a slow client slows the producer.
    Stream(Box<dyn BodyStream + Send>),
    /// A span of a file, sent with `sendfile` where the connection allows.
    File(FileBody),
}

/// A response body whose pieces arrive while the response is being sent: a `pipe`, a
/// component's outgoing body, a channel.
pub trait BodyStream {
    /// The next piece; `Ready(None)` once the body is complete. `Err` aborts the response:
    /// the connection is closed, so the client sees a truncated body.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>>;

    /// The trailer fields, asked for once after `poll_piece` returned `Ready(None)`. The
    /// writer sends them after the last chunk of a chunked response; a response whose
    /// framing cannot carry them (to an HTTP/1.0 client, or with a declared length) goes
    /// without.
    fn trailers(&mut self) -> Vec<(Bytes, Bytes)> {
        Vec::new()
    }

    /// The writer is done with the body. An implementation may keep the box for its next
    /// response (a pipe does, so that a response costs no allocation); by default it is
    /// dropped.
    fn recycle(self: Box<Self>) {}
}

/// The fields of an `http::HeaderMap` (a hyper or `wasi:http` body's trailers), in order.
pub fn fields_of(map: &::http::HeaderMap) -> Vec<(Bytes, Bytes)> {
    map.iter()
        .map(|(name, value)| {
            (
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

/// Pieces sent from another task; the channel's bound is the back-pressure.
impl BodyStream for mpsc::Receiver<Result<Bytes, StreamAbort>> {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        self.poll_recv(cx)
    }
}

/// Why a streamed body stopped early.
#[derive(Debug, Clone)]
pub struct StreamAbort(pub String);

/// What the server wrote for one exchange (for access logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// The status on the wire (an invalid one from the handler became 500).
    pub status: u16,
    /// Body bytes written, framing excluded.
    pub body_bytes: u64,
    /// The `Content-Length` sent, if any.
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The connection closes after this response.
    pub close: bool,
}

/// Runs once the response has been written, or could not be.
pub type Completion = Box<dyn FnOnce(&Sent) + Send>;

/// Serves requests.
pub trait Handler: Send + Sync + 'static {
    /// What a request whose head arrives in pieces is served by, taken when its first
    /// bytes come (`pin`): the configuration it started on, which a change made while
    /// the rest of the head arrives must not take away.
    type Pinned: Send + Sync + 'static;

    /// Pins what serves a request whose head has begun to arrive; `None` if nothing
    /// needs pinning.
    fn pin(&self) -> Option<Self::Pinned> {
        None
    }

    /// The response to `request` (served by `pinned`, if its head arrived in pieces),
    /// and work to run once it is written (or could not be).
    fn serve(
        &self,
        request: Request,
        pinned: Option<Self::Pinned>,
    ) -> impl Future<Output = (Response, Option<Completion>)> + Send;

    /// What the server answers by itself with `status` (a request it refuses before the
    /// handler sees it, or a handler that panicked): Unit's error page, unless the
    /// handler renders its errors otherwise.
    fn refusal(&self, status: u16) -> Response {
        error_response(status)
    }

    /// The TLS config a new connection's handshake uses, read per connection so that a
    /// changed certificate applies to the next handshake; `None` serves plain HTTP.
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }
}

/// Connection and request counters of the data plane, for `/status`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: Counter,
    /// Open connections, idle ones included.
    pub active: Counter,
    /// Open connections waiting for their next request.
    pub idle: Counter,
    pub closed: Counter,
    /// Request heads read.
    pub requests: Counter,
    /// Bytes read from clients, after TLS decryption.
    pub received: Counter,
    /// Bytes written to clients, before TLS encryption.
    pub sent: Counter,
}

impl ConnectionStats {
    fn closed(&self) {
        self.active.decrement();
        self.closed.increment();
    }
}

/// Per-listener limits and timeouts (Unit's `settings.http`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest silence between two pieces of a request body.
    pub body_read_timeout: Duration,
    /// Longest time a whole request body may take, from when it is first read.
    pub body_total_timeout: Duration,
    /// Longest wait for the client to accept response bytes.
    pub send_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Largest request body accepted; larger ones get 413 before any byte is read.
    pub max_body_size: u64,
    /// Send `Server: Wharf/<version>`.
    pub server_version: bool,
    /// Drop request header fields whose names hold anything but letters, digits and
    /// `-` before anything sees them (Unit's default).
    pub discard_unsafe_fields: bool,
    /// Hand the handler the request-target as sent, without Unit's decoding and dot-segment
    /// rules (and their refusals): for the control API, which resolves its paths itself.
    pub verbatim_targets: bool,
}

impl Default for Settings {
    /// Unit's defaults.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            // Wharf's own (Unit has none): a dripping client cannot hold an app's
            // instance longer than this.
            body_total_timeout: Duration::from_secs(120),
            send_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            max_body_size: 8 * 1024 * 1024,
            server_version: true,
            discard_unsafe_fields: true,
            verbatim_targets: false,
        }
    }
}

/// Unit's error page: `<!DOCTYPE html><title>Error 404</title><p>Error 404.`
pub fn error_response(status: u16) -> Response {
    let page = format!("<!DOCTYPE html><title>Error {status}</title><p>Error {status}.\r\n");
    Response {
        status,
        headers: vec![(
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(b"text/html"),
        )],
        body: ResponseBody::Full(Bytes::from(page)),
    }
}

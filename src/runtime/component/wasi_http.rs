//! How Wharf's request and response types map onto `wasi:http`'s: the request head and a
//! body that streams from the connection as the guest reads it, and the guest's response
//! body polled piece by piece by the connection's writer as the guest writes it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt as _, StreamBody};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::super::guest::{GuestEnd, GuestTask};
use crate::http::{BodyError, BodyStream, Request, RequestBody, ResponseBody, StreamAbort};

/// A request the guest cannot be shown; the client gets 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(String);

/// The request as `wasi:http` sees it: scheme `https` on a TLS connection, else `http`, the authority
/// from `Host` with the listener's port added if the client left it out, every header.
pub fn incoming(
    request: Request,
) -> Result<
    http::Request<
        impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    >,
    BadRequest,
> {
    let Request {
        method,
        target,
        headers,
        local,
        tls,
        body,
        ..
    } = request;
    let method = http::Method::from_bytes(&method)
        .map_err(|_| BadRequest("the method is not a valid token".to_owned()))?;
    let authority = authority(&headers, local);
    let path_and_query = path_and_query(target.raw())?;
    let uri = http::Uri::builder()
        .scheme(if tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        })
        .authority(authority.as_str())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| BadRequest(format!("the request's URI is invalid: {e}")))?;
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(&name)
            .map_err(|_| BadRequest("a header name is invalid".to_owned()))?;
        let value = http::HeaderValue::from_maybe_shared(value)
            .map_err(|_| BadRequest(format!("the value of header `{name}` is invalid")))?;
        map.append(name, value);
    }
    let mut builder = http::Request::builder().method(method).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        *headers = map;
    }
    builder
        .body(streamed(body))
        .map_err(|e| BadRequest(e.to_string()))
}

/// The request body as an `http_body::Body`, read from the connection only as the guest
/// asks for it.
fn streamed(
    body: RequestBody,
) -> impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static {
    let pieces = futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.chunk().await {
            Ok(Some(piece)) => Some((Ok(Frame::data(piece)), Some(body))),
            Ok(None) => None,
            Err(e) => Some((Err(body_error(e)), None)),
        }
    });
    StreamBody::new(pieces)
}

/// How a failed request body reads to the guest.
fn body_error(e: BodyError) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error;
    match e {
        BodyError::TooLarge => Error::HttpRequestBodySize(None),
        BodyError::Timeout => Error::ConnectionReadTimeout,
        BodyError::Closed => Error::ConnectionTerminated,
        BodyError::Malformed => Error::HttpProtocolError,
    }
}

/// `Host` as sent if it names a port, else with the listener's port; without `Host`,
/// the listener's address (`localhost` on a Unix socket).
fn authority(headers: &[(Bytes, Bytes)], local: Option<std::net::SocketAddr>) -> String {
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"host"))
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .filter(|host| !host.is_empty());
    match (host, local) {
        (Some(host), Some(local)) if !has_port(&host) => format!("{host}:{}", local.port()),
        (Some(host), _) => host,
        (None, Some(local)) => local.to_string(),
        (None, None) => "localhost".to_owned(),
    }
}

fn has_port(host: &str) -> bool {
    let after_ipv6 = host.rsplit(']').next().unwrap_or(host);
    after_ipv6.contains(':')
}

/// The path and query of an origin-form target, or of an absolute-form one.
fn path_and_query(target: &[u8]) -> Result<http::uri::PathAndQuery, BadRequest> {
    let invalid = || BadRequest("the request target is invalid".to_owned());
    if target.starts_with(b"/") {
        return http::uri::PathAndQuery::try_from(target).map_err(|_| invalid());
    }
    let uri = http::Uri::try_from(target).map_err(|_| invalid())?;
    Ok(uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")))
}

/// The response body of a guest whose head is out, `guest` how it ended or the guest
/// still running. What the guest has already written is taken at once: if that is the whole body,
/// it is sent whole and a guest still running finishes on its own; else the connection's
/// writer polls the rest straight from the guest (`GuestBody`).
pub fn forward(
    app: Arc<str>,
    mut source: HyperOutgoingBody,
    guest: Result<GuestEnd, GuestTask>,
) -> ResponseBody {
    let mut pieces = VecDeque::new();
    let mut trailers = Vec::new();
    let ended = loop {
        match source.frame().now_or_never() {
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => pieces.push_back(data),
                Ok(_) => {}
                Err(frame) => {
                    if let Ok(fields) = frame.into_trailers() {
                        trailers = crate::http::fields_of(&fields);
                    }
                }
            },
            Some(Some(Err(e))) => break Some(Err(e.to_string())),
            Some(None) => break Some(Ok(())),
            None => break None,
        }
    };
    let Some(ended) = ended else {
        return ResponseBody::Stream(Box::new(GuestBody {
            app,
            ready: pieces,
            flow: Flow::Forward(source),
            guest,
            trailers,
        }));
    };
    let end = match guest {
        Ok(end) => Some(end),
        Err(running) => {
            finish_on_its_own(running);
            None
        }
    };
    let abort = match ended {
        Ok(()) => end.and_then(failure),
        Err(error) => Some(error),
    };
    match abort {
        // Trailers go after the last chunk, so such a body is streamed.
        None if !trailers.is_empty() => ResponseBody::Stream(Box::new(GuestBody {
            app,
            ready: pieces,
            flow: Flow::Done,
            guest: Ok(GuestEnd::Done),
            trailers,
        })),
        None if pieces.len() <= 1 => pieces
            .pop_front()
            .map_or(ResponseBody::Empty, ResponseBody::Full),
        None => ResponseBody::Full(pieces.make_contiguous().concat().into()),
        Some(why) => ResponseBody::Stream(Box::new(GuestBody {
            app,
            ready: pieces,
            flow: Flow::Abort(why),
            guest: Ok(GuestEnd::Done),
            trailers,
        })),
    }
}

/// Lets a guest that still runs after its response finish on a task of its own.
pub fn finish_on_its_own(guest: GuestTask) {
    // Off a runtime (a body dropped in a test), the guest is dropped instead.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(guest);
    }
}

/// Why a body is cut short when its guest ended as `end`.
fn failure(end: GuestEnd) -> Option<String> {
    match end {
        GuestEnd::Done => None,
        GuestEnd::Failed => Some("the guest failed".to_owned()),
        GuestEnd::TimedOut => Some("the request timed out".to_owned()),
    }
}

/// A guest's response body as the connection's writer polls it: the pieces written before
/// the head was taken, then the rest as the guest writes it, the guest itself polled here
/// too, so a streamed response needs no task or channel of its own. Once the body ends,
/// the guest's end decides whether it ends complete or cut short.
struct GuestBody {
    app: Arc<str>,
    ready: VecDeque<Bytes>,
    flow: Flow,
    /// How the guest ended, or the guest while it runs.
    guest: Result<GuestEnd, GuestTask>,
    /// The guest's trailer fields, once its body has ended.
    trailers: Vec<(Bytes, Bytes)>,
}

enum Flow {
    Forward(HyperOutgoingBody),
    /// The guest's body ended (`Err`: broke); its end is awaited.
    Ended(Result<(), String>),
    /// The body is cut short for this reason, after the pieces left.
    Abort(String),
    Done,
}

impl BodyStream for GuestBody {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        if let Some(piece) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(piece)));
        }
        if let Err(running) = &mut self.guest
            && let Poll::Ready(end) = running.as_mut().poll(cx)
        {
            self.guest = Ok(end);
        }
        loop {
            match &mut self.flow {
                Flow::Forward(source) => match Pin::new(source).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        Ok(_) => {}
                        Err(frame) => {
                            if let Ok(fields) = frame.into_trailers() {
                                self.trailers = crate::http::fields_of(&fields);
                            }
                        }
                    },
                    Poll::Ready(Some(Err(e))) => self.flow = Flow::Ended(Err(e.to_string())),
                    Poll::Ready(None) => self.flow = Flow::Ended(Ok(())),
                },
                Flow::Ended(ended) => {
                    // (A guest still running was polled above: it wakes this task.)
                    let Ok(end) = self.guest else {
                        return Poll::Pending;
                    };
                    let why = match ended {
                        Err(e) => {
                            tracing::warn!(app = %self.app, "the response body failed: {e}");
                            Some(std::mem::take(e))
                        }
                        Ok(()) => failure(end),
                    };
                    self.flow = why.map_or(Flow::Done, Flow::Abort);
                }
                Flow::Abort(why) => {
                    let why = std::mem::take(why);
                    self.flow = Flow::Done;
                    return Poll::Ready(Some(Err(StreamAbort(why))));
                }
                Flow::Done => return Poll::Ready(None),
            }
        }
    }

    fn trailers(&mut self) -> Vec<(Bytes, Bytes)> {
        std::mem::take(&mut self.trailers)
    }
}

impl Drop for GuestBody {
    fn drop(&mut self) {
        // The client is gone: the guest's writes now fail, and it ends on its own.
        let ended = Ok(GuestEnd::Done);
        if let Err(running) = std::mem::replace(&mut self.guest, ended) {
            finish_on_its_own(running);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A guest's body fed through a channel, ending when the sender goes.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, HyperOutgoingBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let piece = rx.recv().await?;
            Some((Ok::<_, wasmtime_wasi_http::Error>(Frame::data(piece)), rx))
        });
        (tx, StreamBody::new(frames).boxed_unsync())
    }

    async fn next(body: &mut ResponseBody) -> Option<Result<Bytes, StreamAbort>> {
        let ResponseBody::Stream(stream) = body else {
            panic!("a streamed body");
        };
        std::future::poll_fn(|cx| stream.poll_piece(cx)).await
    }

    #[tokio::test]
    async fn a_streamed_body_ends_as_its_guest_does() {
        let (tx, source) = channel_body();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        let guest: GuestTask = Box::pin(async move { end_rx.await.unwrap_or(GuestEnd::Failed) });
        let mut body = forward(Arc::from("app"), source, Err(guest));
        tx.send(Bytes::from_static(b"a")).await.expect("open");
        let first = next(&mut body).await.and_then(Result::ok);
        assert_eq!(first, Some(Bytes::from_static(b"a")));
        drop(tx);
        // The guest's body is complete, but the guest runs on: the end waits for it.
        let early = tokio::time::timeout(Duration::from_millis(50), next(&mut body)).await;
        assert!(early.is_err());
        end_tx.send(GuestEnd::TimedOut).expect("the guest waits");
        assert!(matches!(
            next(&mut body).await,
            Some(Err(StreamAbort(why))) if why == "the request timed out"
        ));
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_body_at_hand_is_sent_whole() {
        let (tx, source) = channel_body();
        tx.send(Bytes::from_static(b"ab")).await.expect("open");
        tx.send(Bytes::from_static(b"c")).await.expect("open");
        drop(tx);
        let body = forward(Arc::from("app"), source, Ok(GuestEnd::Done));
        assert!(matches!(body, ResponseBody::Full(bytes) if bytes == "abc"));
    }

    fn host(value: &'static str) -> Vec<(Bytes, Bytes)> {
        vec![(
            Bytes::from_static(b"Host"),
            Bytes::from_static(value.as_bytes()),
        )]
    }

    #[test]
    fn the_authority_always_has_a_port() {
        let local = Some("127.0.0.1:8080".parse().expect("an address"));
        assert_eq!(authority(&host("example.com:81"), local), "example.com:81");
        assert_eq!(authority(&host("example.com"), local), "example.com:8080");
        assert_eq!(authority(&host("[::1]"), local), "[::1]:8080");
        assert_eq!(authority(&host("[::1]:90"), local), "[::1]:90");
        assert_eq!(authority(&[], local), "127.0.0.1:8080");
        assert_eq!(authority(&[], None), "localhost");
    }

    #[test]
    fn absolute_form_targets_give_their_path() {
        assert_eq!(path_and_query(b"/a?b").expect("valid").as_str(), "/a?b");
        assert_eq!(
            path_and_query(b"http://x:1/p?q").expect("valid").as_str(),
            "/p?q"
        );
    }
}

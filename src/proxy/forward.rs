//! One proxied exchange, as Unit's `nxt_http_proxy.c` and `nxt_h1p_peer_*` make it:
//! the request line (method and target as the client sent them, or as `rewrite` left
//! the target), the header fields kept in order with `Host` as the client sent it, but
//! for the hop-by-hop fields of RFC 9110 §7.6.1 (`Connection` and the fields it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`), `Expect`
//! (Wharf answered the client's) and `Trailer` (request trailers are not forwarded); no
//! `X-Forwarded-*` is added, as Unit adds none. Unit sends HTTP/1.0 and closes; Wharf
//! sends HTTP/1.1 and keeps the connection for the next request. The body streams to
//! the upstream as the client sends it (chunked when its length is unknown), and the
//! response streams back the same way, with the same hop-by-hop fields removed, the
//! upstream's `Server` replaced by Wharf's (Unit skips it too), and its trailer fields
//! forwarded after the last chunk.
//!
//! An upstream that cannot be reached, resets, or answers with a malformed head is a
//! 502; one that does not answer within the timeouts is a 504. Once the head is out, a
//! failure (a malformed body, a stall, a reset) cuts the client's connection, so a
//! broken body never looks complete.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::error::ProxyError;
use super::pool::{Sender, Server};
use super::upload::Upload;
use crate::http::{self, BodyStream, Request, Response, ResponseBody, StreamAbort};

/// Forwards `request` to `server` and answers with what it says (or 502/504).
pub async fn forward(server: &Arc<Server>, request: Request) -> Response {
    match exchange(server, request).await {
        Ok(response) => response,
        Err(e) => {
            let status = e.status();
            tracing::info!(upstream = %server.address, "proxying failed, answering {status}: {e}");
            http::error_response(status)
        }
    }
}

async fn exchange(server: &Arc<Server>, request: Request) -> Result<Response, ProxyError> {
    let head_only = request.method.as_ref() == b"HEAD";
    let outgoing = outgoing(request, server)?;
    let read = server.timeouts.read;
    // A kept-alive connection may have been closed by the upstream just now; hyper
    // hands back a request it did not send, which then goes on a new connection.
    let mut outgoing = Some(outgoing);
    let mut attempt = None;
    if let Some(mut sender) = server.take_idle()
        && let Some(request) = outgoing.take()
    {
        match tokio::time::timeout(read, sender.try_send_request(request)).await {
            Err(_) => return Err(ProxyError::ReadTimeout),
            Ok(Ok(response)) => attempt = Some((sender, response)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(request) => outgoing = Some(request),
                None => return Err(ProxyError::Upstream(e.into_error())),
            },
        }
    }
    let (sender, response) = match (attempt, outgoing) {
        (Some(done), _) => done,
        (None, Some(request)) => {
            let mut sender = server.connect().await?;
            match tokio::time::timeout(read, sender.send_request(request)).await {
                Err(_) => return Err(ProxyError::ReadTimeout),
                Ok(Err(e)) => return Err(ProxyError::Upstream(e)),
                Ok(Ok(response)) => (sender, response),
            }
        }
        (None, None) => return Err(ProxyError::Request("lost the request".to_owned())),
    };
    let (parts, body) = response.into_parts();
    let headers = response_fields(&parts.headers);
    let status = parts.status.as_u16();
    let bodiless = head_only || status == 204 || status == 304 || status < 200;
    let body = if bodiless {
        server.put_back(sender);
        ResponseBody::Empty
    } else {
        ResponseBody::Stream(Box::new(Download {
            body,
            read,
            stalled: Box::pin(tokio::time::sleep(read)),
            reuse: Some((Arc::clone(server), sender)),
            trailers: Vec::new(),
        }))
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Whether a field is hop-by-hop (RFC 9110 §7.6.1) or named by `Connection`.
fn hop_by_hop(name: &[u8], connection: &[Bytes]) -> bool {
    const FIELDS: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    ];
    FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f))
        || connection.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The field names the `Connection` fields list.
fn connection_tokens<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<Bytes> {
    fields
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(|token| Bytes::copy_from_slice(token.trim_ascii()))
        .filter(|token| !token.is_empty())
        .collect()
}

/// The request hyper sends.
fn outgoing(request: Request, server: &Server) -> Result<hyper::Request<Upload>, ProxyError> {
    let bad = |what: &str| ProxyError::Request(what.to_owned());
    let method =
        hyper::Method::from_bytes(&request.method).map_err(|_| bad("the method is not a token"))?;
    let uri = hyper::Uri::from_maybe_shared(request.target.raw().clone())
        .map_err(|_| bad("the target is not a URI hyper accepts"))?;
    let connection = connection_tokens(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref())),
    );
    let mut headers = hyper::HeaderMap::with_capacity(request.headers.len() + 1);
    let mut has_host = false;
    for (name, value) in &request.headers {
        // `Trailer` announces request trailers, which are not forwarded.
        if hop_by_hop(name, &connection)
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"trailer")
        {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case(b"host");
        let name = hyper::header::HeaderName::from_bytes(name)
            .map_err(|_| bad("a field name is invalid"))?;
        let value = hyper::header::HeaderValue::from_maybe_shared(value.clone())
            .map_err(|_| bad("a field value is invalid"))?;
        headers.append(name, value);
    }
    if !has_host {
        // HTTP/1.1 needs a Host; an HTTP/1.0 client may have sent none.
        let host = match &server.address {
            super::Address::Tcp(address) => address.to_string(),
            super::Address::Unix(_) => "localhost".to_owned(),
        };
        if let Ok(value) = hyper::header::HeaderValue::from_str(&host) {
            headers.insert(hyper::header::HOST, value);
        }
    }
    let length = request.body.content_length();
    if let Some(n) = length.filter(|&n| n > 0) {
        headers.insert(hyper::header::CONTENT_LENGTH, n.into());
    }
    let mut outgoing = hyper::Request::new(Upload::new(request.body));
    *outgoing.method_mut() = method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    Ok(outgoing)
}

/// The upstream's fields as Wharf's writer takes them, hop-by-hop ones removed (it
/// frames the body itself; a `Content-Length` is kept and held to), and its `Server`,
/// as Unit drops it: the client is told Wharf's (`settings.http.server_version`).
fn response_fields(headers: &hyper::HeaderMap) -> Vec<(Bytes, Bytes)> {
    let connection = connection_tokens(
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    );
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str().as_bytes();
            !hop_by_hop(name, &connection) && !name.eq_ignore_ascii_case(b"server")
        })
        .map(|(name, value)| {
            (
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

/// The upstream's body as Wharf's writer polls it: a client that reads slowly slows
/// the reads from the upstream.
struct Download {
    body: Incoming,
    read: std::time::Duration,
    /// Fires when the upstream has sent nothing for `read`.
    stalled: Pin<Box<Sleep>>,
    /// The connection, handed back to its server's pool at the body's end.
    reuse: Option<(Arc<Server>, Sender)>,
    /// The upstream's trailer fields, once its body has ended.
    trailers: Vec<(Bytes, Bytes)>,
}

impl BodyStream for Download {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + self.read;
                    self.stalled.as_mut().reset(deadline);
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        Ok(_) => {}
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.trailers = http::fields_of(&trailers);
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.reuse = None;
                    return Poll::Ready(Some(Err(StreamAbort(format!(
                        "the upstream's response body failed: {e}"
                    )))));
                }
                Poll::Ready(None) => {
                    if let Some((server, sender)) = self.reuse.take() {
                        server.put_back(sender);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if self.stalled.as_mut().poll(cx).is_ready() {
                        self.reuse = None;
                        return Poll::Ready(Some(Err(StreamAbort(
                            "the upstream sent no response body data within proxy_read_timeout"
                                .to_owned(),
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn trailers(&mut self) -> Vec<(Bytes, Bytes)> {
        std::mem::take(&mut self.trailers)
    }
}

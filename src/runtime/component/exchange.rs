//! How Wharf's request and response types map onto `wasi:http`'s: the request head and a
//! body that streams from the connection as the guest reads it, and the guest's response
//! body forwarded piece by piece to the connection as the guest writes it.

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::mpsc;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::http::{BodyError, Request, RequestBody, ResponseBody, StreamAbort};

/// Pieces of response body in flight between a guest and its client.
const BODY_PIPELINE: usize = 4;

/// A request the guest cannot be shown; the client gets 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(String);

/// The request as `wasi:http` sees it: scheme `http` (the listener's), the authority
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
        body,
        ..
    } = request;
    let method = http::Method::from_bytes(&method)
        .map_err(|_| BadRequest("the method is not a valid token".to_owned()))?;
    let authority = authority(&headers, local);
    let path_and_query = path_and_query(target.raw())?;
    let uri = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
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

/// The response head's fields as the server sends them.
pub fn response_headers(headers: &http::HeaderMap) -> Vec<(Bytes, Bytes)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

/// What is left to forward of a response body once its head is out.
pub enum Forward {
    /// The whole body was at hand.
    Done(ResponseBody),
    /// More is to come: the server reads `body`; `pump` must run to feed it.
    Streaming { body: ResponseBody, pump: Pump },
}

/// Feeds a streamed response body from the guest's body to the connection.
pub struct Pump {
    source: HyperOutgoingBody,
    sink: mpsc::Sender<Result<Bytes, StreamAbort>>,
}

/// Takes what the guest has already written; if that is the whole body, no task is needed.
/// `failed` says the guest ended in error (so the body, however it ends, is cut short).
pub fn forward_ready(mut source: HyperOutgoingBody, failed: Option<String>) -> Forward {
    let mut pieces = Vec::new();
    let end = loop {
        match source.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    pieces.push(data);
                }
            }
            Some(Some(Err(e))) => break Some(Some(e.to_string())),
            Some(None) => break Some(None),
            None => break None,
        }
    };
    let complete = end.is_some();
    let abort = match end {
        Some(None) => failed,
        Some(Some(error)) => Some(error),
        None => None,
    };
    if complete && abort.is_none() {
        return Forward::Done(match pieces.len() {
            0 => ResponseBody::Empty,
            1 => ResponseBody::Full(pieces.remove(0)),
            _ => ResponseBody::Full(pieces.concat().into()),
        });
    }
    let (sink, body) = mpsc::channel(pieces.len() + BODY_PIPELINE);
    for piece in pieces {
        // The channel has room for every piece gathered.
        let _ = sink.try_send(Ok(piece));
    }
    match (complete, abort) {
        (true, Some(why)) => {
            let _ = sink.try_send(Err(StreamAbort(why)));
            Forward::Done(ResponseBody::Stream(body))
        }
        _ => Forward::Streaming {
            body: ResponseBody::Stream(body),
            pump: Pump { source, sink },
        },
    }
}

impl Pump {
    /// Forwards pieces until the body ends; `Err` says why it was cut short. Returns
    /// early if the client is gone, dropping the guest's body so its writes fail.
    pub async fn run(self) -> (mpsc::Sender<Result<Bytes, StreamAbort>>, Result<(), String>) {
        let Self { mut source, sink } = self;
        loop {
            match source.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers: the data plane does not send them.
                        continue;
                    };
                    if !data.is_empty() && sink.send(Ok(data)).await.is_err() {
                        return (sink, Ok(()));
                    }
                }
                Some(Err(e)) => return (sink, Err(e.to_string())),
                None => return (sink, Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

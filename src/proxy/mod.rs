//! Reverse proxying, as Unit's `proxy` action and `upstreams` do it: the address a
//! `proxy` names (`address`), the weighted round robin of an upstream's servers
//! (`upstream`), the HTTP/1.1 client connections to them with a small idle pool per
//! address (`pool`, over hyper's `client::conn::http1`; `io` adapts tokio's sockets),
//! and one exchange: the request forwarded, the answer streamed back (`forward`).

mod address;
mod error;
mod forward;
mod io;
mod pool;
mod upload;
mod upstream;

use std::time::Duration;

use serde_json::Value;

pub use address::Address;
pub use pool::Server;
pub use upstream::Upstream;

/// Seconds to wait for a connection to an upstream (Unit's internal `proxy_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 60;
/// Seconds to wait for each read from an upstream: the response head, then every piece
/// of its body (Unit's internal `proxy_read_timeout`).
pub const DEFAULT_READ_TIMEOUT: u64 = 30;
/// Seconds to wait for each write to an upstream (Unit's internal `proxy_send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: u64 = 30;

/// How long a proxied exchange may wait on its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub send: Duration,
}

impl Timeouts {
    /// The timeouts `settings.http` sets (the schema has checked their range); unset
    /// ones keep their defaults.
    pub fn from_settings(http: Option<&Value>) -> Timeouts {
        let seconds = |key: &str, default: u64| {
            Duration::from_secs(
                http.and_then(|h| h.get(key))
                    .and_then(Value::as_u64)
                    .unwrap_or(default),
            )
        };
        Timeouts {
            connect: seconds("proxy_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            read: seconds("proxy_read_timeout", DEFAULT_READ_TIMEOUT),
            send: seconds("proxy_send_timeout", DEFAULT_SEND_TIMEOUT),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_settings(None)
    }
}

use std::sync::Arc;

use crate::http::{Request, Response};

/// Where a `proxy` action or an `upstreams/<name>` pass sends requests.
#[derive(Debug, Clone)]
pub enum Destination {
    Server(Arc<Server>),
    Upstream(Arc<Upstream>),
}

impl Destination {
    /// Forwards `request` and answers with the upstream's response (or 502/504).
    pub async fn forward(&self, request: Request) -> Response {
        let server = match self {
            Destination::Server(server) => server,
            Destination::Upstream(upstream) => match upstream.next() {
                Some(server) => server,
                None => {
                    let e = error::ProxyError::NoServer;
                    tracing::info!("proxying failed, answering 502: {e}");
                    return crate::http::error_response(502);
                }
            },
        };
        forward::forward(server, request).await
    }
}

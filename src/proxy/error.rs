//! Why a proxied exchange failed before its response head, and the status that says so.

/// Why an exchange failed before the response head could be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("no connection within proxy_connect_timeout")]
    ConnectTimeout,
    #[error("no response head within proxy_read_timeout")]
    ReadTimeout,
    #[error("{0}")]
    Upstream(hyper::Error),
    #[error("the request cannot be forwarded: {0}")]
    Request(String),
    #[error("the upstream has no server with a weight above 0")]
    NoServer,
}

impl ProxyError {
    /// 504 for every timeout (the send timeout included, as Unit's
    /// `nxt_h1p_peer_send_timeout` answers), 502 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Self::ConnectTimeout | Self::ReadTimeout => 504,
            Self::Upstream(e) if e.is_timeout() || send_timed_out(e) => 504,
            _ => 502,
        }
    }
}

/// Whether hyper failed because a write waited past `proxy_send_timeout` (`proxy::io`
/// fails it with `TimedOut`).
fn send_timed_out(error: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

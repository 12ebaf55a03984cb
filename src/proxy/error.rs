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
    pub fn status(&self) -> u16 {
        match self {
            Self::ConnectTimeout | Self::ReadTimeout => 504,
            Self::Upstream(e) if e.is_timeout() => 504,
            _ => 502,
        }
    }
}

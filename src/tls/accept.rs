//! The server side of a handshake on an accepted connection, bounded in time.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Runs the handshake with `config`; `None` (logged) if it fails or takes longer than
/// `limit` (the listener's `header_read_timeout`, as the request head that follows).
pub async fn handshake<S>(
    config: Arc<ServerConfig>,
    stream: S,
    limit: Duration,
) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out after {limit:?}");
            None
        }
    }
}

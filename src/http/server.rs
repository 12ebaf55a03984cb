//! Accepting connections: the accept loop of a bound socket, one task per connection
//! (served by `conn`, after the TLS handshake on a TLS listener), until shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

use super::conn::{ConnectionInfo, serve_connection, shutdown_requested};
use super::{ConnectionStats, Handler, Settings};

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
    if let Some(tls) = handler.tls() {
        tokio::spawn(async move {
            serve_tls(connection, tls, &*handler, &settings, &stats, shutdown).await;
            stats.closed();
        });
        return;
    }
    match connection {
        Accepted::Tcp(mut stream, remote) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let info = ConnectionInfo {
                remote: Some(remote),
                local: stream.local_addr().ok(),
                tls: false,
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

/// A connection of a TLS listener: the handshake (bounded by `header_read_timeout`),
/// then the same connection state machine over the decrypted stream.
async fn serve_tls<H: Handler>(
    connection: Accepted,
    tls: Arc<rustls::ServerConfig>,
    handler: &H,
    settings: &Settings,
    stats: &ConnectionStats,
    shutdown: watch::Receiver<bool>,
) {
    let limit = settings.header_read_timeout;
    match connection {
        Accepted::Tcp(stream, remote) => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let info = ConnectionInfo {
                remote: Some(remote),
                local: stream.local_addr().ok(),
                tls: true,
            };
            if let Some(stream) = crate::tls::handshake(tls, stream, limit).await {
                let (reader, writer) = tokio::io::split(stream);
                serve_connection(reader, writer, info, handler, settings, stats, shutdown).await;
            }
        }
        Accepted::Unix(stream) => {
            let info = ConnectionInfo {
                tls: true,
                ..ConnectionInfo::default()
            };
            if let Some(stream) = crate::tls::handshake(tls, stream, limit).await {
                let (reader, writer) = tokio::io::split(stream);
                serve_connection(reader, writer, info, handler, settings, stats, shutdown).await;
            }
        }
    }
}

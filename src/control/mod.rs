//! The control API server: binds the control socket (a Unix socket by default, TCP if
//! asked) and serves `handlers` on it, over the same HTTP/1.1 server as the data plane
//! (`crate::http`). Every answer is JSON, the ones the HTTP layer gives by itself (a
//! malformed head, a bad `Content-Length`, a head too large or too slow) included.

mod body;
mod handlers;
mod reply;

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use handlers::ControlState;

use crate::controller::Controller;
use crate::http::{self, Completion, ConnectionStats, Handler, Request, Response};
use crate::sockets::remove_stale_socket;

/// Longest wait for a complete request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may wait for its next request.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How long a stop waits for requests in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the control API listens: `unix:/path`, `ip:port` or `[ipv6]:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for ControlAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a unix: control address needs a socket path".to_owned());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            format!("`{s}` is not a control address; use unix:/path, ip:port or [ipv6]:port")
        })
    }
}

impl fmt::Display for ControlAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Removes a socket file that failed to get its permissions, so none is left behind.
struct SocketFile<'a>(&'a Path);

impl Drop for SocketFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// A bound, listening control socket.
pub enum ControlListener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl ControlListener {
    /// Binds the address; a Unix socket gets `mode`, and `owner` and `group` if given,
    /// before it starts listening, so no client can ever connect to it with looser
    /// permissions.
    pub fn bind(
        address: &ControlAddress,
        mode: u32,
        owner: Option<u32>,
        group: Option<u32>,
    ) -> anyhow::Result<Self> {
        match address {
            ControlAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?).with_context(|| {
                    format!("failed to bind the control socket `{}`", path.display())
                })?;
                let guard = SocketFile(path);
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("failed to set the mode of `{}`", path.display()))?;
                if owner.is_some() || group.is_some() {
                    std::os::unix::fs::chown(path, owner, group).with_context(|| {
                        format!(
                            "failed to give the control socket `{}` to --control-user/--control-group \
                             (as a non-root user, only a group of that user can be given)",
                            path.display()
                        )
                    })?;
                }
                std::mem::forget(guard);
                socket.listen(1024)?;
                let listener = UnixListener::from(std::os::fd::OwnedFd::from(socket));
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            ControlAddress::Tcp(addr) => {
                if owner.is_some() || group.is_some() {
                    anyhow::bail!(
                        "--control-user and --control-group apply to a unix: control socket, \
                         not to TCP {addr}"
                    );
                }
                tracing::warn!(
                    "the control API listens on TCP {addr} without authentication; anyone who \
                     can reach it can reconfigure this server"
                );
                let listener = TcpListener::bind(addr)
                    .with_context(|| format!("failed to bind the control address {addr}"))?;
                Ok(Self::Tcp(listener))
            }
        }
    }

    /// The socket file to remove at exit, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Self::Unix { path, .. } => Some(path),
            Self::Tcp(_) => None,
        }
    }

    /// Starts serving the control API on the current runtime; `stats` are the data
    /// plane's, for `/status`. The returned server runs until stopped.
    pub fn serve(
        self,
        controller: Arc<Controller>,
        stats: Arc<ConnectionStats>,
    ) -> anyhow::Result<ControlServer> {
        let listener = match self {
            Self::Unix { listener, .. } => {
                listener.set_nonblocking(true)?;
                http::Listener::Unix(tokio::net::UnixListener::from_std(listener)?)
            }
            Self::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                http::Listener::Tcp(tokio::net::TcpListener::from_std(listener)?)
            }
        };
        let handler = Arc::new(ControlHandler {
            state: ControlState { controller, stats },
        });
        let settings = Arc::new(ArcSwap::from_pointee(settings()));
        // The control API's own connections are not the data plane's: not in `/status`.
        let own_stats = Arc::new(ConnectionStats::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(http::serve(listener, handler, settings, own_stats, stopped));
        Ok(ControlServer { stop, task })
    }
}

/// The HTTP settings of the control socket: bodies up to `body::MAX_BODY`, and short
/// timeouts, since its clients are tools, not browsers.
fn settings() -> http::Settings {
    http::Settings {
        header_read_timeout: HEAD_TIMEOUT,
        body_read_timeout: body::BODY_IDLE_TIMEOUT,
        idle_timeout: KEEP_ALIVE,
        max_body_size: body::MAX_BODY as u64,
        // Header names are the control API's own business: `If-Match` has no `_`.
        discard_unsafe_fields: false,
        // Paths are resolved as Unit's controller does (`config::path`), `..` above the
        // root included, and segments decoded one by one so `%2F` stays inside a key.
        verbatim_targets: true,
        ..http::Settings::default()
    }
}

/// The running control API.
pub struct ControlServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Stops accepting, and waits a while for the requests in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::warn!("the control API did not stop in time");
        }
    }
}

/// Serves the control API's requests, and renders the HTTP layer's own refusals as the
/// API's JSON errors.
struct ControlHandler {
    state: ControlState,
}

impl Handler for ControlHandler {
    type Pinned = ();

    async fn serve(&self, request: Request, _: Option<()>) -> (Response, Option<Completion>) {
        let reply = handlers::dispatch(request, &self.state).await;
        (reply.into_response(), None)
    }

    fn refusal(&self, status: u16) -> Response {
        let reply = match status {
            413 => reply::Reply::body_too_large(body::MAX_BODY),
            status => reply::Reply::refusal(status),
        };
        reply.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unit_control_addresses() {
        assert_eq!(
            "unix:/run/w.sock".parse(),
            Ok(ControlAddress::Unix(PathBuf::from("/run/w.sock")))
        );
        assert!(matches!(
            "127.0.0.1:8443".parse(),
            Ok(ControlAddress::Tcp(_))
        ));
        assert!(matches!("[::1]:8443".parse(), Ok(ControlAddress::Tcp(_))));
        assert!("localhost".parse::<ControlAddress>().is_err());
        assert!("unix:".parse::<ControlAddress>().is_err());
    }
}

//! The control API server: binds the control socket (a Unix socket by default, TCP if
//! asked) and serves `handlers` on it.

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

use actix_web::dev::Server;
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use anyhow::Context as _;
use socket2::{Domain, SockAddr, Socket, Type};

pub use handlers::ControlState;

use crate::controller::Controller;
use crate::http::ConnectionStats;
use crate::sockets::remove_stale_socket;

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

/// A bound, listening control socket.
pub enum ControlListener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl ControlListener {
    /// Binds the address; a Unix socket gets `mode` before it starts listening, so no
    /// client can ever connect to it with looser permissions.
    pub fn bind(address: &ControlAddress, mode: u32) -> anyhow::Result<Self> {
        match address {
            ControlAddress::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?).with_context(|| {
                    format!("failed to bind the control socket `{}`", path.display())
                })?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("failed to set the mode of `{}`", path.display()))?;
                socket.listen(1024)?;
                let listener = UnixListener::from(std::os::fd::OwnedFd::from(socket));
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            ControlAddress::Tcp(addr) => {
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

    /// Starts serving the control API; the returned server runs until stopped.
    pub fn serve(
        self,
        controller: Arc<Controller>,
        stats: Arc<ConnectionStats>,
    ) -> anyhow::Result<Server> {
        let state = Data::new(ControlState { controller, stats });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(handlers::dispatch))
        })
        .workers(2)
        .disable_signals()
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(Duration::from_secs(5))
        .shutdown_timeout(5);
        let server = match self {
            Self::Unix { listener, .. } => server.listen_uds(listener)?,
            Self::Tcp(listener) => server.listen(listener)?,
        };
        Ok(server.run())
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

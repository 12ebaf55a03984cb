//! The data plane's sockets: each key of `listeners` is bound when a config containing it
//! is applied and closed when it is removed, without touching the other listeners.
//!
//! A change binds its new addresses before anything is committed (`prepare`), so an
//! address that cannot be bound fails the change; only once the new generation is
//! published do new listeners start accepting and removed ones stop (`activate`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::model::ListenerPlan;
use crate::error::ApplyError;
use crate::http::{self, ConnectionStats, Handler, Settings};
use crate::sockets::remove_stale_socket;

/// A socket bound for a listener that has not started serving yet.
struct Bound {
    socket: Option<Socket>,
    /// The socket file of a `unix:` listener, removed if it never starts.
    unix_path: Option<PathBuf>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(path) = self.unix_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// New sockets for a change, and the set of addresses the change keeps.
pub struct Prepared {
    new: Vec<(String, Bound)>,
    wanted: HashSet<String>,
}

struct Serving {
    shutdown: watch::Sender<bool>,
    unix_path: Option<PathBuf>,
    /// The accept loop; it ends, closing the socket, once `shutdown` is set.
    task: JoinHandle<()>,
}

/// How long a removed listener may take to close its socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Listeners {
    runtime: Handle,
    stats: Arc<ConnectionStats>,
    running: Mutex<HashMap<String, Serving>>,
    /// Set at exit, under `running`'s lock: a change still in flight then starts
    /// nothing, so a drained server never accepts again.
    closed: AtomicBool,
}

impl Listeners {
    /// What the data plane's connections count.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Listeners serve on `runtime`, the data plane's, and count into `stats`.
    pub fn new(runtime: Handle, stats: Arc<ConnectionStats>) -> Self {
        Self {
            runtime,
            stats,
            running: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Binds every listener of `plan` that is not bound yet.
    pub fn prepare(&self, plan: &[ListenerPlan]) -> Result<Prepared, ApplyError> {
        let wanted: HashSet<String> = plan.iter().map(|l| l.address.clone()).collect();
        let running: HashSet<String> = self
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        let mut new = Vec::new();
        for listener in plan.iter().filter(|l| !running.contains(&l.address)) {
            let address = &listener.address;
            let bound = bind(address, listener.backlog).map_err(|e| {
                ApplyError(format!("listener \"{address}\": failed to bind: {e:#}"))
            })?;
            new.push((address.clone(), bound));
        }
        Ok(Prepared { new, wanted })
    }

    /// Starts the new listeners and stops the ones the change removed, returning once
    /// removed sockets are closed, so that a client told the change is done is refused.
    /// A new listener serves with `handler_for(address)`, which must already see the
    /// new generation.
    pub async fn activate<H: Handler>(
        &self,
        prepared: Prepared,
        handler_for: impl Fn(&str) -> H,
        settings: &Arc<ArcSwap<Settings>>,
    ) {
        let removed = self.start(prepared, handler_for, settings);
        for (address, listener) in removed {
            let _ = listener.shutdown.send(true);
            if tokio::time::timeout(CLOSE_TIMEOUT, listener.task)
                .await
                .is_err()
            {
                tracing::warn!(listener = %address, "the listener did not close in time");
            }
            if let Some(path) = &listener.unix_path {
                let _ = std::fs::remove_file(path);
            }
            tracing::info!(listener = %address, "listener closed");
        }
    }

    /// Starts the new listeners; returns the removed ones, still to be stopped.
    fn start<H: Handler>(
        &self,
        prepared: Prepared,
        handler_for: impl Fn(&str) -> H,
        settings: &Arc<ArcSwap<Settings>>,
    ) -> Vec<(String, Serving)> {
        let Ok(mut running) = self.running.lock() else {
            return Vec::new();
        };
        if self.closed.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let removed_addresses: Vec<String> = running
            .keys()
            .filter(|address| !prepared.wanted.contains(*address))
            .cloned()
            .collect();
        let removed = removed_addresses
            .into_iter()
            .filter_map(|address| running.remove(&address).map(|l| (address, l)))
            .collect();
        for (address, mut bound) in prepared.new {
            let unix_path = bound.unix_path.take();
            let Some(socket) = bound.socket.take() else {
                continue;
            };
            let (shutdown, stop) = watch::channel(false);
            let handler = Arc::new(handler_for(&address));
            let settings = Arc::clone(settings);
            let stats = Arc::clone(&self.stats);
            let is_unix = unix_path.is_some();
            let name = address.clone();
            let task = self.runtime.spawn(async move {
                let listener = if is_unix {
                    let std: std::os::unix::net::UnixListener =
                        std::os::fd::OwnedFd::from(socket).into();
                    tokio::net::UnixListener::from_std(std).map(http::Listener::Unix)
                } else {
                    let std: std::net::TcpListener = std::os::fd::OwnedFd::from(socket).into();
                    tokio::net::TcpListener::from_std(std).map(http::Listener::Tcp)
                };
                match listener {
                    Ok(listener) => http::serve(listener, handler, settings, stats, stop).await,
                    Err(e) => tracing::error!(listener = %name, "failed to start serving: {e}"),
                }
            });
            tracing::info!(listener = %address, "listener started");
            running.insert(
                address,
                Serving {
                    shutdown,
                    unix_path,
                    task,
                },
            );
        }
        removed
    }

    /// Stops every listener (at exit), returning once their sockets are closed, so that
    /// a client connecting afterwards is refused. Connections already accepted go on:
    /// each finishes the request in hand and closes.
    pub async fn close_all(&self) {
        let running: Vec<(String, Serving)> = match self.running.lock() {
            Ok(mut running) => {
                self.closed.store(true, Ordering::Relaxed);
                running.drain().collect()
            }
            Err(_) => return,
        };
        for (_, listener) in &running {
            let _ = listener.shutdown.send(true);
        }
        for (address, listener) in running {
            if tokio::time::timeout(CLOSE_TIMEOUT, listener.task)
                .await
                .is_err()
            {
                tracing::warn!(listener = %address, "the listener did not close in time");
            }
            if let Some(path) = listener.unix_path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn bind(address: &str, backlog: i32) -> anyhow::Result<Bound> {
    if let Some(path) = address.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        remove_stale_socket(&path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(&path)?)?;
        // From here the file exists: the guard removes it if anything below fails.
        let bound = Bound {
            socket: Some(socket),
            unix_path: Some(path),
        };
        if let Some(socket) = &bound.socket {
            socket.listen(backlog)?;
            socket.set_nonblocking(true)?;
        }
        return Ok(bound);
    }
    let addr: SocketAddr = match address.strip_prefix("*:") {
        Some(port) => format!("0.0.0.0:{port}").parse()?,
        None => address.parse()?,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(Bound {
        socket: Some(socket),
        unix_path: None,
    })
}

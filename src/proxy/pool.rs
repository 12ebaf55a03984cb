//! One server a `proxy` reaches: its address, and the kept-alive HTTP/1.1 connections
//! to it that are idle, reused before a new one is opened. A connection goes back to
//! the pool only once its exchange is over (the response body read to its end), so a
//! request never queues behind another's body.

use std::sync::{Arc, Mutex, PoisonError};

use hyper::client::conn::http1::{self, SendRequest};
use tokio::net::{TcpStream, UnixStream};

use super::Timeouts;
use super::address::Address;
use super::error::ProxyError;
use super::io::Io;
use super::upload::Upload;

/// Idle connections kept per server; more are closed when their exchange ends. Enough
/// for every concurrent exchange a busy listener has with one server: a smaller bound
/// closes and reopens connections under a steady load (with 32, half the requests of 64
/// concurrent clients opened a connection, and the closed ones piled up in TIME_WAIT,
/// docs/performance.md). The server's own keep-alive timeout closes the surplus once
/// the load drops; such a connection is noticed closed and dropped before reuse.
const IDLE_MAX: usize = 1024;

pub type Sender = SendRequest<Upload>;

#[derive(Debug)]
pub struct Server {
    pub address: Address,
    pub timeouts: Timeouts,
    idle: Mutex<Vec<Sender>>,
}

impl Server {
    pub fn new(address: Address, timeouts: Timeouts) -> Arc<Server> {
        Arc::new(Server {
            address,
            timeouts,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection still open and ready for a request, if there is one.
    pub fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// A connection whose exchange ended; kept if it stays open for another.
    pub fn put_back(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.keep(sender);
            return;
        }
        // hyper has not yet seen the exchange end (or the request body is still
        // going): keep the connection once it is ready, drop it if it closes.
        let server = Arc::clone(self);
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                server.keep(sender);
            }
        });
    }

    fn keep(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_MAX {
            idle.push(sender);
        }
    }

    /// A new connection, within the connect timeout; its I/O runs on a task of its own
    /// until it closes.
    pub async fn connect(&self) -> Result<Sender, ProxyError> {
        let connect = async {
            match &self.address {
                Address::Tcp(address) => {
                    let stream = TcpStream::connect(address).await?;
                    let _ = stream.set_nodelay(true);
                    handshake(Io::new(stream, self.timeouts.send)).await
                }
                Address::Unix(path) => {
                    let stream = UnixStream::connect(path).await?;
                    handshake(Io::new(stream, self.timeouts.send)).await
                }
            }
        };
        match tokio::time::timeout(self.timeouts.connect, connect).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::ConnectTimeout),
        }
    }
}

async fn handshake<T>(io: Io<T>) -> Result<Sender, ProxyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(ProxyError::Upstream)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

//! File bodies: a span of an open file sent as a response body, straight from the
//! kernel (`sendfile(2)`) when the connection is a plain socket, so that serving a large
//! file costs no user-space buffer; otherwise (a stream that transforms its bytes, such
//! as TLS, or a test's in-memory pipe) copied through one bounded buffer.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use tokio::io::Interest;

/// Bytes of a file to send, from `offset`, `len` of them.
#[derive(Debug)]
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

/// The copy buffer of streams that cannot take a file directly (as Unit's, 128 KiB).
pub(super) const COPY_BUFFER: usize = 128 * 1024;

/// One `sendfile(2)` call moves at most this much, so that one connection does not
/// hold its worker thread for a whole large file.
const SENDFILE_CHUNK: usize = 1 << 20;

/// A connection's write half that may send file bytes without copying them.
pub trait SendFile {
    /// Sends up to `len` bytes of `file` from `offset`; `Ready(None)` when this stream
    /// cannot (the writer then copies), `Ready(Some(Ok(0)))` when the file ended early.
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &File,
        _offset: u64,
        _len: u64,
    ) -> Poll<Option<io::Result<usize>>> {
        Poll::Ready(None)
    }
}

/// TLS encrypts in user space (no kernel TLS here): file bytes go through the copy.
impl<S> SendFile for tokio::io::WriteHalf<tokio_rustls::server::TlsStream<S>> {}

impl SendFile for tokio::net::tcp::WriteHalf<'_> {
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Poll<Option<io::Result<usize>>> {
        let stream: &tokio::net::TcpStream = self.as_ref();
        poll_send_file_on(stream, cx, file, offset, len)
    }
}

impl SendFile for tokio::net::unix::WriteHalf<'_> {
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Poll<Option<io::Result<usize>>> {
        let stream: &tokio::net::UnixStream = self.as_ref();
        poll_send_file_on(stream, cx, file, offset, len)
    }
}

/// What `sendfile` needs of a tokio socket: its descriptor and its write readiness.
trait ReadySocket: AsRawFd {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write_io(&self, f: impl FnOnce() -> io::Result<usize>) -> io::Result<usize>;
}

impl ReadySocket for tokio::net::TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_write_ready(self, cx)
    }

    fn try_write_io(&self, f: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, f)
    }
}

impl ReadySocket for tokio::net::UnixStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::UnixStream::poll_write_ready(self, cx)
    }

    fn try_write_io(&self, f: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, f)
    }
}

/// Sends file bytes once `stream` is writable, retrying when readiness was stale.
fn poll_send_file_on(
    stream: &impl ReadySocket,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    len: u64,
) -> Poll<Option<io::Result<usize>>> {
    loop {
        if let Err(e) = std::task::ready!(stream.poll_write_ready(cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        match stream.try_write_io(|| send_file(stream.as_raw_fd(), file, offset, len)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(Some(done)),
        }
    }
}

/// In-memory pipes (tests) copy.
impl SendFile for tokio::io::DuplexStream {}

/// One `sendfile(2)` from `file` at `offset` to the non-blocking socket `socket`.
fn send_file(socket: i32, file: &File, offset: u64, len: u64) -> io::Result<usize> {
    let count = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(SENDFILE_CHUNK);
    let mut at = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    // SAFETY: both descriptors are open for the duration of the call (borrowed from
    // live objects), and `at` is a valid, exclusively borrowed offset.
    #[allow(unsafe_code)]
    let n = unsafe { libc::sendfile(socket, file.as_raw_fd(), &raw mut at, count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

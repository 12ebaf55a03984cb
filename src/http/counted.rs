//! A connection half that counts the bytes it moves, for the metrics' bytes received
//! and sent. It wraps the decrypted stream, so the counts are HTTP bytes (heads and
//! bodies as framed on the wire, without TLS records), counted per call on the
//! thread's own slot of a shared `Counter`.

use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::file::SendFile;
use crate::counter::Counter;

/// `inner`, adding to `bytes` what goes through it.
pub(super) struct Counted<'a, S> {
    inner: S,
    bytes: &'a Counter,
}

impl<'a, S> Counted<'a, S> {
    pub(super) fn new(inner: S, bytes: &'a Counter) -> Self {
        Self { inner, bytes }
    }

    fn count(&self, n: usize) {
        if n > 0 {
            self.bytes.add(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.count(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.count(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.count(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: SendFile> SendFile for Counted<'_, S> {
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Poll<Option<io::Result<usize>>> {
        let sent = ready!(self.inner.poll_send_file(cx, file, offset, len));
        if let Some(Ok(n)) = sent {
            self.count(n);
        }
        Poll::Ready(sent)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_what_is_read_and_written_and_nothing_else() {
        let (client, server) = tokio::io::duplex(64);
        let (received, sent) = (Counter::default(), Counter::default());
        let (read_half, write_half) = tokio::io::split(server);
        let mut reader = Counted::new(read_half, &received);
        let mut writer = Counted::new(write_half, &sent);
        let (mut client_read, mut client_write) = tokio::io::split(client);

        client_write
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("client writes");
        let mut head = [0u8; 18];
        reader.read_exact(&mut head).await.expect("server reads");
        writer
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nhi")
            .await
            .expect("server writes");
        writer.flush().await.expect("server flushes");
        let mut answer = [0u8; 21];
        client_read
            .read_exact(&mut answer)
            .await
            .expect("client reads");

        assert_eq!(received.get(), 18);
        assert_eq!(sent.get(), 21);
    }
}

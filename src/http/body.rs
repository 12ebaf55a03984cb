//! Request bodies as the handler reads them (`RequestBody`, fed through a bounded channel
//! by the connection; `decode` takes the bytes out of the read buffer), read ahead
//! whole when small (`read_ahead`), and what a client whose body fails is answered.

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Why a request body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body grew past the listener's `max_body_size`.
    #[error("the request body is larger than the limit")]
    TooLarge,
    /// The client sent nothing for longer than `body_read_timeout`.
    #[error("the client sent no request body data in time")]
    Timeout,
    /// The connection ended (or stopped serving this request) before the body did.
    #[error("the connection closed before the request body ended")]
    Closed,
    /// The chunked framing of the body is invalid.
    #[error("the request body's chunked framing is malformed")]
    Malformed,
}

impl BodyError {
    /// The status the client is answered with; the connection then closes. (A client
    /// that closed is told nothing; 400 is what a log would say of it.)
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 413,
            Self::Timeout => 408,
            Self::Malformed | Self::Closed => 400,
        }
    }
}

/// The largest request body read whole before an app instance is taken for it (capped
/// by `max_body_size`, over which a body is refused anyway): a client sending it slowly
/// then holds a connection, not an instance. Larger bodies stream to the guest as it
/// reads them, within `body_total_timeout`.
pub const READ_AHEAD: u64 = 1024 * 1024;

/// What the connection sends down a body's channel.
pub(super) enum Piece {
    Data(Bytes),
    End,
    Failed(BodyError),
}

/// A request body, read piece by piece as the client sends it.
///
/// Reading is lazy: nothing is asked of a client that sent `Expect: 100-continue` until
/// the first call to [`chunk`](Self::chunk).
pub struct RequestBody {
    length: Option<u64>,
    /// Pieces read ahead (`read_ahead`), handed out before the state's.
    ahead: VecDeque<Bytes>,
    state: State,
}

enum State {
    Done,
    Full(Bytes),
    Failed(BodyError),
    Stream {
        pieces: mpsc::Receiver<Piece>,
        /// Tells the connection the body is wanted (it then sends `100 Continue`).
        wanted: Option<oneshot::Sender<()>>,
    },
}

impl RequestBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Self {
            length: Some(0),
            ahead: VecDeque::new(),
            state: State::Done,
        }
    }

    /// A body whose bytes are all at hand (for tests and internal requests).
    pub fn from_bytes(bytes: Bytes) -> Self {
        let length = Some(bytes.len() as u64);
        let state = if bytes.is_empty() {
            State::Done
        } else {
            State::Full(bytes)
        };
        Self {
            length,
            ahead: VecDeque::new(),
            state,
        }
    }

    /// A body the connection feeds through `pieces`; `length` is `None` when chunked.
    pub(super) fn streamed(
        length: Option<u64>,
        pieces: mpsc::Receiver<Piece>,
        wanted: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            length,
            ahead: VecDeque::new(),
            state: State::Stream { pieces, wanted },
        }
    }

    /// The declared length: `Some(0)` when the request has no body, `None` when it is
    /// chunked (its length is known only at its end).
    pub fn content_length(&self) -> Option<u64> {
        self.length
    }

    /// The body arrives with chunked framing, so its length is not known up front.
    pub fn is_chunked(&self) -> bool {
        self.length.is_none()
    }

    /// The request declared that it has no body at all.
    pub fn is_known_empty(&self) -> bool {
        self.length == Some(0)
    }

    /// Reads the body ahead while it stays within `bound` bytes: `Ok(true)` when it
    /// ended within them (it is then held whole, and the client no longer waited for),
    /// `Ok(false)` when it is longer (what was read is handed out first, the rest
    /// streams). A body declared longer than `bound` is not read at all. An error is the
    /// body's (`chunk` returns it again).
    pub async fn read_ahead(&mut self, bound: u64) -> Result<bool, BodyError> {
        if !matches!(self.state, State::Stream { .. }) {
            return Ok(true);
        }
        if self.length.is_some_and(|n| n > bound) {
            return Ok(false);
        }
        let mut read = 0u64;
        while read <= bound {
            match self.next().await? {
                Some(piece) => {
                    read += piece.len() as u64;
                    self.ahead.push_back(piece);
                }
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The error the body failed with, once it has.
    pub fn failure(&self) -> Option<BodyError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The next piece of the body; `Ok(None)` at its end. After an error, every later
    /// call returns the same error. Cancel-safe.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// `chunk` as a poll, for a reader that is itself polled (a proxied request's body).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        if let Some(piece) = self.ahead.pop_front() {
            return Poll::Ready(Ok(Some(piece)));
        }
        self.poll_next(cx)
    }

    /// The next piece from the state, past what was read ahead.
    async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        let received = match &mut self.state {
            State::Done => return Poll::Ready(Ok(None)),
            State::Failed(e) => return Poll::Ready(Err(*e)),
            State::Full(_) => {
                return Poll::Ready(match std::mem::replace(&mut self.state, State::Done) {
                    State::Full(bytes) => Ok(Some(bytes)),
                    _ => Ok(None),
                });
            }
            State::Stream { pieces, wanted } => {
                if let Some(wanted) = wanted.take() {
                    // The connection may have stopped waiting; then the pieces tell.
                    let _ = wanted.send(());
                }
                match pieces.poll_recv(cx) {
                    Poll::Ready(received) => received,
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        Poll::Ready(match received {
            Some(Piece::Data(bytes)) => Ok(Some(bytes)),
            Some(Piece::End) => {
                self.state = State::Done;
                Ok(None)
            }
            Some(Piece::Failed(e)) => {
                self.state = State::Failed(e);
                Err(e)
            }
            None => {
                self.state = State::Failed(BodyError::Closed);
                Err(BodyError::Closed)
            }
        })
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done => "done",
            State::Full(_) => "buffered",
            State::Failed(_) => "failed",
            State::Stream { .. } => "streaming",
        };
        f.debug_struct("RequestBody")
            .field("length", &self.length)
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_body_reports_ends_and_errors() {
        let (tx, rx) = mpsc::channel(4);
        let (wanted_tx, mut wanted_rx) = oneshot::channel();
        let mut body = RequestBody::streamed(None, rx, Some(wanted_tx));
        assert!(wanted_rx.try_recv().is_err());
        tx.send(Piece::Data(Bytes::from_static(b"ab")))
            .await
            .expect("open");
        assert_eq!(body.chunk().await, Ok(Some(Bytes::from_static(b"ab"))));
        assert!(wanted_rx.try_recv().is_ok());
        tx.send(Piece::Failed(BodyError::Timeout))
            .await
            .expect("open");
        assert_eq!(body.chunk().await, Err(BodyError::Timeout));
        assert_eq!(body.chunk().await, Err(BodyError::Timeout));

        let (tx, rx) = mpsc::channel(4);
        let mut body = RequestBody::streamed(Some(3), rx, None);
        drop(tx);
        assert_eq!(body.chunk().await, Err(BodyError::Closed));

        let mut body = RequestBody::from_bytes(Bytes::from_static(b"xyz"));
        assert_eq!(body.content_length(), Some(3));
        assert_eq!(body.chunk().await, Ok(Some(Bytes::from_static(b"xyz"))));
        assert_eq!(body.chunk().await, Ok(None));
        assert!(RequestBody::empty().is_known_empty());
    }

    /// A streamed body of `pieces`, fed by a task as it is read.
    fn fed(length: Option<u64>, pieces: &[&'static [u8]], end: Piece) -> RequestBody {
        let (tx, rx) = mpsc::channel(1);
        let pieces: Vec<_> = pieces.iter().map(|p| Bytes::from_static(p)).collect();
        tokio::spawn(async move {
            for piece in pieces {
                let _ = tx.send(Piece::Data(piece)).await;
            }
            let _ = tx.send(end).await;
        });
        RequestBody::streamed(length, rx, None)
    }

    async fn rest(body: &mut RequestBody) -> Result<Vec<u8>, BodyError> {
        let mut all = Vec::new();
        while let Some(piece) = body.chunk().await? {
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn bodies_within_the_bound_are_read_ahead_whole() {
        let mut body = fed(None, &[b"ab", b"cd"], Piece::End);
        assert_eq!(body.read_ahead(4).await, Ok(true));
        assert_eq!(rest(&mut body).await.as_deref(), Ok(&b"abcd"[..]));

        // Longer than the bound: what was read comes first, then the rest.
        let mut body = fed(None, &[b"ab", b"cd", b"ef"], Piece::End);
        assert_eq!(body.read_ahead(3).await, Ok(false));
        assert_eq!(rest(&mut body).await.as_deref(), Ok(&b"abcdef"[..]));

        // Declared longer: nothing is read ahead.
        let mut body = fed(Some(6), &[b"abcdef"], Piece::End);
        assert_eq!(body.read_ahead(3).await, Ok(false));
        assert_eq!(rest(&mut body).await.as_deref(), Ok(&b"abcdef"[..]));

        let mut body = fed(None, &[b"ab"], Piece::Failed(BodyError::Malformed));
        assert_eq!(body.read_ahead(10).await, Err(BodyError::Malformed));
        assert_eq!(body.chunk().await, Ok(Some(Bytes::from_static(b"ab"))));
        assert_eq!(body.chunk().await, Err(BodyError::Malformed));
        assert_eq!(BodyError::Malformed.status(), 400);
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::Timeout.status(), 408);
    }
}

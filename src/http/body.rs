//! Request bodies: the handler's side (`RequestBody`, fed through a bounded channel by the
//! connection) and the connection's side (`BodyDecoder`, which takes the body's bytes out
//! of the connection's read buffer according to its framing).

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
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
        Self { length, state }
    }

    /// A body the connection feeds through `pieces`; `length` is `None` when chunked.
    pub(super) fn streamed(
        length: Option<u64>,
        pieces: mpsc::Receiver<Piece>,
        wanted: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            length,
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

    /// The next piece of the body; `Ok(None)` at its end. After an error, every later
    /// call returns the same error. Cancel-safe.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        let received = match &mut self.state {
            State::Done => return Ok(None),
            State::Failed(e) => return Err(*e),
            State::Full(_) => {
                return match std::mem::replace(&mut self.state, State::Done) {
                    State::Full(bytes) => Ok(Some(bytes)),
                    _ => Ok(None),
                };
            }
            State::Stream { pieces, wanted } => {
                if let Some(wanted) = wanted.take() {
                    // The connection may have stopped waiting; then the pieces tell.
                    let _ = wanted.send(());
                }
                pieces.recv().await
            }
        };
        match received {
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
        }
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

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 64 * 1024;

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    /// The buffer holds no further body bytes; read more.
    NeedMore,
    /// The body is complete; the buffer now starts after it.
    End,
}

/// Takes a request body out of the connection's read buffer, by its framing.
#[derive(Debug)]
pub(super) struct BodyDecoder {
    framing: Framing,
    /// The largest chunked body accepted.
    limit: u64,
    /// Chunked data bytes seen so far.
    seen: u64,
}

#[derive(Debug)]
enum Framing {
    Done,
    Failed(BodyError),
    Length { remaining: u64 },
    Chunked(Chunk),
}

#[derive(Debug)]
enum Chunk {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers { seen: usize },
}

impl BodyDecoder {
    pub(super) fn none() -> Self {
        Self {
            framing: Framing::Done,
            limit: 0,
            seen: 0,
        }
    }

    pub(super) fn length(length: u64) -> Self {
        let framing = if length == 0 {
            Framing::Done
        } else {
            Framing::Length { remaining: length }
        };
        Self {
            framing,
            limit: length,
            seen: 0,
        }
    }

    pub(super) fn chunked(limit: u64) -> Self {
        Self {
            framing: Framing::Chunked(Chunk::Size),
            limit,
            seen: 0,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    /// Marks the body as unreadable (for errors met outside the decoder, such as a
    /// stalled client); every later `decode` returns `error`.
    pub(super) fn fail(&mut self, error: BodyError) {
        self.framing = Framing::Failed(error);
    }

    /// Body bytes still to come, when the framing tells.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Done => Some(0),
            Framing::Length { remaining } => Some(remaining),
            Framing::Chunked(_) | Framing::Failed(_) => None,
        }
    }

    /// Takes the next piece of at most `max_piece` bytes out of `buf`.
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_piece: usize,
    ) -> Result<Decoded, BodyError> {
        let decoded = self.step(buf, max_piece);
        if let Err(e) = decoded {
            self.fail(e);
        }
        decoded
    }

    fn step(&mut self, buf: &mut BytesMut, max_piece: usize) -> Result<Decoded, BodyError> {
        loop {
            match &mut self.framing {
                Framing::Done => return Ok(Decoded::End),
                Framing::Failed(e) => return Err(*e),
                Framing::Length { remaining } => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = take_len(*remaining, buf.len(), max_piece);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.framing = Framing::Done;
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        self.framing = Framing::Chunked(Chunk::Trailers { seen: 0 });
                    } else {
                        self.seen = self.seen.checked_add(size).ok_or(BodyError::TooLarge)?;
                        if self.seen > self.limit {
                            return Err(BodyError::TooLarge);
                        }
                        self.framing = Framing::Chunked(Chunk::Data { remaining: size });
                    }
                }
                Framing::Chunked(Chunk::Data { remaining }) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = take_len(*remaining, buf.len(), max_piece);
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.framing = Framing::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    match buf.first() {
                        None => return Ok(Decoded::NeedMore),
                        Some(b'\r') => {}
                        Some(_) => return Err(BodyError::Malformed),
                    }
                    match buf.get(1) {
                        None => return Ok(Decoded::NeedMore),
                        Some(b'\n') => {}
                        Some(_) => return Err(BodyError::Malformed),
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers { seen }) => {
                    let room = MAX_TRAILERS.saturating_sub(*seen).max(2);
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *seen += line.len() + 2;
                    if line.is_empty() {
                        self.framing = Framing::Done;
                        return Ok(Decoded::End);
                    }
                    // Trailer fields are read past, not passed on; they must still be
                    // sane field lines.
                    if line.iter().any(|&b| b == b'\r' || b == 0) || !line.contains(&b':') {
                        return Err(BodyError::Malformed);
                    }
                }
            }
        }
    }
}

fn take_len(remaining: u64, available: usize, max_piece: usize) -> usize {
    usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(available)
        .min(max_piece)
}

/// Takes a CRLF-terminated line (without its CRLF) off the front of `buf`; `None` when
/// the buffer does not yet hold a whole one.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BodyError> {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) => {
            if at == 0 || window[at - 1] != b'\r' {
                return Err(BodyError::Malformed);
            }
            let mut line = buf.split_to(at + 1);
            line.truncate(at - 1);
            Ok(Some(line))
        }
        None if buf.len() >= max => Err(BodyError::Malformed),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1); extensions are read past.
fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Malformed);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(BodyError::TooLarge)?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => Ok(size),
        Some(b';') if rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => Ok(size),
        Some(_) => Err(BodyError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut BodyDecoder,
        input: &[u8],
        max_piece: usize,
    ) -> Result<(Vec<u8>, BytesMut), BodyError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf, max_piece)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok((out, buf)),
                Decoded::NeedMore => return Err(BodyError::Closed),
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let mut d = BodyDecoder::chunked(1000);
        let input =
            b"5;name=value\r\nhello\r\n6 ; x=\"y\"\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        let (body, rest) = decode_all(&mut d, input, 3).expect("decodes");
        assert_eq!(body, b"hello world");
        assert_eq!(&rest[..], b"GET /next");
        assert!(d.is_done());
    }

    #[test]
    fn chunked_byte_by_byte() {
        let input = b"A\r\n0123456789\r\n0\r\n\r\n";
        let mut d = BodyDecoder::chunked(1000);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut ended = false;
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf, 64).expect("decodes") {
                    Decoded::Data(p) => out.extend_from_slice(&p),
                    Decoded::NeedMore => break,
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        assert!(ended);
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let mut d = BodyDecoder::chunked(u64::MAX);
            assert!(
                decode_all(&mut d, bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut d = BodyDecoder::chunked(4);
        assert_eq!(
            decode_all(&mut d, b"5\r\nhello\r\n0\r\n\r\n", 64),
            Err(BodyError::TooLarge)
        );
        let mut long = vec![b'1'; MAX_CHUNK_LINE + 10];
        long[0] = b'1';
        long[1] = b';';
        let mut d = BodyDecoder::chunked(u64::MAX);
        assert_eq!(decode_all(&mut d, &long, 64), Err(BodyError::Malformed));
    }

    #[test]
    fn length_leaves_the_rest() {
        let mut d = BodyDecoder::length(5);
        let (body, rest) = decode_all(&mut d, b"helloGET", 2).expect("decodes");
        assert_eq!(body, b"hello");
        assert_eq!(&rest[..], b"GET");
        assert_eq!(d.remaining(), Some(0));
    }

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
}

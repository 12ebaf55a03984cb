//! Request body decoding: takes a body's bytes out of the connection's read buffer by
//! its framing (a `Content-Length`, or chunked with extensions and trailers read past),
//! as a pure state machine over bytes; the connection feeds it and reads more.

use bytes::{Buf, Bytes, BytesMut};

use super::body::BodyError;
use super::head::BodyFraming;

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
    state: State,
    /// The largest chunked body accepted.
    limit: u64,
    /// Chunked data bytes seen so far.
    seen: u64,
}

#[derive(Debug)]
enum State {
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
    /// The decoder for a body framed as `framing`; a chunked one may hold at most
    /// `limit` bytes.
    pub(super) fn new(framing: BodyFraming, limit: u64) -> Self {
        match framing {
            BodyFraming::None => Self::none(),
            BodyFraming::Length(n) => Self::length(n),
            BodyFraming::Chunked => Self::chunked(limit),
        }
    }

    pub(super) fn none() -> Self {
        Self {
            state: State::Done,
            limit: 0,
            seen: 0,
        }
    }

    pub(super) fn length(length: u64) -> Self {
        let state = if length == 0 {
            State::Done
        } else {
            State::Length { remaining: length }
        };
        Self {
            state,
            limit: length,
            seen: 0,
        }
    }

    pub(super) fn chunked(limit: u64) -> Self {
        Self {
            state: State::Chunked(Chunk::Size),
            limit,
            seen: 0,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Marks the body as unreadable (for errors met outside the decoder, such as a
    /// stalled client); every later `decode` returns `error`.
    pub(super) fn fail(&mut self, error: BodyError) {
        self.state = State::Failed(error);
    }

    /// Body bytes still to come, when the framing tells.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Done => Some(0),
            State::Length { remaining } => Some(remaining),
            State::Chunked(_) | State::Failed(_) => None,
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
            match &mut self.state {
                State::Done => return Ok(Decoded::End),
                State::Failed(e) => return Err(*e),
                State::Length { remaining } => {
                    let Some(data) = take_data(buf, remaining, max_piece) else {
                        return Ok(Decoded::NeedMore);
                    };
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Decoded::Data(data));
                }
                State::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        self.state = State::Chunked(Chunk::Trailers { seen: 0 });
                    } else {
                        self.seen = self.seen.checked_add(size).ok_or(BodyError::TooLarge)?;
                        if self.seen > self.limit {
                            return Err(BodyError::TooLarge);
                        }
                        self.state = State::Chunked(Chunk::Data { remaining: size });
                    }
                }
                State::Chunked(Chunk::Data { remaining }) => {
                    let Some(data) = take_data(buf, remaining, max_piece) else {
                        return Ok(Decoded::NeedMore);
                    };
                    if *remaining == 0 {
                        self.state = State::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Decoded::Data(data));
                }
                State::Chunked(Chunk::DataEnd) => {
                    if !take_crlf(buf)? {
                        return Ok(Decoded::NeedMore);
                    }
                    self.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers { seen }) => {
                    let room = MAX_TRAILERS.saturating_sub(*seen).max(2);
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *seen += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
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

/// Takes up to `max_piece` of the `remaining` data bytes off the front of `buf`; `None`
/// when it holds none.
fn take_data(buf: &mut BytesMut, remaining: &mut u64, max_piece: usize) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let take = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(buf.len())
        .min(max_piece);
    *remaining -= take as u64;
    Some(buf.split_to(take).freeze())
}

/// Takes the CRLF that ends a chunk's data off the front of `buf`; `false` while it has
/// not all arrived.
fn take_crlf(buf: &mut BytesMut) -> Result<bool, BodyError> {
    for (at, want) in [(0, b'\r'), (1, b'\n')] {
        match buf.get(at) {
            None => return Ok(false),
            Some(&b) if b == want => {}
            Some(_) => return Err(BodyError::Malformed),
        }
    }
    buf.advance(2);
    Ok(true)
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
}

/// Property tests: any split of a valid chunked body decodes to the same bytes, and a
/// corrupted one never panics and ends, if in an error, in a 4xx.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// A chunked encoding of `chunks`, with an extension on some sizes and optional
    /// trailers, followed by `after` (the next request's bytes).
    fn encode(chunks: &[Vec<u8>], extension: bool, trailers: bool, after: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
            if extension && i % 2 == 0 {
                out.extend_from_slice(b";name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailers {
            out.extend_from_slice(b"X-Sum: 1\r\nY: 2\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(after);
        out
    }

    /// What decoding `input`, fed in the pieces `splits` cut it into, gives: the body and
    /// what is left after it, or the error (an input that ends early is `Closed`).
    fn feed(
        input: &[u8],
        splits: &[usize],
        max_piece: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = BodyDecoder::chunked(1 << 20);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        let mut cuts = splits.iter().copied().chain(std::iter::once(input.len()));
        loop {
            match decoder.decode(&mut buf, max_piece)? {
                Decoded::Data(piece) => body.extend_from_slice(&piece),
                Decoded::End => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&input[fed..]);
                    return Ok((body, rest));
                }
                Decoded::NeedMore => {
                    let Some(cut) = cuts.next() else {
                        return Err(BodyError::Closed);
                    };
                    let cut = cut.clamp(fed, input.len());
                    buf.extend_from_slice(&input[fed..cut]);
                    fed = cut;
                }
            }
        }
    }

    fn chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..5)
    }

    proptest! {
        // Modest counts, so the unit tests stay fast; no regression files.
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_split_decodes_the_same(
            chunks in chunks(),
            extension: bool,
            trailers: bool,
            max_piece in 1usize..16,
        ) {
            let after = b"GET /next";
            let input = encode(&chunks, extension, trailers, after);
            let want = (chunks.concat(), after.to_vec());
            prop_assert_eq!(feed(&input, &[], 1 << 16), Ok(want.clone()));
            for at in 0..=input.len() {
                prop_assert_eq!(feed(&input, &[at], max_piece), Ok(want.clone()), "split at {}", at);
            }
            // And byte by byte.
            let every: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(feed(&input, &every, max_piece), Ok(want));
        }

        #[test]
        fn corruptions_never_panic_and_fail_as_4xx(
            chunks in chunks(),
            trailers: bool,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
            split in any::<prop::sample::Index>(),
        ) {
            let mut input = encode(&chunks, true, trailers, b"");
            for (at, byte, kind) in edits {
                let at = at.index(input.len() + 1);
                match kind {
                    0 if at < input.len() => input[at] = byte,
                    1 => input.insert(at, byte),
                    _ => input.truncate(at),
                }
            }
            let cut = split.index(input.len() + 1);
            if let Err(e) = feed(&input, &[cut], 7) {
                prop_assert!((400..500).contains(&e.status()), "{e:?}");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = feed(&input, &[input.len() / 2], 5) {
                prop_assert!((400..500).contains(&e.status()), "{e:?}");
            }
        }
    }
}

//! A request body as a `wasm` guest consumes it: streamed from the connection when its
//! length is known, else gathered first, as the ABI announces the whole length up front.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::http::{BodyError, RequestBody};

/// A request body as the guest consumes it.
pub enum BodySource<'b> {
    Stream(&'b mut RequestBody),
    Buffered { pieces: VecDeque<Bytes>, len: u64 },
}

impl BodySource<'_> {
    /// The body read to its end (bounded by the listener's `max_body_size`).
    pub(super) async fn gather(body: &mut RequestBody) -> Result<BodySource<'static>, BodyError> {
        let mut pieces = VecDeque::new();
        let mut len = 0;
        while let Some(piece) = body.chunk().await? {
            len += piece.len() as u64;
            pieces.push_back(piece);
        }
        Ok(BodySource::Buffered { pieces, len })
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Self::Stream(body) => body.content_length().unwrap_or(0),
            Self::Buffered { len, .. } => *len,
        }
    }

    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            Self::Stream(body) => body.chunk().await,
            Self::Buffered { pieces, .. } => Ok(pieces.pop_front()),
        }
    }
}

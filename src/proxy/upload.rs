//! The client's request body as hyper's client reads it: polled piece by piece, so the
//! upstream taking bytes is what reads them from the client (back-pressure).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::http::BodyError;

/// The client's body as hyper sends it, read only as the upstream takes it.
pub struct Upload {
    body: crate::http::RequestBody,
    length: Option<u64>,
}

impl Upload {
    pub fn new(body: crate::http::RequestBody) -> Self {
        let length = body.content_length();
        Self { body, length }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.body.poll_chunk(cx) {
            Poll::Ready(Ok(Some(piece))) => Poll::Ready(Some(Ok(Frame::data(piece)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.length == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

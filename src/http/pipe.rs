//! A response's way from its producer (a guest) to the connection that sends it: the
//! head, then body pieces, with room for a few pieces in between so that a slow client
//! slows the producer, then the end or an abort.
//!
//! It does what a oneshot for the head and a bounded channel for the body would, with one
//! shared state instead of three allocations, and the producer can keep that state from
//! one request to the next (`Pipe::recycle`): most requests then allocate nothing here.
//! A producer that answers before anyone reads (a guest run inline on the connection's
//! task) leaves its whole response in the pipe, where the connection finds it at once.
//! The box the connection's writer polls the body through (`PipeReader::into_body`) is
//! kept for a next body once the writer is done with it, for the same reason.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{BodyStream, ResponseBody, StreamAbort};

/// Body pieces a pipe holds before the producer has to wait for the client.
pub const PIPE_PIECES: usize = 4;

/// Most empty body boxes a thread keeps.
const SPARE_BOXES: usize = 16;

thread_local! {
    /// Boxes of bodies the writer is done with, empty, for the next bodies made on this
    /// thread. Kept per thread rather than per pipe: a pipe whose last reader is still
    /// being written out is replaced by a fresh one, and its box would go with it.
    // The boxes are what is kept: a body is sent in one.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<BoxedReader>>> = const { RefCell::new(Vec::new()) };
}

/// The status line and fields a producer sends first.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(Bytes, Bytes)>,
}

/// The producer's side.
#[derive(Clone)]
pub struct Pipe(Arc<Mutex<State>>);

/// The consumer's side: the connection reading the head and the body. Dropping it tells
/// the producer that the client is gone.
pub struct PipeReader(Arc<Mutex<State>>);

/// The reader is gone: nobody will send what the producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client went away")]
pub struct ReaderGone;

/// Why a piece was not taken.
#[derive(Debug)]
pub enum PushError {
    Full(Bytes),
    Gone,
}

#[derive(Default)]
struct State {
    head: Option<ResponseHead>,
    pieces: VecDeque<Bytes>,
    end: Option<End>,
    reader_gone: bool,
    /// The reader waiting for the head or a piece.
    reader: Option<Waker>,
    /// The producer waiting for room.
    writer: Option<Waker>,
}

#[derive(Debug)]
enum End {
    Complete,
    Aborted(StreamAbort),
}

impl Pipe {
    /// A fresh pipe and its reader.
    pub fn new() -> (Self, PipeReader) {
        let shared = Arc::new(Mutex::new(State::default()));
        (Self(Arc::clone(&shared)), PipeReader(shared))
    }

    /// A pipe for the next response, reusing this one's state if nothing else holds it
    /// (the last response's reader is gone), or else a fresh one.
    pub fn recycle(mut self) -> (Self, PipeReader) {
        match Arc::get_mut(&mut self.0) {
            Some(state) => {
                let state = state
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // Field by field, to keep the queue's allocation.
                state.head = None;
                state.pieces.clear();
                state.end = None;
                state.reader_gone = false;
                state.reader = None;
                state.writer = None;
                let reader = PipeReader(Arc::clone(&self.0));
                (self, reader)
            }
            None => Self::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0)
    }

    pub fn send_head(&self, head: ResponseHead) {
        let mut state = self.state();
        state.head = Some(head);
        state.wake_reader();
    }

    /// Adds a piece if there is room.
    pub fn try_push(&self, piece: Bytes) -> Result<(), PushError> {
        let mut state = self.state();
        if state.reader_gone {
            return Err(PushError::Gone);
        }
        if state.pieces.len() >= PIPE_PIECES {
            return Err(PushError::Full(piece));
        }
        state.pieces.push_back(piece);
        state.wake_reader();
        Ok(())
    }

    /// Adds a piece, waiting for room.
    pub async fn push(&self, piece: Bytes) -> Result<(), ReaderGone> {
        let mut piece = Some(piece);
        std::future::poll_fn(|cx| {
            let mut state = self.state();
            if state.reader_gone {
                return Poll::Ready(Err(ReaderGone));
            }
            if state.pieces.len() >= PIPE_PIECES {
                state.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(piece) = piece.take() {
                state.pieces.push_back(piece);
            }
            state.wake_reader();
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// The body is complete (once the reader has taken the pieces left).
    pub fn end(&self) {
        self.finish(End::Complete);
    }

    /// The response stops here: the client sees a truncated body, or, with no head sent,
    /// the connection's side answers with an error.
    pub fn abort(&self, why: String) {
        self.finish(End::Aborted(StreamAbort(why)));
    }

    /// The first end wins; later ones change nothing.
    fn finish(&self, end: End) {
        let mut state = self.state();
        if state.end.is_none() {
            state.end = Some(end);
            state.wake_reader();
        }
    }
}

impl PipeReader {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0)
    }

    /// The head, once sent; `Ready(None)` if the response ended without one.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseHead>> {
        let mut state = self.state();
        if let Some(head) = state.head.take() {
            return Poll::Ready(Some(head));
        }
        if state.end.is_some() {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The body, as the connection's writer polls it.
    pub fn into_body(self) -> ResponseBody {
        let spare = SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten();
        let boxed = match spare {
            Some(mut boxed) => {
                boxed.0 = Some(self);
                boxed
            }
            None => Box::new(BoxedReader(Some(self))),
        };
        ResponseBody::Stream(boxed)
    }

    /// The head if it has been sent, without waiting.
    pub fn take_head(&mut self) -> Option<ResponseHead> {
        self.state().head.take()
    }

    /// The next piece; `Ready(None)` at the end of a complete body, an error if the
    /// producer aborted (after the pieces it sent before).
    pub fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        let mut state = self.state();
        if let Some(piece) = state.pieces.pop_front() {
            if let Some(writer) = state.writer.take() {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(piece)));
        }
        match &state.end {
            Some(End::Complete) => Poll::Ready(None),
            Some(End::Aborted(why)) => Poll::Ready(Some(Err(why.clone()))),
            None => {
                state.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A reader in a box that is kept, empty, between bodies.
struct BoxedReader(Option<PipeReader>);

impl BodyStream for BoxedReader {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        match &mut self.0 {
            Some(reader) => reader.poll_piece(cx),
            None => Poll::Ready(None),
        }
    }

    fn recycle(mut self: Box<Self>) {
        // The reader goes now: the pipe is free for its next response only then.
        drop(self.0.take());
        // (Off the thread's lifetime, the box is just dropped.)
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BOXES {
                spare.push(self);
            }
        });
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut state = self.state();
        state.reader_gone = true;
        state.reader = None;
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
    }
}

impl State {
    fn wake_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

/// A panic while holding the lock leaves the state consistent (every change is a single
/// assignment), so a poisoned lock is used as it is.
fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn head(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            headers: Vec::new(),
        }
    }

    async fn next(reader: &mut PipeReader) -> Option<Result<Bytes, StreamAbort>> {
        poll_fn(|cx| reader.poll_piece(cx)).await
    }

    #[tokio::test]
    async fn a_response_left_whole_in_the_pipe_reads_back_in_order() {
        let (pipe, mut reader) = Pipe::new();
        pipe.send_head(head(201));
        pipe.try_push(Bytes::from_static(b"a")).expect("room");
        pipe.try_push(Bytes::from_static(b"b")).expect("room");
        pipe.end();
        assert_eq!(reader.take_head().map(|h| h.status), Some(201));
        assert_eq!(
            next(&mut reader).await.map(Result::ok),
            Some(Some("a".into()))
        );
        assert_eq!(
            next(&mut reader).await.map(Result::ok),
            Some(Some("b".into()))
        );
        assert!(next(&mut reader).await.is_none());
    }

    #[tokio::test]
    async fn a_full_pipe_makes_the_producer_wait_for_the_reader() {
        let (pipe, mut reader) = Pipe::new();
        for _ in 0..PIPE_PIECES {
            pipe.try_push(Bytes::from_static(b"x")).expect("room");
        }
        assert!(matches!(
            pipe.try_push(Bytes::from_static(b"y")),
            Err(PushError::Full(_))
        ));
        let producer = tokio::spawn(async move {
            pipe.push(Bytes::from_static(b"y")).await.expect("reader");
            pipe.end();
        });
        let mut got = Vec::new();
        while let Some(piece) = next(&mut reader).await {
            got.push(piece.expect("not aborted"));
        }
        producer.await.expect("producer");
        assert_eq!(got.concat(), b"xxxxy");
    }

    #[tokio::test]
    async fn an_abort_comes_after_the_pieces_sent_before_it_and_the_first_end_wins() {
        let (pipe, mut reader) = Pipe::new();
        pipe.send_head(head(200));
        pipe.try_push(Bytes::from_static(b"a")).expect("room");
        pipe.abort("trap".into());
        pipe.end();
        assert!(reader.take_head().is_some());
        assert!(matches!(next(&mut reader).await, Some(Ok(_))));
        assert!(matches!(next(&mut reader).await, Some(Err(StreamAbort(why))) if why == "trap"));
    }

    #[tokio::test]
    async fn an_end_without_a_head_reads_as_no_head() {
        let (pipe, mut reader) = Pipe::new();
        pipe.abort("failed".into());
        assert!(poll_fn(|cx| reader.poll_head(cx)).await.is_none());
    }

    #[tokio::test]
    async fn a_gone_reader_fails_the_producer_even_while_it_waits() {
        let (pipe, reader) = Pipe::new();
        for _ in 0..PIPE_PIECES {
            pipe.try_push(Bytes::from_static(b"x")).expect("room");
        }
        let producer = tokio::spawn(async move { pipe.push(Bytes::from_static(b"y")).await });
        tokio::task::yield_now().await;
        drop(reader);
        assert_eq!(producer.await.expect("producer"), Err(ReaderGone));
    }

    #[tokio::test]
    async fn the_body_box_is_kept_for_the_next_body_whichever_pipe_it_comes_through() {
        let (pipe, reader) = Pipe::new();
        pipe.try_push(Bytes::from_static(b"a")).expect("room");
        pipe.end();
        let ResponseBody::Stream(mut body) = reader.into_body() else {
            panic!("a pipe's body is streamed");
        };
        let first: *const BoxedReader = std::ptr::from_ref(&*body).cast();
        assert!(poll_fn(|cx| body.poll_piece(cx)).await.is_some());
        assert!(poll_fn(|cx| body.poll_piece(cx)).await.is_none());
        body.recycle();
        let (_pipe, reader) = pipe.recycle();
        let ResponseBody::Stream(body) = reader.into_body() else {
            panic!("a pipe's body is streamed");
        };
        assert_eq!(std::ptr::from_ref(&*body).cast::<BoxedReader>(), first);
        body.recycle();
        let (_other, reader) = Pipe::new();
        let ResponseBody::Stream(body) = reader.into_body() else {
            panic!("a pipe's body is streamed");
        };
        assert_eq!(std::ptr::from_ref(&*body).cast::<BoxedReader>(), first);
    }

    #[test]
    fn recycling_reuses_the_state_only_once_the_last_reader_is_gone() {
        let (pipe, reader) = Pipe::new();
        pipe.send_head(head(200));
        pipe.try_push(Bytes::from_static(b"old")).expect("room");
        pipe.end();
        let first = Arc::as_ptr(&pipe.0);
        // The reader still holds the old response: a new pipe, the old one untouched.
        let (pipe, fresh_reader) = pipe.recycle();
        assert_ne!(Arc::as_ptr(&pipe.0), first);
        assert_eq!(lock(&reader.0).pieces.len(), 1);
        drop((reader, fresh_reader));
        let second = Arc::as_ptr(&pipe.0);
        let (pipe, mut reader) = pipe.recycle();
        assert_eq!(Arc::as_ptr(&pipe.0), second);
        assert!(reader.take_head().is_none());
        let state = lock(&pipe.0);
        assert!(state.pieces.is_empty() && state.end.is_none() && !state.reader_gone);
    }
}

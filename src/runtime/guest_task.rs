//! Running one request's guest work as a future, shared by both app types: how it
//! ended, the deadline of `limits.timeout`, and polling it on the data plane until it
//! answers or turns out to be long-running (and so belongs on the slow lane). Instances'
//! end hooks run the same way.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::slow_lane::SlowLane;

/// How a guest's part of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEnd {
    Done,
    Failed,
    TimedOut,
}

/// A guest's part of one request, as a future that can move between threads.
pub type GuestTask = Pin<Box<dyn Future<Output = GuestEnd> + Send>>;

/// What happened first while running a guest on the data plane; `H` is the response
/// head the guest hands over.
pub enum Progress<H> {
    Ended(GuestEnd),
    /// The head, or `None` if the guest's side closed without one.
    Head(Option<H>),
    LongRunning,
}

/// Polls the guest until it ends, hands over its response head (as `head` polls it), or
/// is found to be long-running.
pub async fn run_until_progress<H>(
    guest: &mut GuestTask,
    mut head: impl FnMut(&mut Context<'_>) -> Poll<Option<H>>,
    long_running: &AtomicBool,
) -> Progress<H> {
    poll_fn(|cx| {
        if let Poll::Ready(end) = guest.as_mut().poll(cx) {
            return Poll::Ready(Progress::Ended(end));
        }
        if let Poll::Ready(head) = head(cx) {
            return Poll::Ready(Progress::Head(head));
        }
        if long_running.load(Ordering::Relaxed) {
            return Poll::Ready(Progress::LongRunning);
        }
        Poll::Pending
    })
    .await
}

/// Runs the rest of a guest task where it is (a data-plane thread), moving it to the
/// slow lane if it turns out to be long-running.
pub async fn finish(mut guest: GuestTask, long_running: Arc<AtomicBool>, slow_lane: Arc<SlowLane>) {
    let no_head = |_: &mut Context<'_>| Poll::<Option<()>>::Pending;
    if let Progress::LongRunning = run_until_progress(&mut guest, no_head, &long_running).await {
        slow_lane.spawn(guest);
    }
}

/// The request outlived `limits.timeout`.
pub struct TimedOut;

/// Runs `work` to its end, or until `deadline` if there is one. The deadline is checked
/// before each poll: polling first would let a guest run one more epoch tick past it.
pub async fn within<F: Future>(deadline: Option<Instant>, work: F) -> Result<F::Output, TimedOut> {
    let Some(deadline) = deadline else {
        return Ok(work.await);
    };
    let mut work = std::pin::pin!(work);
    let mut expiry = std::pin::pin!(tokio::time::sleep_until(deadline));
    poll_fn(|cx| {
        if expiry.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(TimedOut));
        }
        work.as_mut().poll(cx).map(Ok)
    })
    .await
}

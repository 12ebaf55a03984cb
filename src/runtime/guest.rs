//! The guest driver, one for both app types: a request's guest work as a future bounded
//! by `limits.timeout`, run on the data plane until it hands over its response head,
//! moved to the slow lane whenever it turns out to keep the CPU (before the head or
//! after it), and how its end maps to an answer. Also the epoch callback every store
//! installs, which makes guests yield and notices the long-running ones.
//!
//! Most guests answer in one go: the driver runs them right in the request's task, and
//! a small response costs no task and no cross-task wake-up. Only a guest still going
//! once its head is out gets a task of its own, and only one found long-running is
//! moved to the slow lane's threads (see `slow_lane`).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};

use super::guest_counts::{GuestCounts, StopReason};
use super::limits::MemoryLimitExceeded;
use super::slow_lane::{LONG_RUNNING_TICKS, SlowLane};
use crate::http::{self, BodyError, Response};

/// How a guest's part of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEnd {
    Done,
    Failed,
    TimedOut,
}

impl GuestEnd {
    /// Why a response body that is already on its way is cut short, if it must be.
    pub fn cut_short(self) -> Option<&'static str> {
        match self {
            Self::Done => None,
            Self::Failed => Some("the guest failed"),
            Self::TimedOut => Some(TIMED_OUT),
        }
    }
}

const TIMED_OUT: &str = "the request timed out";

/// The statuses a guest may answer with (RFC 9110 §15); a guest that sets another fails
/// its request (500).
pub const GUEST_STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

/// A guest's part of one request, as a future that can move between threads.
pub type GuestTask = Pin<Box<dyn Future<Output = GuestEnd> + Send>>;

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

/// Why a guest's part of a request did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The guest failed (trapped, broke the ABI, ...); the whole cause.
    Failed(String),
    /// The guest grew its memory past `limits.memory`; the whole cause.
    OverMemory(String),
    TimedOut,
    /// The client's request body failed while the guest read it: the client's doing,
    /// answered for it by the connection; the instance, stopped mid-request, is not
    /// reused, but the guest is not blamed.
    Body(BodyError),
}

impl Stopped {
    /// The guest's failure `e`, told apart by its cause.
    pub fn failed(e: &anyhow::Error) -> Self {
        let why = format!("{e:#}");
        if e.chain().any(|cause| cause.is::<MemoryLimitExceeded>()) {
            Self::OverMemory(why)
        } else {
            Self::Failed(why)
        }
    }

    pub fn end(&self) -> GuestEnd {
        match self {
            Self::Failed(_) | Self::OverMemory(_) | Self::Body(_) => GuestEnd::Failed,
            Self::TimedOut => GuestEnd::TimedOut,
        }
    }

    /// What a client whose response is cut short is told.
    pub fn why(&self) -> String {
        match self {
            Self::Failed(why) | Self::OverMemory(why) => why.clone(),
            Self::TimedOut => TIMED_OUT.to_owned(),
            Self::Body(e) => e.to_string(),
        }
    }

    /// The guest's share in it, if it has one.
    fn reason(&self) -> Option<StopReason> {
        match self {
            Self::Failed(_) => Some(StopReason::Trap),
            Self::OverMemory(_) => Some(StopReason::MemoryLimit),
            Self::TimedOut => Some(StopReason::Timeout),
            Self::Body(_) => None,
        }
    }

    /// Logs it and counts it against its application.
    pub fn report(&self, counts: &GuestCounts, timeout: Option<Duration>) {
        let app = &counts.app;
        match self {
            Self::Failed(why) | Self::OverMemory(why) => {
                tracing::warn!(app = %app, "request failed in the guest: {why}");
            }
            Self::TimedOut => {
                tracing::warn!(app = %app, "request stopped after limits.timeout ({timeout:?})");
            }
            Self::Body(e) => tracing::debug!(app = %app, "request body: {e}"),
        }
        if let Some(reason) = self.reason() {
            counts.count_stop(reason);
        }
    }
}

/// Runs a request's guest work under its deadline. On time-out the work's future is
/// dropped mid-call: wasmtime unwinds the guest at its next epoch yield.
pub async fn bounded<E: Into<anyhow::Error>>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<(), E>>,
) -> Result<(), Stopped> {
    match within(deadline, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Stopped::failed(&e.into())),
        Err(TimedOut) => Err(Stopped::TimedOut),
    }
}

/// Where a guest's response head comes from.
pub trait HeadSource {
    type Head;

    /// The head once the guest sent it; `None` if its side closed without one.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Head>>;

    /// A head the guest sent before it ended.
    fn take_head(&mut self) -> Option<Self::Head>;
}

/// A guest's part of one request, and the flag its epoch callback raises once it has
/// kept the CPU for `LONG_RUNNING_TICKS`.
pub struct Guest {
    task: GuestTask,
    long_running: Arc<AtomicBool>,
}

/// The guest once its head is out.
pub enum Rest {
    Ended(GuestEnd),
    /// Still running on the data plane.
    Here(Guest),
    OnSlowLane(JoinHandle<GuestEnd>),
}

impl Guest {
    pub fn new(task: GuestTask, long_running: Arc<AtomicBool>) -> Self {
        Self { task, long_running }
    }

    /// Runs the guest here until it hands over its response head (`Ok`, with what is
    /// left of it) or ends without one (`Err`). A guest that keeps the CPU first goes on
    /// on the slow lane, where its head is awaited.
    pub async fn until_head<S: HeadSource>(
        mut self,
        source: &mut S,
        slow_lane: &SlowLane,
    ) -> Result<(S::Head, Rest), GuestEnd> {
        enum Progress<H> {
            Ended(GuestEnd),
            Head(Option<H>),
            LongRunning,
        }
        // The guest first: a guest that answers in one go leaves its whole response in
        // the source, where it is found below at once.
        let progress = poll_fn(|cx| {
            if let Poll::Ready(end) = self.task.as_mut().poll(cx) {
                return Poll::Ready(Progress::Ended(end));
            }
            if let Poll::Ready(head) = source.poll_head(cx) {
                return Poll::Ready(Progress::Head(head));
            }
            if self.long_running.load(Ordering::Relaxed) {
                return Poll::Ready(Progress::LongRunning);
            }
            Poll::Pending
        })
        .await;
        match progress {
            Progress::Ended(end) => source.take_head().map(|h| (h, Rest::Ended(end))).ok_or(end),
            Progress::Head(Some(head)) => Ok((head, Rest::Here(self))),
            // The guest's side closed without a head: it says how it ends.
            Progress::Head(None) => Err(self.finish(slow_lane).await),
            Progress::LongRunning => {
                let mut task = slow_lane.spawn(self.task);
                let first = tokio::select! {
                    biased;
                    end = &mut task => Err(end.unwrap_or(GuestEnd::Failed)),
                    head = poll_fn(|cx| source.poll_head(cx)) => Ok(head),
                };
                match first {
                    Err(end) => source.take_head().map(|h| (h, Rest::Ended(end))).ok_or(end),
                    Ok(Some(head)) => Ok((head, Rest::OnSlowLane(task))),
                    Ok(None) => Err(task.await.unwrap_or(GuestEnd::Failed)),
                }
            }
        }
    }

    /// Runs the guest to its end: here, until it turns out long-running, then on the
    /// slow lane.
    pub async fn finish(mut self, slow_lane: &SlowLane) -> GuestEnd {
        let ended = poll_fn(|cx| {
            if let Poll::Ready(end) = self.task.as_mut().poll(cx) {
                return Poll::Ready(Some(end));
            }
            if self.long_running.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match ended {
            Some(end) => end,
            None => slow_lane.spawn(self.task).await.unwrap_or(GuestEnd::Failed),
        }
    }

    /// Lets the guest finish on its own task, moving to the slow lane if it must.
    pub fn detach(self, slow_lane: &Arc<SlowLane>) {
        let slow_lane = Arc::clone(slow_lane);
        tokio::spawn(async move { self.finish(&slow_lane).await });
    }
}

impl Rest {
    /// How the guest ended, if it has.
    pub fn ended(&self) -> Option<GuestEnd> {
        match self {
            Self::Ended(end) => Some(*end),
            Self::Here(_) | Self::OnSlowLane(_) => None,
        }
    }

    /// Waits for the guest's end, wherever it runs.
    pub async fn finish(self, slow_lane: &SlowLane) -> GuestEnd {
        match self {
            Self::Ended(end) => end,
            Self::Here(guest) => guest.finish(slow_lane).await,
            Self::OnSlowLane(task) => task.await.unwrap_or(GuestEnd::Failed),
        }
    }

    /// Lets a guest that still runs finish on its own.
    pub fn detach(self, slow_lane: &Arc<SlowLane>) {
        match self {
            Self::Here(guest) => guest.detach(slow_lane),
            // The slow lane's task runs on without its handle.
            Self::Ended(_) | Self::OnSlowLane(_) => {}
        }
    }
}

/// The answer to a request whose guest ended without a response head.
pub fn answer_without_head(app: &str, end: GuestEnd) -> Response {
    match end {
        GuestEnd::Done => {
            tracing::warn!(app = %app, "the guest returned without setting a response");
            http::error_response(500)
        }
        GuestEnd::Failed => http::error_response(500),
        GuestEnd::TimedOut => http::error_response(503),
    }
}

/// A store's count of the epoch ticks its guest has run across, for the slow lane.
pub struct CpuClock {
    ticks: u32,
    long_running: Arc<AtomicBool>,
}

impl Default for CpuClock {
    fn default() -> Self {
        Self {
            ticks: 0,
            long_running: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl CpuClock {
    /// Raised once the guest has run `LONG_RUNNING_TICKS` since the last `restart`.
    pub fn long_running(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.long_running)
    }

    /// Counts from now (a new request), not from whenever the instance last ran.
    pub fn restart(&mut self) {
        self.ticks = 0;
        self.long_running.store(false, Ordering::Relaxed);
    }

    fn tick(&mut self) {
        self.ticks = self.ticks.saturating_add(1);
        if self.ticks >= LONG_RUNNING_TICKS {
            self.long_running.store(true, Ordering::Relaxed);
        }
    }
}

/// Makes the store's guest yield to other requests at every epoch tick instead of
/// holding a thread, counting the ticks on its `CpuClock`. It yields through tokio's
/// `yield_now`, so the task goes behind the others and the I/O driver runs: a plain
/// self-wake would put it straight back in the worker's LIFO slot.
pub fn yield_at_every_tick<T: 'static>(store: &mut Store<T>, clock: fn(&mut T) -> &mut CpuClock) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut store| {
        clock(store.data_mut()).tick();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    impl HeadSource for oneshot::Receiver<&'static str> {
        type Head = &'static str;

        fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<&'static str>> {
            Pin::new(self).poll(cx).map(Result::ok)
        }

        fn take_head(&mut self) -> Option<&'static str> {
            self.try_recv().ok()
        }
    }

    fn on_slow_lane() -> bool {
        std::thread::current().name() == Some("wasm-slow-lane")
    }

    /// A guest that sends its head (or not), then keeps the CPU: it raises the flag its
    /// epoch callback would, and ends only once it runs on the slow lane.
    fn spinner(head: Option<oneshot::Sender<&'static str>>, flag: Arc<AtomicBool>) -> GuestTask {
        Box::pin(async move {
            if let Some(head) = head {
                let _ = head.send("head");
            }
            flag.store(true, Ordering::Relaxed);
            while !on_slow_lane() {
                tokio::task::yield_now().await;
            }
            GuestEnd::Done
        })
    }

    #[tokio::test]
    async fn a_guest_spinning_after_its_head_moves_to_the_slow_lane() {
        let lane = SlowLane::start().expect("the slow lane");
        let (tx, mut rx) = oneshot::channel();
        let flag = Arc::new(AtomicBool::new(false));
        let guest = Guest::new(spinner(Some(tx), Arc::clone(&flag)), flag);
        let (head, rest) = guest.until_head(&mut rx, &lane).await.expect("a head");
        assert_eq!(head, "head");
        let end = tokio::time::timeout(Duration::from_secs(30), rest.finish(&lane)).await;
        assert_eq!(end.ok(), Some(GuestEnd::Done), "it ended on the slow lane");
    }

    #[tokio::test]
    async fn a_guest_spinning_before_its_head_moves_to_the_slow_lane() {
        let lane = SlowLane::start().expect("the slow lane");
        let (_tx, mut rx) = oneshot::channel::<&'static str>();
        let flag = Arc::new(AtomicBool::new(false));
        let guest = Guest::new(spinner(None, Arc::clone(&flag)), flag);
        let ended = tokio::time::timeout(Duration::from_secs(30), guest.until_head(&mut rx, &lane));
        assert!(
            matches!(ended.await, Ok(Err(GuestEnd::Done))),
            "it ended, headless, on the slow lane"
        );
    }

    #[tokio::test]
    async fn a_guest_that_answers_at_once_stays_here() {
        let lane = SlowLane::start().expect("the slow lane");
        let (tx, mut rx) = oneshot::channel();
        let task: GuestTask = Box::pin(async move {
            let _ = tx.send("head");
            GuestEnd::Done
        });
        let guest = Guest::new(task, Arc::new(AtomicBool::new(false)));
        let (head, rest) = guest.until_head(&mut rx, &lane).await.expect("a head");
        assert_eq!((head, rest.ended()), ("head", Some(GuestEnd::Done)));
    }
}

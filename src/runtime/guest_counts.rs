//! What each application's guests did, for the metrics: the requests whose guest did
//! not finish (it trapped or broke the ABI, grew its memory past `limits.memory`, or ran
//! past `limits.timeout`), and the time guest code ran. Kept by application name across
//! generations (`counter::Named`). Stops are rare, so one shared atomic per reason is
//! enough; the run time grows on every request, so it is a per-thread `Counter`.
//!
//! The run time is the wall time of each slice in which a guest's work ran on a thread
//! (each poll of its future: guest code and the host calls it makes), read with the
//! monotonic clock, which the vDSO serves without a system call. A thread's own CPU
//! clock would also leave out the time the OS preempted the thread, but reading it is a
//! system call, twice per request; on a machine that is not overloaded the two agree.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::counter::{Counter, Named};

/// Why a guest's request was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest trapped, or called the host in a way the ABI forbids.
    Trap,
    /// The guest grew its memory past `limits.memory`.
    MemoryLimit,
    /// The request outlived `limits.timeout`, in the guest or waiting for an instance.
    Timeout,
}

impl StopReason {
    pub const ALL: [StopReason; 3] = [Self::Trap, Self::MemoryLimit, Self::Timeout];

    pub fn label(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::MemoryLimit => "memory_limit",
            Self::Timeout => "timeout",
        }
    }
}

/// One application's guest counts.
#[derive(Debug)]
pub struct GuestCounts {
    pub app: String,
    stops: [AtomicU64; StopReason::ALL.len()],
    /// Nanoseconds guest work ran.
    run_time: Counter,
}

impl GuestCounts {
    pub fn count_stop(&self, reason: StopReason) {
        self.stops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn stops(&self, reason: StopReason) -> u64 {
        self.stops[reason as usize].load(Ordering::Relaxed)
    }

    /// How long guest work of this application has run, in all.
    pub fn run_time(&self) -> Duration {
        Duration::from_nanos(self.run_time.get())
    }

    /// `work`, adding the time each of its polls takes to the run time.
    pub async fn timed<F: Future>(&self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            let start = Instant::now();
            let polled = work.as_mut().poll(cx);
            let nanos = start.elapsed().as_nanos();
            self.run_time.add(i64::try_from(nanos).unwrap_or(i64::MAX));
            polled
        })
        .await
    }
}

static COUNTS: Named<String, GuestCounts> = Named::new();

/// The counts of application `app`, the ones already counting if a generation runs it.
pub fn of(app: &str) -> Arc<GuestCounts> {
    COUNTS.get_or_insert_with(app.to_owned(), || GuestCounts {
        app: app.to_owned(),
        stops: Default::default(),
        run_time: Counter::default(),
    })
}

/// The counts of every application some generation runs, by name.
pub fn all() -> Vec<Arc<GuestCounts>> {
    COUNTS.all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_apart_and_a_running_app_keeps_its_counts() {
        let counts = of("stops-test-app");
        counts.count_stop(StopReason::Timeout);
        counts.count_stop(StopReason::Timeout);
        counts.count_stop(StopReason::MemoryLimit);
        let again = of("stops-test-app");
        assert_eq!(again.stops(StopReason::Timeout), 2);
        assert_eq!(again.stops(StopReason::MemoryLimit), 1);
        assert_eq!(again.stops(StopReason::Trap), 0);
    }

    /// A future that is ready on its second poll, each poll taking `spin` of the thread.
    struct TwoSlices {
        polls: u32,
        spin: Duration,
    }

    impl Future for TwoSlices {
        type Output = ();

        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            let start = Instant::now();
            while start.elapsed() < self.spin {
                std::hint::spin_loop();
            }
            self.polls += 1;
            if self.polls == 2 {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn run_time_adds_up_every_poll_and_not_the_time_between() {
        let counts = of("run-time-test-app");
        let spin = Duration::from_millis(20);
        let wall = Instant::now();
        counts
            .timed(async {
                TwoSlices { polls: 0, spin }.await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
            .await;
        let wall = wall.elapsed();
        let ran = counts.run_time();
        assert!(ran >= 2 * spin, "{ran:?} < two slices of {spin:?}");
        assert!(
            ran < wall - Duration::from_millis(150),
            "{ran:?} counts the sleep"
        );
    }
}

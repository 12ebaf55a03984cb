//! The slow lane: where a guest that keeps the CPU busy finishes its request, so that it
//! cannot slow down the requests of other apps.
//!
//! Guests start on the data plane's threads, which also accept connections and parse
//! requests. A request whose guest has run across `LONG_RUNNING_TICKS` epoch ticks is
//! moved here: a runtime whose threads run at nice 19, so the kernel preempts
//! them as soon as a data-plane thread has work. Short requests are never delayed by
//! long ones; long ones get every cycle the short ones leave. This is the classic
//! multi-level feedback queue, with the kernel as the scheduler.

use std::future::Future;

use anyhow::Context as _;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Epoch ticks a request's guest may run across before it moves to the slow lane: at
/// least one whole tick (10 ms) of guest execution.
pub const LONG_RUNNING_TICKS: u32 = 2;

/// The lane's nice value. Not `SCHED_IDLE`, which can starve the lane outright on a
/// machine busy with other work, so that its guests would not even reach their
/// timeouts. At nice 19 it keeps a small, steady share (about 1.5% against one busy
/// thread).
const LANE_NICE: i32 = 19;

pub struct SlowLane {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl SlowLane {
    pub fn start() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-slow-lane")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .context("failed to start the slow lane's threads")?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work)
    }
}

impl Drop for SlowLane {
    fn drop(&mut self) {
        // May run inside an async context, where a blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread to the lowest priority of normal scheduling (nice 19). If
/// the kernel refuses, the lane still works, only without the priority drop.
fn lower_priority() {
    // SAFETY: `gettid` and `setpriority` take and return plain integers; with
    // `PRIO_PROCESS` and a thread id, Linux changes only that thread's nice value.
    #[allow(unsafe_code)]
    let status = unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread.cast_unsigned(), LANE_NICE)
    };
    if status != 0 {
        tracing::warn!(
            "the slow lane runs at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

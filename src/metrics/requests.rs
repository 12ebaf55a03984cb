//! Per-request counts by (application, listener, status) and latency histograms, kept
//! the way `counter` keeps its counters: each data-plane thread bumps a block of its own,
//! and only a scrape adds the blocks up.
//!
//! A series is one (application, listener) pair. A generation resolves its pairs to
//! series once, when it is built, so a request finds its series by two indexes and no
//! lookup; series are kept by name (`counter::Named`), so a reconfiguration that keeps a
//! pair keeps its counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::counter::{Named, SLOTS, slot_of_this_thread};

/// The status codes counted one by one: every code a response can have.
pub const CODES: std::ops::RangeInclusive<u16> = 100..=599;
const CODE_COUNT: usize = 500;

/// Upper bounds of the latency buckets, in seconds: Prometheus's default buckets, which
/// cover a fast guest (under a millisecond) to a slow one (seconds).
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One thread's counts of one series; a cache line boundary keeps it off its neighbours'.
#[repr(align(64))]
struct Block {
    codes: [AtomicU64; CODE_COUNT],
    /// Requests per bucket (not cumulative; a scrape adds them up), the last one `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    nanos: AtomicU64,
}

impl Block {
    fn new() -> Self {
        Self {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: AtomicU64::new(0),
        }
    }
}

/// The counts of one (application, listener) pair. A thread's block is allocated when
/// the thread first serves a request of the pair, so pairs nobody uses cost little.
pub struct Series {
    pub app: String,
    pub listener: String,
    blocks: [OnceLock<Box<Block>>; SLOTS],
}

impl Series {
    fn new(app: &str, listener: &str) -> Self {
        Self {
            app: app.to_owned(),
            listener: listener.to_owned(),
            blocks: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts a request answered with `status`; `took` is how long the answer took to be
    /// made (until its head was ready), if it was measured.
    pub fn record(&self, status: u16, took: Option<Duration>) {
        let block = self.blocks[slot_of_this_thread()].get_or_init(|| Box::new(Block::new()));
        // What the wire says: `http::encode` sends any other status as 500.
        let status = if CODES.contains(&status) { status } else { 500 };
        let code = usize::from(status - CODES.start());
        block.codes[code].fetch_add(1, Ordering::Relaxed);
        if let Some(took) = took {
            let seconds = took.as_secs_f64();
            let bucket = BUCKETS
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(BUCKETS.len());
            block.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            block.nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// The counts summed over the threads.
    pub fn read(&self) -> Counts {
        let mut counts = Counts::default();
        for block in self.blocks.iter().filter_map(OnceLock::get) {
            for (code, n) in CODES.zip(&block.codes) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    *counts.codes.entry(code).or_default() += n;
                }
            }
            for (sum, n) in counts.buckets.iter_mut().zip(&block.buckets) {
                *sum += n.load(Ordering::Relaxed);
            }
            counts.nanos += block.nanos.load(Ordering::Relaxed);
        }
        counts
    }
}

/// What a series has counted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Requests by status code; codes never sent are absent.
    pub codes: std::collections::BTreeMap<u16, u64>,
    /// Timed requests per bucket of `BUCKETS`, then above the last bound (not cumulative).
    pub buckets: [u64; BUCKETS.len() + 1],
    pub nanos: u64,
}

static SERIES: Named<(String, String), Series> = Named::new();

/// The series of (`app`, `listener`), the one already counting if some generation uses
/// it. `app` is empty for requests no application served (`return`, `share`, `proxy`, errors).
pub fn series(app: &str, listener: &str) -> Arc<Series> {
    SERIES.get_or_insert_with((app.to_owned(), listener.to_owned()), || {
        Series::new(app, listener)
    })
}

/// Every series some generation still uses, sorted by application and listener.
pub fn all() -> Vec<Arc<Series>> {
    SERIES.all()
}

/// The series of each listener's requests, by application: index 0 is "no
/// application", index `i + 1` the generation's application `i`.
pub struct ListenerSeries(Box<[Arc<Series>]>);

impl ListenerSeries {
    pub fn new<'a>(listener: &str, apps: impl Iterator<Item = &'a str>) -> Self {
        let none = std::iter::once(series("", listener));
        Self(none.chain(apps.map(|app| series(app, listener))).collect())
    }

    /// The series of requests answered without an application.
    pub fn unserved(&self) -> &Series {
        &self.0[0]
    }

    /// The series of the application at `index`; `None` for an index out of range.
    pub fn application(&self, index: usize) -> Option<&Series> {
        self.0.get(index + 1).map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_code_and_bucket_add_up_over_threads() {
        let series = series("counts-test-app", "127.0.0.1:1");
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    series.record(200, Some(Duration::from_micros(100)));
                    series.record(404, Some(Duration::from_secs(10)));
                    series.record(503, None);
                });
            }
        });
        let counts = series.read();
        assert_eq!(counts.codes.get(&200), Some(&4));
        assert_eq!(counts.codes.get(&404), Some(&4));
        assert_eq!(counts.codes.get(&503), Some(&4));
        assert_eq!(counts.buckets[0], 4);
        assert_eq!(counts.buckets[BUCKETS.len()], 4);
        assert_eq!(counts.nanos, 4 * (100_000 + 10_000_000_000));
    }

    #[test]
    fn a_kept_pair_keeps_its_counts_and_a_dropped_one_starts_anew() {
        let first = series("keep-test-app", "127.0.0.1:2");
        first.record(200, None);
        let again = series("keep-test-app", "127.0.0.1:2");
        assert!(Arc::ptr_eq(&first, &again));
        drop((first, again));
        let fresh = series("keep-test-app", "127.0.0.1:2");
        assert!(fresh.read().codes.is_empty());
    }
}

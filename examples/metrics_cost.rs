//! What the metrics add to one request, measured alone, in nanoseconds: a hello request
//! on a kept-alive connection records its (app, listener) series (the status count, the
//! latency bucket and sum, timed with two clock reads), bumps the bytes counters twice
//! (one read of its head, one write of its response) and times one poll of its guest
//! (two clock reads and a bump). Run by `benches/metrics-cost.sh`; the figures are in
//! `docs/performance.md`.

use std::future::ready;
use std::hint::black_box;
use std::time::{Duration, Instant};

use wharf::counter::Counter;
use wharf::metrics::requests;
use wharf::runtime::guest_counts;

const ROUNDS: u32 = 5;
const ITERATIONS: u32 = 20_000_000;

/// The fastest of `ROUNDS` timings of `ITERATIONS` runs of `f`, per run.
fn per_run(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                f();
            }
            start.elapsed() / ITERATIONS
        })
        .min()
        .unwrap_or_default()
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn main() {
    let series = requests::series("metrics-cost", "127.0.0.1:1");
    let recorded = per_run(|| {
        let started = Instant::now();
        series.record(black_box(200), Some(started.elapsed()));
    });
    let bytes = Counter::default();
    let bump = per_run(|| bytes.add(black_box(512)));

    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    };
    let counts = guest_counts::of("metrics-cost");
    let plain = runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            black_box(ready(black_box(1u32)).await);
        }
        start.elapsed() / ITERATIONS
    });
    let timed = runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            black_box(counts.timed(ready(black_box(1u32))).await);
        }
        start.elapsed() / ITERATIONS
    });
    let timing = timed.saturating_sub(plain);
    let added = 2.0 * nanos(bump) + nanos(timing);
    println!("request series record, timed: {:.1} ns", nanos(recorded));
    println!("counter bump: {:.1} ns", nanos(bump));
    println!("one timed guest poll: {:.1} ns", nanos(timing));
    println!("bytes and guest time per hello request (2 bumps + 1 timed poll): {added:.1} ns");
    println!(
        "all metrics per hello request (+ the series): {:.1} ns",
        added + nanos(recorded)
    );
}

//! Counters that every data-plane thread bumps on every request and that only `/status`
//! reads. One shared atomic would move its cache line from core to core on each bump,
//! which costs more than the rest of the bookkeeping together; here each thread bumps a
//! slot of its own (a cache line each) and a read adds the slots up.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Slots per counter: threads beyond this share them, which is still correct.
pub(crate) const SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicI64);

/// A count or a gauge. A gauge may go up on one thread and down on another: single slots
/// can then go negative, the sum stays right.
#[derive(Debug, Default)]
pub struct Counter {
    slots: [Slot; SLOTS],
}

impl Counter {
    pub fn add(&self, n: i64) {
        self.slots[slot_of_this_thread()]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn increment(&self) {
        self.add(1);
    }

    pub fn decrement(&self) {
        self.add(-1);
    }

    /// The sum; slots are read one by one, so a read racing with bumps may be off by
    /// those bumps (never below zero).
    pub fn get(&self) -> u64 {
        let sum: i64 = self
            .slots
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .fold(0, i64::wrapping_add);
        u64::try_from(sum).unwrap_or(0)
    }
}

pub(crate) fn slot_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|slot| *slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bumps_from_many_threads_add_up_and_a_gauge_may_move_between_threads() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..40)
            .map(|i| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        // Half the threads only go up, half only down: every slot that
                        // a "down" thread uses goes negative on its own.
                        if i % 2 == 0 {
                            counter.add(3);
                        } else {
                            counter.decrement();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(counter.get(), 20 * 1000 * 3 - 20 * 1000);
    }

    #[test]
    fn a_sum_below_zero_reads_as_zero() {
        let counter = Counter::default();
        counter.decrement();
        assert_eq!(counter.get(), 0);
        counter.increment();
        counter.increment();
        assert_eq!(counter.get(), 1);
    }
}

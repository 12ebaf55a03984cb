//! Counters that every data-plane thread bumps on every request and that only `/status`
//! reads. One shared atomic would move its cache line from core to core on each bump,
//! which costs more than the rest of the bookkeeping together; here each thread bumps a
//! slot of its own (a cache line each) and a read adds the slots up. Also `Named`: the
//! counters of things that come and go with the config, kept by name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// Counters by name, for as long as something holds them. What a generation builds
/// takes its counters from here, so a reconfiguration that keeps a name keeps its counts
/// (Prometheus counters must not go back), and a name no generation uses any more is
/// dropped with the last one that used it.
pub struct Named<K, V>(Mutex<BTreeMap<K, Weak<V>>>);

impl<K: Ord, V> Named<K, V> {
    pub const fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    /// The counters of `key`: the ones already counting if something holds them, else
    /// new ones from `make`.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get(&key).and_then(Weak::upgrade) {
            return held;
        }
        map.retain(|_, counters| counters.strong_count() > 0);
        let counters = Arc::new(make());
        map.insert(key, Arc::downgrade(&counters));
        counters
    }

    /// Every counter something still holds, in the order of their names.
    pub fn all(&self) -> Vec<Arc<V>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter_map(Weak::upgrade).collect()
    }
}

impl<K: Ord, V> Default for Named<K, V> {
    fn default() -> Self {
        Self::new()
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

    #[test]
    fn a_held_name_keeps_its_counters_and_a_dropped_one_starts_anew() {
        let named: Named<&str, Counter> = Named::new();
        let first = named.get_or_insert_with("a", Counter::default);
        first.increment();
        let again = named.get_or_insert_with("a", Counter::default);
        assert!(Arc::ptr_eq(&first, &again));
        let b = named.get_or_insert_with("b", Counter::default);
        assert_eq!(named.all().len(), 2);
        drop((first, again));
        assert_eq!(named.all().len(), 1);
        assert_eq!(named.get_or_insert_with("a", Counter::default).get(), 0);
        drop(b);
    }
}

//! Each application's requests whose guest did not finish: it trapped (or broke the
//! ABI), grew its memory past `limits.memory`, or ran past `limits.timeout`. Kept by
//! application name across generations (`counter::Named`); these are rare, so one
//! shared atomic per count is enough.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::counter::Named;

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

/// One application's stopped requests, by reason.
#[derive(Debug)]
pub struct GuestStops {
    pub app: String,
    counts: [AtomicU64; StopReason::ALL.len()],
}

impl GuestStops {
    pub fn count(&self, reason: StopReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: StopReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
}

static STOPS: Named<String, GuestStops> = Named::new();

/// The counts of application `app`, the ones already counting if a generation runs it.
pub fn of(app: &str) -> Arc<GuestStops> {
    STOPS.get_or_insert_with(app.to_owned(), || GuestStops {
        app: app.to_owned(),
        counts: Default::default(),
    })
}

/// The counts of every application some generation runs, by name.
pub fn all() -> Vec<Arc<GuestStops>> {
    STOPS.all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_apart_and_a_running_app_keeps_its_counts() {
        let stops = of("stops-test-app");
        stops.count(StopReason::Timeout);
        stops.count(StopReason::Timeout);
        stops.count(StopReason::MemoryLimit);
        let again = of("stops-test-app");
        assert_eq!(again.get(StopReason::Timeout), 2);
        assert_eq!(again.get(StopReason::MemoryLimit), 1);
        assert_eq!(again.get(StopReason::Trap), 0);
    }
}

//! What the control plane counts of its own work: changes refused, by the step that
//! refused them, and when what serves last changed (a committed change, a restart, a
//! module file reloaded).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The step that refused a change or a restart; what it left running is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The edit or the resulting config was invalid.
    Invalid,
    /// `If-Match` named another generation.
    Precondition,
    /// A valid config could not be put to work: a module that does not load, a port
    /// that does not bind, a store that did not commit.
    Apply,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Invalid, Refusal::Precondition, Refusal::Apply];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Precondition => "precondition",
            Refusal::Apply => "apply",
        }
    }
}

#[derive(Debug, Default)]
pub struct Reloads {
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Milliseconds since the Unix epoch; 0 until the first.
    last_success_millis: AtomicU64,
}

impl Reloads {
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_success_millis.store(millis, Ordering::Relaxed);
    }

    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Seconds since the Unix epoch of the last change to what serves, if there was one.
    pub fn last_success_seconds(&self) -> Option<f64> {
        match self.last_success_millis.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(millis as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_refusal_apart_and_stamps_successes() {
        let reloads = Reloads::default();
        assert_eq!(reloads.last_success_seconds(), None);
        reloads.refused(Refusal::Apply);
        reloads.refused(Refusal::Apply);
        reloads.refused(Refusal::Invalid);
        assert_eq!(reloads.refused_count(Refusal::Apply), 2);
        assert_eq!(reloads.refused_count(Refusal::Invalid), 1);
        assert_eq!(reloads.refused_count(Refusal::Precondition), 0);
        reloads.succeeded();
        assert!(reloads.last_success_seconds().is_some_and(|s| s > 1.7e9));
    }
}

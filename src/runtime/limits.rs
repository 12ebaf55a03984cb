//! An app's `limits`: how long a request may hold an instance, how many requests an
//! instance serves, how much linear memory it may have, and how many requests may wait
//! for an instance. Also the `ResourceLimiter` that enforces the memory bound.

use std::time::Duration;

/// Linear memory an instance may have when `limits.memory` is unset: 256 MiB, generous
/// for Unit-style guests and small enough that a memory bomb cannot take the host down.
pub const DEFAULT_MEMORY: usize = 256 << 20;

/// Requests that may wait for a busy app when `limits.queue` is unset.
pub const DEFAULT_QUEUE: usize = 1024;

/// How long starting an instance (its `_initialize` and `module_init_handler`) may take
/// when the app sets no `limits.timeout`, so a hook that never returns cannot hang a
/// configuration change.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time a request may take from arrival at the app until the guest is
    /// done, waiting for an instance included. `None`: no limit (Unit's default).
    pub timeout: Option<Duration>,
    /// Requests an instance serves before it is replaced. `None`: no limit.
    pub requests: Option<u64>,
    /// Bytes of linear memory an instance may have, all memories together.
    pub memory: usize,
    /// Requests that may wait for an instance; more get 503 at once.
    pub queue: usize,
}

impl Default for Limits {
    /// The limits of an app that sets none.
    fn default() -> Self {
        Self {
            timeout: None,
            requests: None,
            memory: DEFAULT_MEMORY,
            queue: DEFAULT_QUEUE,
        }
    }
}

impl Limits {
    /// When a request arriving now must be done by, if ever.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.timeout.map(|t| tokio::time::Instant::now() + t)
    }

    /// How long starting one instance may take.
    pub fn start_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_START_TIMEOUT)
    }
}

/// A guest grew its memory past `limits.memory`.
#[derive(Debug, thiserror::Error)]
#[error("the guest tried to grow its memory to {wanted} bytes, over its limit of {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub wanted: usize,
    pub limit: usize,
}

/// Bounds an instance's linear memories together. A grow past the bound traps the guest
/// (rather than failing `memory.grow`), so the request ends at once with a clear cause.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        Self { limit, used: 0 }
    }
}

impl wasmtime::ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let wanted = self.used.saturating_sub(current).saturating_add(desired);
        if wanted > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                wanted,
                limit: self.limit,
            }));
        }
        self.used = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the engine's pooling configuration.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn an_unset_timeout_bounds_starting_by_the_default() {
        assert_eq!(Limits::default().start_timeout(), DEFAULT_START_TIMEOUT);
        let limits = Limits {
            timeout: Some(Duration::from_millis(500)),
            ..Limits::default()
        };
        assert_eq!(limits.start_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn the_budget_counts_all_memories_together() {
        let mut budget = MemoryBudget::new(100);
        assert!(budget.memory_growing(0, 60, None).is_ok());
        // A second memory may have only what the first left.
        assert!(budget.memory_growing(0, 50, None).is_err());
        assert!(budget.memory_growing(0, 40, None).is_ok());
        // Growing the first by 1 now crosses the bound.
        let err = budget
            .memory_growing(60, 61, None)
            .expect_err("over the limit");
        assert!(err.to_string().contains("101 bytes"), "{err}");
    }
}

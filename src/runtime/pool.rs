//! An application's instance pool: at most `max` instances, each serving one request at
//! a time; a request waits for a free one. `spare` instances are started up front and
//! kept warm; idle ones beyond them are dropped after `idle_timeout`. One that failed is
//! discarded, and a fresh one takes its place when needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Engine;

use super::unit_abi::{UnitInstance, UnitModule};

/// Unit's `processes`, read as instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub max: usize,
    pub spare: usize,
    pub idle_timeout: Option<Duration>,
}

pub struct InstancePool {
    engine: Engine,
    module: UnitModule,
    size: PoolSize,
    /// Idle instances with the time each was last returned, most recent last.
    idle: Mutex<Vec<(UnitInstance, Instant)>>,
    slots: Arc<Semaphore>,
    busy: AtomicU64,
    starting: AtomicU64,
}

/// Instance counts for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub running: u64,
    pub starting: u64,
    pub idle: u64,
}

impl InstancePool {
    pub fn new(engine: Engine, module: UnitModule, size: PoolSize) -> Arc<Self> {
        let pool = Arc::new(Self {
            engine,
            module,
            size,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max.max(1))),
            busy: AtomicU64::new(0),
            starting: AtomicU64::new(0),
        });
        if let Some(timeout) = size.idle_timeout {
            tokio::spawn(reap_idle(Arc::downgrade(&pool), timeout));
        }
        pool
    }

    /// Starts the spare instances (at least one) and keeps them idle: proves the module
    /// runs before a swap.
    pub async fn warm_up(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut leases = Vec::new();
        for _ in 0..self.size.spare.clamp(1, self.size.max.max(1)) {
            leases.push(self.checkout().await?);
        }
        leases.into_iter().for_each(Lease::release);
        Ok(())
    }

    /// Drops idle instances unused for `timeout`, keeping `spare` of them.
    fn drop_stale(&self, timeout: Duration) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        let stale = idle
            .iter()
            .filter(|(_, since)| now.duration_since(*since) >= timeout)
            .count();
        let droppable = stale.min(idle.len().saturating_sub(self.size.spare));
        // The oldest come first.
        idle.drain(..droppable);
    }

    /// Waits for a free slot and returns an idle instance, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> anyhow::Result<Lease> {
        let permit = Arc::clone(&self.slots).acquire_owned().await?;
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .map(|(i, _)| i);
        let instance = match idle {
            Some(instance) => instance,
            None => {
                self.starting.fetch_add(1, Ordering::Relaxed);
                let started = self.module.instantiate(&self.engine).await;
                self.starting.fetch_sub(1, Ordering::Relaxed);
                started?
            }
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            pool: Arc::clone(self),
            instance: Some(instance),
            reusable: false,
            _permit: permit,
        })
    }

    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            running: self.busy.load(Ordering::Relaxed),
            starting: self.starting.load(Ordering::Relaxed),
            idle: self.idle.lock().map_or(0, |idle| idle.len() as u64),
        }
    }
}

/// An instance on loan to one request. It goes back to the pool only through `release`,
/// once the request is known to have finished cleanly; a lease dropped any other way (a
/// guest error, or the request abandoned mid-call) discards the instance, whose state
/// can no longer be trusted.
pub struct Lease {
    pool: Arc<InstancePool>,
    instance: Option<UnitInstance>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn instance(&mut self) -> Option<&mut UnitInstance> {
        self.instance.as_mut()
    }

    /// Returns the instance to the pool for the next request.
    pub fn release(mut self) {
        self.reusable = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.busy.fetch_sub(1, Ordering::Relaxed);
        if let Some(instance) = self.instance.take()
            && self.reusable
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push((instance, Instant::now()));
        }
    }
}

/// Runs while the pool lives, dropping idle instances past their time.
async fn reap_idle(pool: Weak<InstancePool>, timeout: Duration) {
    let period = (timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) => pool.drop_stale(timeout),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::runtime::unit_abi::UnitAppSpec;

    /// The smallest module the ABI accepts: memory for the buffer, and handlers that do
    /// nothing.
    const GUEST: &str = r#"(module
        (memory (export "memory") 600)
        (func (export "request") (param i32) (result i32) i32.const 0)
        (func (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "free") (param i32)))"#;

    async fn pool(max: usize) -> Arc<InstancePool> {
        let runtime = Runtime::new().expect("runtime");
        let module = wasmtime::Module::new(runtime.engine(), GUEST).expect("compiles");
        let mut spec = UnitAppSpec::from_config(&serde_json::json!({}));
        spec.request_handler = "request".into();
        spec.malloc_handler = "malloc".into();
        spec.free_handler = "free".into();
        let module = UnitModule::new(runtime.unit_linker(), &module, spec).expect("links");
        let size = PoolSize {
            max,
            spare: 0,
            idle_timeout: None,
        };
        InstancePool::new(runtime.engine().clone(), module, size)
    }

    #[tokio::test]
    async fn only_released_instances_are_reused() {
        let pool = pool(1).await;
        pool.warm_up().await.expect("starts");
        assert_eq!(
            pool.counts(),
            PoolCounts {
                running: 0,
                starting: 0,
                idle: 1
            }
        );

        let lease = pool.checkout().await.expect("checkout");
        assert_eq!(pool.counts().running, 1);
        // A request abandoned mid-call drops its lease without releasing it.
        drop(lease);
        assert_eq!(
            pool.counts(),
            PoolCounts {
                running: 0,
                starting: 0,
                idle: 0
            }
        );

        pool.checkout().await.expect("a fresh instance").release();
        assert_eq!(pool.counts().idle, 1);
    }
}

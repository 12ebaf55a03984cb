//! An application's instance pool: at most `max` instances, each serving one request at
//! a time; a request waits for a free one, in a queue of bounded length. `spare`
//! instances are started up front and kept warm; idle ones beyond them are dropped after
//! `idle_timeout`. One that failed is discarded, one that served `limits.requests`
//! requests is retired, and a fresh one takes its place when needed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::Engine;

use crate::counter::Counter;

use super::instance::{UnitInstance, UnitModule};
use crate::runtime::InstanceCounts;
use crate::runtime::guest::{Guest, GuestEnd, GuestTask};
use crate::runtime::guest_counts::{self, GuestCounts};
use crate::runtime::limits::Limits;
use crate::runtime::slow_lane::SlowLane;

/// Unit's `processes`, read as instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub max: usize,
    pub spare: usize,
    pub idle_timeout: Option<Duration>,
}

impl PoolSize {
    /// `n` instances, all started and kept.
    pub fn fixed(n: usize) -> Self {
        Self {
            max: n,
            spare: n,
            idle_timeout: None,
        }
    }
}

impl Default for PoolSize {
    /// One instance, as Unit runs an app that does not set `processes`.
    fn default() -> Self {
        Self::fixed(1)
    }
}

pub struct InstancePool {
    /// What the app's guests did, counted by its name.
    counts: Arc<GuestCounts>,
    engine: Engine,
    module: UnitModule,
    size: PoolSize,
    /// Idle instances with the time each was last returned (kept only with an
    /// `idle_timeout`: a clock read per request otherwise buys nothing), most recent
    /// last. Boxed, so that taking and returning one moves a pointer, not the whole
    /// instance.
    idle: Mutex<Vec<(Box<UnitInstance>, Option<Instant>)>>,
    /// Free slots. A lease holds one without a permit object (it is forgotten, and given
    /// back when the lease drops): an owned permit would cost every request two updates of
    /// a reference count that all threads share.
    slots: Semaphore,
    limits: Limits,
    /// Where retired instances run their end hooks, out of the way of requests.
    slow_lane: Arc<SlowLane>,
    /// Requests waiting for a slot.
    waiting: AtomicUsize,
    busy: Counter,
    starting: AtomicU64,
}

/// Why a request got no instance.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0} requests are already waiting for an instance")]
    QueueFull(usize),
    #[error("starting an instance took longer than {0:?}")]
    StartTimedOut(Duration),
    #[error(transparent)]
    Start(#[from] anyhow::Error),
}

impl InstancePool {
    pub fn new(
        name: Arc<str>,
        engine: Engine,
        module: UnitModule,
        size: PoolSize,
        limits: Limits,
        slow_lane: Arc<SlowLane>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            counts: guest_counts::of(&name),
            engine,
            module,
            size,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max.max(1)),
            limits,
            slow_lane,
            waiting: AtomicUsize::new(0),
            busy: Counter::default(),
            starting: AtomicU64::new(0),
        });
        if let Some(timeout) = size.idle_timeout {
            tokio::spawn(reap_idle(Arc::downgrade(&pool), timeout));
        }
        pool
    }

    /// What the app's guests did.
    pub fn guest_counts(&self) -> &GuestCounts {
        &self.counts
    }

    /// Starts the spare instances (at least one) and keeps them idle: proves the module
    /// runs before a swap.
    pub async fn warm_up(self: &Arc<Self>) -> Result<(), CheckoutError> {
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
            .filter(|(_, since)| since.is_some_and(|since| now.duration_since(since) >= timeout))
            .count();
        let droppable = stale.min(idle.len().saturating_sub(self.size.spare));
        // The oldest come first.
        let retired = idle.drain(..droppable).map(|(i, _)| *i).collect();
        drop(idle);
        self.retire(retired);
    }

    /// Runs the end hooks (`module_end_handler`, then `free_handler`) of instances that
    /// leave the pool in good health, on the slow lane, each bounded like a start.
    fn retire(&self, instances: Vec<UnitInstance>) {
        let limit = self.limits.start_timeout();
        for instance in instances {
            let long_running = instance.long_running();
            let counts = Arc::clone(&self.counts);
            let hooks: GuestTask = Box::pin(async move {
                if tokio::time::timeout(limit, counts.timed(instance.retire()))
                    .await
                    .is_err()
                {
                    tracing::warn!("an instance's end hooks took longer than {limit:?}");
                }
                GuestEnd::Done
            });
            // End hooks are usually quick: run them at once, where the pool let go of the
            // instance, and move only long-running ones to the slow lane, as requests
            // are. Left to the slow lane, which a busy data plane starves, retiring
            // instances would pile up and hold every instance slot of the engine.
            match tokio::runtime::Handle::try_current() {
                Ok(here) => {
                    let slow_lane = Arc::clone(&self.slow_lane);
                    let hooks = Guest::new(hooks, long_running);
                    here.spawn(async move { hooks.finish(&slow_lane).await });
                }
                Err(_) => {
                    self.slow_lane.spawn(hooks);
                }
            }
        }
    }

    /// A free slot with an idle instance, if one is there right now: the common case,
    /// served without building the (large) future of the waiting path.
    pub fn try_checkout(self: &Arc<Self>) -> Option<Lease> {
        let permit = self.slots.try_acquire().ok()?;
        let Some((instance, _)) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) else {
            // No idle instance after all: the permit goes back as it drops.
            return None;
        };
        permit.forget();
        Some(self.lease(instance))
    }

    /// Waits for a free slot and returns an idle instance, or a new one. With `queue`
    /// requests already waiting, fails at once instead of waiting.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, CheckoutError> {
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = WaitingGuard::join(&self.waiting, self.limits.queue)?;
                self.slots.acquire().await.map_err(anyhow::Error::from)?
            }
        };
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .map(|(i, _)| i);
        let instance = match idle {
            Some(instance) => instance,
            None => {
                let limit = self.limits.start_timeout();
                self.starting.fetch_add(1, Ordering::Relaxed);
                // Boxed: instantiating is rare, and its future would otherwise make
                // every checkout (and every request's future) kilobytes larger.
                let started = tokio::time::timeout(
                    limit,
                    Box::pin(self.counts.timed(self.module.instantiate(&self.engine))),
                )
                .await;
                self.starting.fetch_sub(1, Ordering::Relaxed);
                Box::new(
                    started
                        .map_err(|_| CheckoutError::StartTimedOut(limit))?
                        .map_err(anyhow::Error::from)?,
                )
            }
        };
        permit.forget();
        Ok(self.lease(instance))
    }

    /// Lends `instance`, whose slot the caller has taken (and forgotten the permit of).
    fn lease(self: &Arc<Self>, instance: Box<UnitInstance>) -> Lease {
        self.busy.increment();
        Lease {
            pool: Arc::clone(self),
            instance: Some(instance),
            reusable: false,
        }
    }

    /// Every started instance runs, busy or idle, as Unit counts its processes.
    pub fn counts(&self) -> InstanceCounts {
        let idle = self.idle.lock().map_or(0, |idle| idle.len() as u64);
        let busy = self.busy.get();
        InstanceCounts {
            running: busy + idle,
            starting: self.starting.load(Ordering::Relaxed),
            idle,
            active: busy,
            queued: self.waiting.load(Ordering::Relaxed) as u64,
        }
    }
}

/// An instance on loan to one request. It goes back to the pool only through `release`,
/// once the request is known to have finished cleanly; a lease dropped any other way (a
/// guest error, or the request abandoned mid-call) discards the instance, whose state
/// can no longer be trusted.
pub struct Lease {
    pool: Arc<InstancePool>,
    instance: Option<Box<UnitInstance>>,
    reusable: bool,
}

impl Lease {
    /// What the guests of the app the instance belongs to did.
    pub fn guest_counts(&self) -> &GuestCounts {
        self.pool.guest_counts()
    }

    pub fn instance(&mut self) -> Option<&mut UnitInstance> {
        self.instance.as_deref_mut()
    }

    /// The instance, next to the counts its guest work adds to.
    pub fn instance_and_counts(&mut self) -> (Option<&mut UnitInstance>, &GuestCounts) {
        (self.instance.as_deref_mut(), &self.pool.counts)
    }

    /// Returns the instance to the pool for the next request, or retires it (its end
    /// hooks run) once it has served `limits.requests`.
    pub fn release(mut self) {
        let worn_out = self.instance.as_ref().zip(self.pool.limits.requests);
        match worn_out {
            Some((instance, most)) if instance.served() >= most => {
                self.pool
                    .retire(self.instance.take().into_iter().map(|i| *i).collect());
            }
            _ => self.reusable = true,
        }
    }
}

impl Drop for InstancePool {
    /// The pool goes when the last generation using the app is gone and its last request
    /// has ended: its idle instances retire.
    fn drop(&mut self) {
        let idle = match self.idle.get_mut() {
            Ok(idle) => std::mem::take(idle),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        self.retire(idle.into_iter().map(|(i, _)| *i).collect());
    }
}

/// A place in an app's wait queue, given up when dropped (the request was served, or
/// abandoned while waiting).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn join(waiting: &'a AtomicUsize, queue: usize) -> Result<Self, CheckoutError> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < queue).then_some(n + 1)
            })
            .map_err(CheckoutError::QueueFull)?;
        Ok(Self(waiting))
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.busy.decrement();
        if let Some(instance) = self.instance.take()
            && self.reusable
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push((
                instance,
                self.pool.size.idle_timeout.map(|_| Instant::now()),
            ));
        }
        // After the instance is back, so that a request woken by this finds it idle.
        self.pool.slots.add_permits(1);
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
    use crate::runtime::unit::spec::UnitAppSpec;

    /// The smallest module the ABI accepts: memory for the buffer, and handlers that do
    /// nothing.
    const GUEST: &str = r#"(module
        (memory (export "memory") 600)
        (func (export "request") (param i32) (result i32) i32.const 0)
        (func (export "malloc") (param i32) (result i32) i32.const 1024)
        (func (export "free") (param i32)))"#;

    async fn pool(max: usize) -> Arc<InstancePool> {
        pool_with(max, Limits::default()).await
    }

    async fn pool_with(max: usize, limits: Limits) -> Arc<InstancePool> {
        let runtime = Runtime::new().expect("runtime");
        let module = wasmtime::Module::new(runtime.engine(), GUEST).expect("compiles");
        let spec = UnitAppSpec {
            module: "guest.wat".into(),
            request_handler: "request".into(),
            malloc_handler: "malloc".into(),
            free_handler: "free".into(),
            module_init_handler: None,
            module_end_handler: None,
            request_init_handler: None,
            request_end_handler: None,
            response_end_handler: None,
            environment: Vec::new(),
            preopens: Vec::new(),
            memory_limit: Limits::default().memory,
        };
        let module = UnitModule::new(runtime.unit_linkers(), &module, spec, Arc::from("test"))
            .expect("links");
        let size = PoolSize {
            max,
            spare: 0,
            idle_timeout: None,
        };
        let lane = Arc::clone(runtime.slow_lane());
        InstancePool::new(
            Arc::from("test"),
            runtime.engine().clone(),
            module,
            size,
            limits,
            lane,
        )
    }

    #[tokio::test]
    async fn only_released_instances_are_reused() {
        let pool = pool(1).await;
        pool.warm_up().await.expect("starts");
        assert_eq!(
            pool.counts(),
            InstanceCounts {
                running: 1,
                starting: 0,
                idle: 1,
                active: 0,
                queued: 0
            }
        );

        let lease = pool.checkout().await.expect("checkout");
        assert_eq!(pool.counts().active, 1);
        assert_eq!(pool.counts().running, 1);
        // A request abandoned mid-call drops its lease without releasing it.
        drop(lease);
        assert_eq!(
            pool.counts(),
            InstanceCounts {
                running: 0,
                starting: 0,
                idle: 0,
                active: 0,
                queued: 0
            }
        );

        pool.checkout().await.expect("a fresh instance").release();
        assert_eq!(pool.counts().idle, 1);
    }

    #[tokio::test]
    async fn a_full_queue_fails_at_once() {
        let limits = Limits {
            queue: 1,
            ..Limits::default()
        };
        let pool = pool_with(1, limits).await;
        let held = pool.checkout().await.expect("the only instance");
        let waiter = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.checkout().await.map(Lease::release) }
        });
        // Let the waiter take the one place in the queue.
        while pool.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.checkout().await,
            Err(CheckoutError::QueueFull(1))
        ));
        held.release();
        waiter
            .await
            .expect("joins")
            .expect("served once a slot frees");
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn an_instance_is_retired_after_its_request_limit() {
        let limits = Limits {
            requests: Some(2),
            ..Limits::default()
        };
        let pool = pool_with(1, limits).await;
        let mut lease = pool.checkout().await.expect("checkout");
        let instance = lease.instance().expect("an instance");
        instance.count_served();
        lease.release();
        assert_eq!(pool.counts().idle, 1, "one request served: kept");

        let mut lease = pool.checkout().await.expect("checkout");
        lease.instance().expect("an instance").count_served();
        lease.release();
        assert_eq!(pool.counts().idle, 0, "two requests served: retired");
    }
}

//! The process's one wasmtime `Engine`: async execution with epoch interruption, the
//! pooling allocator with copy-on-write memory images where the machine allows it, and
//! the ticker thread that advances the epoch.

use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of guest yields and deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most instances (and so linear memories) alive at once across all apps.
const POOL_INSTANCES: u32 = 512;

/// Core instances and tables per component instance, on average: a component made by
/// Rust for `wasm32-wasip2` holds its module plus small shim modules with tables.
const CORE_PER_COMPONENT: u32 = 4;

/// Largest linear memory an instance may grow to (4 GiB, the whole wasm32 space).
const MAX_MEMORY: usize = 4 << 30;

/// Builds the engine and starts its epoch ticker; the ticker stops when the engine drops.
pub fn build() -> anyhow::Result<Engine> {
    let engine = match Engine::new(&config(true)) {
        Ok(engine) => {
            tracing::info!(
                instances = POOL_INSTANCES,
                "wasm engine uses the pooling allocator"
            );
            engine
        }
        Err(e) => {
            tracing::warn!(
                "the pooling allocator is not available on this machine ({e:#}); falling back \
                 to on-demand allocation"
            );
            Engine::new(&config(false))
                .map_err(anyhow::Error::from)
                .context("failed to create the wasm engine")?
        }
    };
    start_ticker(&engine)?;
    Ok(engine)
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.parallel_compilation(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_INSTANCES * CORE_PER_COMPONENT)
            .total_component_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * CORE_PER_COMPONENT)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY)
            // Keep a little of each freed slot resident so the next instance starts warm:
            // components get a fresh instance per request, so this is their hot path. Two
            // MiB covers a Rust `wasm32-wasip2` component's stack and data.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(128 << 10)
            // A freed slot is decommitted, and back in the free list, at once (wasmtime's
            // default; no batching). A module's memory image (a memfd) is unmapped from
            // the slots affine to it when the module drops, but only from slots in the
            // free list: one still queued for a batched decommit kept the image of a
            // module no app used any more, one descriptor per deployed build, for good.
            .decommit_batch_size(1);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the epoch every tick for as long as the engine is alive.
fn start_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .context("failed to start the epoch ticker")?;
    Ok(())
}

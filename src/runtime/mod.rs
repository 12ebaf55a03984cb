//! The Wasm runtime: one engine for the process, modules compiled once per content hash
//! and shared, per-app instance pools, and the guest contracts (`unit_abi` for Unit's
//! `wasm` type).

pub mod app;
pub mod engine;
pub mod layout;
pub mod limits;
pub mod pool;
pub mod slow_lane;
pub mod unit_abi;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::{Engine, Linker, Module};

use slow_lane::SlowLane;
use unit_abi::GuestState;

/// A module's identity: the SHA-256 of its bytes.
pub type ModuleHash = [u8; 32];

pub struct Runtime {
    engine: Engine,
    unit_linker: Linker<GuestState>,
    modules: Mutex<HashMap<ModuleHash, Module>>,
    slow_lane: Arc<SlowLane>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let engine = engine::build()?;
        let unit_linker = unit_abi::linker(&engine).map_err(anyhow::Error::from)?;
        Ok(Self {
            engine,
            unit_linker,
            modules: Mutex::new(HashMap::new()),
            slow_lane: Arc::new(SlowLane::start()?),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn unit_linker(&self) -> &Linker<GuestState> {
        &self.unit_linker
    }

    pub fn slow_lane(&self) -> &Arc<SlowLane> {
        &self.slow_lane
    }

    /// Reads a module file and returns it compiled, compiling only content not seen before.
    pub async fn load(&self, path: &Path) -> anyhow::Result<(ModuleHash, Module)> {
        let owned = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&owned))
            .await?
            .with_context(|| format!("failed to read `{}`", path.display()))?;
        let hash: ModuleHash = Sha256::digest(&bytes).into();
        if let Some(module) = self.cached(&hash) {
            return Ok((hash, module));
        }
        let engine = self.engine.clone();
        let module = tokio::task::spawn_blocking(move || Module::new(&engine, &bytes))
            .await?
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to compile `{}`", path.display()))?;
        if let Ok(mut modules) = self.modules.lock() {
            modules.insert(hash, module.clone());
        }
        Ok((hash, module))
    }

    fn cached(&self, hash: &ModuleHash) -> Option<Module> {
        self.modules.lock().ok()?.get(hash).cloned()
    }

    /// Drops compiled modules that no running generation uses.
    pub fn retain_modules(&self, in_use: &HashSet<ModuleHash>) {
        if let Ok(mut modules) = self.modules.lock() {
            modules.retain(|hash, _| in_use.contains(hash));
        }
    }
}

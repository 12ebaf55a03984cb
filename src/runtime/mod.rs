//! The Wasm runtime: one engine for the process, modules compiled once per content hash
//! and shared, per-app instance pools, and the guest contracts (`unit_abi` for Unit's
//! `wasm` type, `component` for `wasm-wasi-component`).

pub mod app;
pub mod component;
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
use wasmtime::component::Component;
use wasmtime::{Engine, Linker, Module};

use slow_lane::SlowLane;
use unit_abi::GuestState;

/// A module's identity: the SHA-256 of its bytes.
pub type ModuleHash = [u8; 32];

pub struct Runtime {
    engine: Engine,
    unit_linker: Linker<GuestState>,
    modules: Mutex<HashMap<ModuleHash, Module>>,
    component_linker: wasmtime::component::Linker<component::host::ComponentHost>,
    /// Compiled components by content hash, apart from modules: the same bytes cannot be both.
    components: Mutex<HashMap<ModuleHash, Component>>,
    slow_lane: Arc<SlowLane>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let engine = engine::build()?;
        let unit_linker = unit_abi::linker(&engine).map_err(anyhow::Error::from)?;
        let component_linker = component::host::linker(&engine)?;
        Ok(Self {
            engine,
            unit_linker,
            modules: Mutex::new(HashMap::new()),
            component_linker,
            components: Mutex::new(HashMap::new()),
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

    /// Reads a component file and returns it compiled, compiling only content not seen
    /// before; `load` for the `wasm-wasi-component` type.
    pub async fn load_component(&self, path: &Path) -> anyhow::Result<(ModuleHash, Component)> {
        let owned = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&owned))
            .await?
            .with_context(|| format!("failed to read `{}`", path.display()))?;
        let hash: ModuleHash = Sha256::digest(&bytes).into();
        let cached = self
            .components
            .lock()
            .ok()
            .and_then(|c| c.get(&hash).cloned());
        if let Some(component) = cached {
            return Ok((hash, component));
        }
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await?
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to compile the component `{}`", path.display()))?;
        if let Ok(mut components) = self.components.lock() {
            components.insert(hash, component.clone());
        }
        Ok((hash, component))
    }

    pub fn component_linker(&self) -> &wasmtime::component::Linker<component::host::ComponentHost> {
        &self.component_linker
    }

    fn cached(&self, hash: &ModuleHash) -> Option<Module> {
        self.modules.lock().ok()?.get(hash).cloned()
    }

    /// Drops compiled modules that no running generation uses.
    pub fn retain_modules(&self, in_use: &HashSet<ModuleHash>) {
        if let Ok(mut modules) = self.modules.lock() {
            modules.retain(|hash, _| in_use.contains(hash));
        }
        if let Ok(mut components) = self.components.lock() {
            components.retain(|hash, _| in_use.contains(hash));
        }
    }
}

//! The Wasm runtime: one engine for the process (`engine`), code compiled once per
//! content hash and shared while some app runs it (`code`, and `artifact_cache` on
//! disk), the guest contracts (`unit` for Unit's `wasm` type, `component` for
//! `wasm-wasi-component`) and what both share: the guest driver (`guest`) with the slow
//! lane (`slow_lane`), the WASI context (`wasi`), the limits (`limits`) and the counts
//! of what guests did: requests stopped by them or by a trap, and run time
//! (`guest_counts`).

pub mod artifact_cache;
pub mod code;
pub mod component;
pub mod engine;
pub mod guest;
pub mod guest_counts;
pub mod limits;
pub mod slow_lane;
pub mod unit;
pub mod wasi;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;

use artifact_cache::{ArtifactCache, ArtifactKind};
use code::{Code, CodeFile, CodeKind};
use slow_lane::SlowLane;
use unit::abi::UnitLinkers;

/// The application types Wharf serves, as configs name them.
pub const APPLICATION_TYPES: [&str; 2] = ["wasm", "wasm-wasi-component"];

/// A module's identity: the SHA-256 of its bytes.
pub type ModuleHash = [u8; 32];

/// What the file system says about a file: enough to tell that it has not been written
/// since, without reading it. Any write moves `ctime`, which no user can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileStamp {
    /// The file's stamp now; `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Some(Self {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
            changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// An app's instance counts, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Every started instance, idle ones included.
    pub running: u64,
    pub starting: u64,
    pub idle: u64,
    /// Requests being served.
    pub active: u64,
    /// Requests waiting for an instance (bounded by `limits.queue`).
    pub queued: u64,
}

/// Where `Runtime::load` found a module's compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Already loaded in this process (another app, or the generation before, runs it).
    Memory,
    /// The compiled-module cache in the state dir.
    Disk,
    /// Neither: compiled now.
    Compiled,
}

impl CodeSource {
    pub const ALL: [CodeSource; 3] = [Self::Memory, Self::Disk, Self::Compiled];

    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Compiled => "compiled",
        }
    }
}

/// How many loads found their code where, since start.
#[derive(Debug, Default)]
pub struct CodeLoads([AtomicU64; CodeSource::ALL.len()]);

impl CodeLoads {
    fn count(&self, source: CodeSource) {
        self.0[source as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, source: CodeSource) -> u64 {
        self.0[source as usize].load(Ordering::Relaxed)
    }
}

pub struct Runtime {
    engine: Engine,
    loads: CodeLoads,
    unit_linkers: UnitLinkers,
    /// Compiled code by kind and content hash, shared by every app that runs it. Only
    /// weakly: code no app holds any more is gone, and its entry with it.
    compiled: Mutex<HashMap<(ArtifactKind, ModuleHash), Weak<Code>>>,
    artifacts: Option<Arc<ArtifactCache>>,
    component_linker: wasmtime::component::Linker<component::host::ComponentHost>,
    slow_lane: Arc<SlowLane>,
}

impl Runtime {
    /// A runtime that compiles every module it has not seen in this process.
    pub fn new() -> anyhow::Result<Self> {
        Self::build(|_| Ok(None))
    }

    /// A runtime that also keeps compiled modules in `dir`, up to `capacity` bytes.
    pub fn with_artifact_cache(dir: &Path, capacity: u64) -> anyhow::Result<Self> {
        Self::build(|engine| {
            let cache = ArtifactCache::open(dir, engine, capacity).with_context(|| {
                format!(
                    "failed to open the compiled-module cache `{}`",
                    dir.display()
                )
            })?;
            Ok(Some(Arc::new(cache)))
        })
    }

    fn build(
        artifacts: impl FnOnce(&Engine) -> anyhow::Result<Option<Arc<ArtifactCache>>>,
    ) -> anyhow::Result<Self> {
        let engine = engine::build()?;
        let unit_linkers = UnitLinkers::new(&engine).map_err(anyhow::Error::from)?;
        let component_linker = component::host::linker(&engine)?;
        Ok(Self {
            artifacts: artifacts(&engine)?,
            engine,
            unit_linkers,
            compiled: Mutex::new(HashMap::new()),
            loads: CodeLoads::default(),
            component_linker,
            slow_lane: Arc::new(SlowLane::start()?),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn unit_linkers(&self) -> &UnitLinkers {
        &self.unit_linkers
    }

    pub fn slow_lane(&self) -> &Arc<SlowLane> {
        &self.slow_lane
    }

    pub fn code_loads(&self) -> &CodeLoads {
        &self.loads
    }

    /// Reads a module (or component) file and returns it compiled: from memory if this
    /// content is already loaded, else from the artifact cache, else compiled (and cached).
    pub async fn load<K: CodeKind>(&self, path: &Path) -> anyhow::Result<CodeFile> {
        let owned = path.to_path_buf();
        let (stamp, bytes) = tokio::task::spawn_blocking(move || {
            let stamp = FileStamp::of(&owned);
            std::fs::read(&owned).map(|bytes| (stamp, bytes))
        })
        .await?
        .with_context(|| format!("failed to read `{}`", path.display()))?;
        let hash: ModuleHash = Sha256::digest(&bytes).into();
        let key = (K::KIND, hash);
        let cached = self
            .compiled
            .lock()
            .ok()
            .and_then(|compiled| compiled.get(&key).and_then(Weak::upgrade));
        let code = match cached {
            Some(code) => {
                self.loads.count(CodeSource::Memory);
                code
            }
            None => {
                let (code, source): (K, _) =
                    self.compile_or_fetch(hash, bytes).await.with_context(|| {
                        format!("failed to compile the {} `{}`", K::NOUN, path.display())
                    })?;
                self.loads.count(source);
                let code = Arc::new(code.into_code());
                if let Ok(mut compiled) = self.compiled.lock() {
                    compiled.retain(|_, code| code.strong_count() > 0);
                    compiled.insert(key, Arc::downgrade(&code));
                }
                code
            }
        };
        Ok(CodeFile { hash, code, stamp })
    }

    /// Code from the artifact cache, or compiled and then stored there; off the async
    /// workers, as both block.
    async fn compile_or_fetch<T: CodeKind>(
        &self,
        hash: ModuleHash,
        bytes: Vec<u8>,
    ) -> anyhow::Result<(T, CodeSource)> {
        let engine = self.engine.clone();
        let artifacts = self.artifacts.clone();
        tokio::task::spawn_blocking(move || {
            let Some(artifacts) = artifacts else {
                return Ok((T::compile(&engine, &bytes)?, CodeSource::Compiled));
            };
            let started = Instant::now();
            if let Some(verified) = artifacts.get(T::KIND, &hash) {
                match T::deserialize(verified, &engine) {
                    Ok(code) => {
                        tracing::debug!(elapsed = ?started.elapsed(), "{} loaded from the cache", T::NOUN);
                        return Ok((code, CodeSource::Disk));
                    }
                    Err(e) => {
                        tracing::warn!(
                            "compiled-module cache: a verified entry did not load ({e:#}); \
                             compiling again"
                        );
                        artifacts.discard(T::KIND, &hash);
                    }
                }
            }
            let code = T::compile(&engine, &bytes)?;
            match code.serialize() {
                Ok(artifact) => artifacts.put(T::KIND, &hash, &artifact),
                Err(e) => tracing::warn!("compiled-module cache: cannot serialize: {e:#}"),
            }
            tracing::info!(elapsed = ?started.elapsed(), "{} compiled", T::NOUN);
            Ok((code, CodeSource::Compiled))
        })
        .await?
    }

    pub fn component_linker(&self) -> &wasmtime::component::Linker<component::host::ComponentHost> {
        &self.component_linker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = r#"(module (memory 1) (data (i32.const 0) "x"))"#;

    fn entries(runtime: &Runtime) -> usize {
        runtime.compiled.lock().map_or(0, |compiled| compiled.len())
    }

    #[tokio::test]
    async fn code_is_shared_while_held_and_forgotten_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b) = (dir.path().join("a.wat"), dir.path().join("b.wat"));
        std::fs::write(&a, MODULE).expect("write");
        std::fs::write(&b, MODULE.replace('x', "y")).expect("write");
        let runtime = Runtime::new().expect("runtime");

        let first = runtime.load::<wasmtime::Module>(&a).await.expect("loads");
        let again = runtime.load::<wasmtime::Module>(&a).await.expect("loads");
        assert!(Arc::ptr_eq(&first.code, &again.code), "one compiled copy");
        drop((first, again));

        // Nothing holds `a`'s code any more: loading another module forgets it.
        let other = runtime.load::<wasmtime::Module>(&b).await.expect("loads");
        assert_eq!(entries(&runtime), 1);
        drop(other);
    }
}

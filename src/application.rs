//! A configured application as a generation runs it: the running app of its type (`wasm`
//! or `wasm-wasi-component`), plus
//! what decides whether a change, a restart or `watch` must replace it: its config, the
//! hash of its code, and the stamp of its file when that code was read.
//!
//! Every way an app comes to run goes through here: a change keeps an app whose config
//! and code are unchanged (with its warm instances) and starts the others; a restart
//! loads the file again and starts fresh instances; `watch` does the same only when the
//! file's bytes changed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use wasmtime::Module;
use wasmtime::component::Component;

use crate::config::model::{AppKind, AppSpec};
use crate::error::ApplyError;
use crate::http::{Request, Response};
use crate::runtime::app::WasmApp;
use crate::runtime::component::ComponentApp;
use crate::runtime::pool::PoolCounts;
use crate::runtime::{FileStamp, Loaded, ModuleHash, Runtime};

pub struct Application {
    running: Running,
    spec: AppSpec,
    hash: ModuleHash,
    /// The file's stamp when its bytes were last seen to be `hash`'s.
    stamp: Mutex<Option<FileStamp>>,
}

/// The running app, by type.
enum Running {
    Wasm(WasmApp),
    Component(ComponentApp),
}

/// An app's file, read and compiled for its type.
pub enum LoadedCode {
    Module(Loaded<Module>),
    Component(Loaded<Component>),
}

impl LoadedCode {
    pub fn hash(&self) -> ModuleHash {
        match self {
            Self::Module(loaded) => loaded.hash,
            Self::Component(loaded) => loaded.hash,
        }
    }

    fn stamp(&self) -> Option<FileStamp> {
        match self {
            Self::Module(loaded) => loaded.stamp,
            Self::Component(loaded) => loaded.stamp,
        }
    }
}

impl Application {
    /// The app a generation runs for `spec`: `previous` (the one running under this
    /// name) if neither its config nor the file's bytes changed, else a new one. The file
    /// is not even read when its stamp shows it was not written since it was loaded.
    pub async fn build(
        runtime: &Runtime,
        name: &str,
        spec: &AppSpec,
        previous: Option<&Arc<Application>>,
    ) -> Result<Arc<Self>, ApplyError> {
        let previous = previous.filter(|old| old.spec == *spec);
        if let Some(old) = previous
            && old.file_unchanged()
        {
            return Ok(Arc::clone(old));
        }
        let code = Self::load(runtime, name, spec).await?;
        if let Some(old) = previous
            && old.keeps(&code)
        {
            return Ok(Arc::clone(old));
        }
        Self::start(runtime, name, spec, code).await
    }

    /// Reads and compiles (or fetches from a cache) the file `spec` names.
    pub async fn load(
        runtime: &Runtime,
        name: &str,
        spec: &AppSpec,
    ) -> Result<LoadedCode, ApplyError> {
        let path = spec.file();
        let loaded = match spec.kind {
            AppKind::Wasm(_) => runtime.load(path).await.map(LoadedCode::Module),
            AppKind::Component(_) => runtime.load(path).await.map(LoadedCode::Component),
        };
        loaded.map_err(|e| failed(name, &e))
    }

    /// Starts an app on loaded code, with fresh instances.
    pub async fn start(
        runtime: &Runtime,
        name: &str,
        spec: &AppSpec,
        code: LoadedCode,
    ) -> Result<Arc<Self>, ApplyError> {
        let (hash, stamp) = (code.hash(), code.stamp());
        let running = match (code, &spec.kind) {
            (LoadedCode::Module(loaded), AppKind::Wasm(unit)) => {
                WasmApp::build(runtime, name, unit, spec.limits, spec.processes, loaded)
                    .await
                    .map(Running::Wasm)
            }
            (LoadedCode::Component(loaded), AppKind::Component(component)) => {
                ComponentApp::build(runtime, name, component, spec.limits, loaded)
                    .await
                    .map(Running::Component)
            }
            _ => Err(anyhow::anyhow!("the code loaded is not of the app's type")),
        };
        let running = running.map_err(|e| failed(name, &e))?;
        Ok(Arc::new(Self {
            running,
            spec: spec.clone(),
            hash,
            stamp: Mutex::new(stamp),
        }))
    }

    /// Whether this app already runs `code`; if so, the file's new stamp is recorded
    /// (it was written, or only touched, but holds the same bytes).
    pub fn keeps(&self, code: &LoadedCode) -> bool {
        let same = code.hash() == self.hash;
        if same && let Ok(mut stamp) = self.stamp.lock() {
            *stamp = code.stamp();
        }
        same
    }

    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    pub fn code_hash(&self) -> ModuleHash {
        self.hash
    }

    /// The module (or component) file, as configured.
    pub fn file(&self) -> &Path {
        self.spec.file()
    }

    /// The file's stamp when it was last seen to hold this app's code.
    pub fn stamp(&self) -> Option<FileStamp> {
        self.stamp.lock().map_or(None, |stamp| *stamp)
    }

    /// Whether the file is provably as it was loaded: not written since.
    pub fn file_unchanged(&self) -> bool {
        let recorded = self.stamp();
        recorded.is_some() && FileStamp::of(self.file()) == recorded
    }

    pub fn counts(&self) -> PoolCounts {
        match &self.running {
            Running::Wasm(app) => app.counts(),
            Running::Component(app) => app.counts(),
        }
    }

    pub async fn serve(&self, request: Request) -> Response {
        match &self.running {
            Running::Wasm(app) => app.serve(request).await,
            Running::Component(app) => app.serve(request).await,
        }
    }
}

fn failed(name: &str, e: &anyhow::Error) -> ApplyError {
    ApplyError(format!("application \"{name}\": {e:#}"))
}

//! A configured application as a generation runs it: the running app of its type (`wasm`
//! or `wasm-wasi-component`), plus
//! what decides whether a change, a restart or `watch` must replace it: its config, the
//! hash of its code, and the stamp of its file when that code was read.
//!
//! Every way an app comes to run goes through here: a change keeps an app whose config
//! and code are unchanged (with its warm instances) and starts the others; a restart
//! loads the file again and starts fresh instances; `watch` does the same only when the
//! file's bytes changed.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::future::Either;
use wasmtime::Module;
use wasmtime::component::Component;

use crate::config::model::{AppKind, AppSpec};
use crate::error::ApplyError;
use crate::http::{self, Request, Response};
use crate::runtime::code::{Code, CodeFile};
use crate::runtime::component::ComponentApp;
use crate::runtime::unit::WasmApp;
use crate::runtime::{FileStamp, InstanceCounts, ModuleHash, Runtime};

pub struct Application {
    runner: Runner,
    spec: AppSpec,
    hash: ModuleHash,
    /// The file's stamp when its bytes were last seen to be `hash`'s.
    stamp: Mutex<Option<FileStamp>>,
    /// The compiled code, held so that it stays shared (not compiled again) for as long
    /// as this app runs it, and no longer.
    _code: Arc<Code>,
}

/// What serves the app's requests, by type.
enum Runner {
    Wasm(WasmApp),
    Component(ComponentApp),
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
    ) -> Result<CodeFile, ApplyError> {
        let path = spec.file();
        let loaded = match spec.kind {
            AppKind::Wasm(_) => runtime.load::<Module>(path).await,
            AppKind::Component(_) => runtime.load::<Component>(path).await,
        };
        loaded.map_err(|e| failed(name, &e))
    }

    /// Starts an app on loaded code, with fresh instances.
    pub async fn start(
        runtime: &Runtime,
        name: &str,
        spec: &AppSpec,
        file: CodeFile,
    ) -> Result<Arc<Self>, ApplyError> {
        let runner = match (&*file.code, &spec.kind) {
            (Code::Module(module), AppKind::Wasm(unit)) => {
                WasmApp::build(runtime, name, unit, spec.limits, spec.processes, module)
                    .await
                    .map(Runner::Wasm)
            }
            (Code::Component(component), AppKind::Component(app)) => {
                ComponentApp::build(runtime, name, app, spec.limits, component)
                    .await
                    .map(Runner::Component)
            }
            _ => Err(anyhow::anyhow!("the file holds code of another type")),
        };
        let runner = runner.map_err(|e| failed(name, &e))?;
        Ok(Arc::new(Self {
            runner,
            spec: spec.clone(),
            hash: file.hash,
            stamp: Mutex::new(file.stamp),
            _code: file.code,
        }))
    }

    /// Whether this app already runs `code`; if so, the file's new stamp is recorded
    /// (it was written, or only touched, but holds the same bytes).
    pub fn keeps(&self, file: &CodeFile) -> bool {
        let same = file.hash == self.hash;
        if same && let Ok(mut stamp) = self.stamp.lock() {
            *stamp = file.stamp;
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

    pub fn counts(&self) -> InstanceCounts {
        match &self.runner {
            Runner::Wasm(app) => app.counts(),
            Runner::Component(app) => app.counts(),
        }
    }

    /// Serves a request. Its body is read first, before the app's runner takes an
    /// instance for it, when it is small (`http::READ_AHEAD`) or chunked to a `wasm`
    /// app (whose ABI announces the whole length up front, so it is gathered anyway): a
    /// client that sends its body slowly then holds no instance. A body that fails to
    /// arrive is answered for the client (400, 408, 413) without troubling a guest.
    ///
    /// A plain function returning the runner's own future for a request without a body
    /// (the common case), so that no layer here holds the request beside it.
    pub fn serve(&self, request: Request) -> impl Future<Output = Response> + Send + '_ {
        if request.body.is_known_empty() {
            return Either::Left(self.run(request));
        }
        let read_ahead: Pin<Box<dyn Future<Output = Response> + Send + '_>> =
            Box::pin(self.read_ahead_and_run(request));
        Either::Right(read_ahead)
    }

    fn run(&self, request: Request) -> impl Future<Output = Response> + Send + '_ {
        match &self.runner {
            Runner::Wasm(app) => Either::Left(app.serve(request)),
            Runner::Component(app) => Either::Right(app.serve(request)),
        }
    }

    async fn read_ahead_and_run(&self, mut request: Request) -> Response {
        let bound = match &self.runner {
            Runner::Wasm(_) if request.body.is_chunked() => u64::MAX,
            _ => http::READ_AHEAD,
        };
        if let Err(e) = request.body.read_ahead(bound).await {
            tracing::debug!("request body: {e}");
            return http::error_response(e.status());
        }
        self.run(request).await
    }
}

fn failed(name: &str, e: &anyhow::Error) -> ApplyError {
    ApplyError(format!("application \"{name}\": {e:#}"))
}

//! A component's host side for one request: the store's data (WASI and `wasi:http`
//! contexts, resource table, memory budget, epoch bookkeeping), the linker that provides
//! `wasi:http/proxy` plus the `wasi:cli` command interfaces (as `wasmtime serve -S cli`
//! does), and the policy that denies outbound HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::log_stream::GuestLog;
use super::spec::ComponentSpec;
use crate::runtime::limits::MemoryBudget;
use crate::runtime::slow_lane::LONG_RUNNING_TICKS;

/// The data of a request's store.
pub struct ComponentHost {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    budget: MemoryBudget,
    /// Epoch ticks the guest has run across.
    ticks: u32,
    /// Set once the guest has run `LONG_RUNNING_TICKS`.
    long_running: Arc<AtomicBool>,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl ComponentHost {
    pub fn long_running(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.long_running)
    }
}

/// The interfaces a component may import: those of `wasi:http/proxy` and the rest of
/// WASI p2 (cli environment, stdio and exit, filesystem, ...), whose capabilities are
/// only what the app's config grants.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<ComponentHost>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to link WASI p2")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to link wasi:http")?;
    Ok(linker)
}

/// A store for one request: the app's environment and preopens only, stdout and stderr
/// to the log, memory bounded by `limits.memory`, and a yield at every epoch tick.
pub fn store(
    engine: &Engine,
    app: &Arc<str>,
    spec: &ComponentSpec,
) -> anyhow::Result<Store<ComponentHost>> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&spec.environment)
        .stdout(GuestLog::new(Arc::clone(app), "stdout"))
        .stderr(GuestLog::new(Arc::clone(app), "stderr"));
    for dir in &spec.preopens {
        let perms = if dir.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to open the directory `{}`", dir.host.display()))?;
    }
    let host = ComponentHost {
        table: ResourceTable::new(),
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        hooks: DenyOutbound {
            app: Arc::clone(app),
        },
        budget: MemoryBudget::new(spec.memory_limit),
        ticks: 0,
        long_running: Arc::new(AtomicBool::new(false)),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.budget);
    store.set_epoch_deadline(1);
    // As for `wasm` apps: yield through tokio at every tick so other requests run, and
    // note when the guest turns out to be long-running.
    store.epoch_deadline_callback(|mut store| {
        let host = store.data_mut();
        host.ticks = host.ticks.saturating_add(1);
        if host.ticks >= LONG_RUNNING_TICKS {
            host.long_running.store(true, Ordering::Relaxed);
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    Ok(store)
}

/// Outbound HTTP is denied until an allow-list exists: the guest gets
/// `error-code.HTTP-request-denied` and the log says what it tried.
struct DenyOutbound {
    app: Arc<str>,
}

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        tracing::warn!(
            app = %self.app,
            "outbound request to `{}` denied: outbound HTTP is not allowed",
            request.uri()
        );
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

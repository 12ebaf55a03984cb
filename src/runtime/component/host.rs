//! A component's host side for one request: the store's data (WASI and `wasi:http`
//! contexts, resource table, memory budget, epoch bookkeeping), the linker that provides
//! `wasi:http/proxy` plus the `wasi:cli` command interfaces (as `wasmtime serve -S cli`
//! does), and the policy that denies outbound HTTP.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::spec::ComponentSpec;
use crate::runtime::guest::{self, CpuClock};
use crate::runtime::limits::MemoryBudget;
use crate::runtime::wasi;

/// The data of a request's store.
pub struct ComponentHost {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    budget: MemoryBudget,
    clock: CpuClock,
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
        self.clock.long_running()
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
    let wasi = wasi::context(app, &spec.environment, &spec.preopens)?.build();
    let host = ComponentHost {
        table: ResourceTable::new(),
        wasi,
        http: WasiHttpCtx::new(),
        hooks: DenyOutbound {
            app: Arc::clone(app),
        },
        budget: MemoryBudget::new(spec.memory_limit),
        clock: CpuClock::default(),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.budget);
    guest::yield_at_every_tick(&mut store, |host| &mut host.clock);
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

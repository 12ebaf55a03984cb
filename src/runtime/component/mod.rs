//! `wasm-wasi-component` applications: components built for `wasi:http/proxy` 0.2,
//! served through `wasmtime-wasi-http` with a fresh instance per request, made from a
//! component compiled, linked and pre-instantiated once (`ProxyPre`) on the process's
//! pooling allocator.
//!
//! Request and response bodies stream both ways. A guest that fails (trap, panic, exit,
//! no response, a broken body) costs only its own request: the client gets 500, or a
//! cut-short body if the head was already out, and the log says why, tagged with the app.

pub mod exchange;
pub mod host;
pub mod log_stream;
pub mod spec;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Context;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use self::host::ComponentHost;
use self::spec::ComponentSpec;
use super::guest_task::{self, GuestEnd, GuestTask, TimedOut, run_until_progress, within};
use super::limits::Limits;
use super::pool::PoolCounts;
use super::slow_lane::SlowLane;
use super::{Loaded, Runtime};
use crate::http::{self, Request, Response};

pub struct ComponentApp {
    name: Arc<str>,
    spec: ComponentSpec,
    pre: ProxyPre<ComponentHost>,
    engine: Engine,
    limits: Limits,
    slow_lane: Arc<SlowLane>,
    /// Requests whose guest is running.
    active: Arc<AtomicU64>,
}

/// What the guest answered through its response outparam.
type Head = Result<::http::Response<HyperOutgoingBody>, ErrorCode>;

/// What happened first while running a guest on the data plane.
type Progress = guest_task::Progress<Head>;

impl ComponentApp {
    /// Links the loaded component against `wasi:http/proxy` and the WASI interfaces, and
    /// instantiates it once, so a component that cannot serve fails the change that
    /// configured it.
    pub async fn build(
        runtime: &Runtime,
        name: &str,
        spec: &ComponentSpec,
        limits: Limits,
        loaded: Loaded<Component>,
    ) -> anyhow::Result<Self> {
        let spec = spec.clone();
        let component = loaded.code;
        let path = spec.component.display().to_string();
        let pre = runtime
            .component_linker()
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{path}` cannot be linked"))?;
        let pre = ProxyPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{path}` is not a wasi:http/proxy component"))?;
        let name: Arc<str> = Arc::from(name);
        let engine = runtime.engine().clone();
        // One instantiation now: a missing preopen or a start function that fails shows
        // here rather than on the first request.
        let mut store = host::store(&engine, &name, &spec)?;
        let start = pre.instantiate_async(&mut store);
        tokio::time::timeout(limits.start_timeout(), start)
            .await
            .map_err(|_| anyhow::anyhow!("`{path}` took too long to start"))?
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{path}` failed to start"))?;
        Ok(Self {
            name,
            spec,
            pre,
            engine,
            limits,
            slow_lane: Arc::clone(runtime.slow_lane()),
            active: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Requests running; a component keeps no idle instances.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            running: self.active.load(Ordering::Relaxed),
            starting: 0,
            idle: 0,
        }
    }

    /// Serves one request on a fresh instance. A request still running at
    /// `limits.timeout` is stopped inside the guest; the client gets 503 if no head was
    /// sent yet, else a cut-short body.
    pub async fn serve(&self, request: Request) -> Response {
        let deadline = self.limits.timeout.map(|t| Instant::now() + t);
        let request = match exchange::incoming(request) {
            Ok(request) => request,
            Err(e) => {
                tracing::info!(app = %self.name, "request refused: {e}");
                return http::error_response(400);
            }
        };
        let mut store = match host::store(&self.engine, &self.name, &self.spec) {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(app = %self.name, "no instance could be prepared: {e:#}");
                return http::error_response(503);
            }
        };
        let long_running = store.data().long_running();
        let (head_tx, mut head_rx) = oneshot::channel();
        let handles = {
            let mut view = store.data_mut().http();
            view.new_incoming_request(Scheme::Http, request)
                .and_then(|req| Ok((req, view.new_response_outparam(head_tx)?)))
        };
        let (req, out) = match handles {
            Ok(handles) => handles,
            Err(e) => {
                tracing::error!(app = %self.name, "the request could not be handed over: {e:#}");
                return http::error_response(500);
            }
        };
        let pre = self.pre.clone();
        let name = Arc::clone(&self.name);
        let timeout = self.limits.timeout;
        let active = ActiveRequest::start(&self.active);
        let mut guest: GuestTask = Box::pin(async move {
            let _active = active;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            // On time-out the future is dropped mid-call: wasmtime unwinds the guest at
            // its next epoch yield, and dropping the store frees the instance.
            match within(deadline, run).await {
                Ok(Ok(())) => GuestEnd::Done,
                Ok(Err(e)) => {
                    let e = anyhow::Error::from(e);
                    tracing::warn!(app = %name, "request failed in the guest: {e:#}");
                    GuestEnd::Failed
                }
                Err(TimedOut) => {
                    tracing::warn!(
                        app = %name,
                        "request stopped after limits.timeout ({timeout:?})"
                    );
                    GuestEnd::TimedOut
                }
            }
        });
        // As for `wasm` apps: run the guest right here until it answers, and move it to
        // the slow lane if it keeps the CPU busy first.
        let poll_head = |cx: &mut Context<'_>| Pin::new(&mut head_rx).poll(cx).map(Result::ok);
        let (head, rest) = match run_until_progress(&mut guest, poll_head, &long_running).await {
            Progress::Ended(end) => (head_rx.try_recv().ok(), Rest::Ended(end)),
            Progress::Head(head) => (head, Rest::Running(guest)),
            Progress::LongRunning => {
                let mut task = self.slow_lane.spawn(guest);
                tokio::select! {
                    biased;
                    end = &mut task => {
                        (head_rx.try_recv().ok(), Rest::Ended(end.unwrap_or(GuestEnd::Failed)))
                    }
                    head = &mut head_rx => {
                        let rest: GuestTask =
                            Box::pin(async move { task.await.unwrap_or(GuestEnd::Failed) });
                        (head.ok(), Rest::Running(rest))
                    }
                }
            }
        };
        self.respond(head, rest).await
    }

    /// The response for what the guest answered, with its body forwarded as it comes.
    async fn respond(&self, head: Option<Head>, rest: Rest) -> Response {
        let response = match head {
            Some(Ok(response)) => response,
            Some(Err(code)) => {
                tracing::warn!(app = %self.name, "the guest answered with an error: {code:?}");
                spawn_rest(rest);
                return http::error_response(500);
            }
            None => {
                let end = match rest {
                    Rest::Ended(end) => end,
                    // The guest dropped the outparam and runs on: finish it, then answer.
                    Rest::Running(guest) => guest.await,
                };
                return match end {
                    GuestEnd::Done => {
                        tracing::warn!(
                            app = %self.name,
                            "the guest returned without setting a response"
                        );
                        http::error_response(500)
                    }
                    GuestEnd::Failed => http::error_response(500),
                    GuestEnd::TimedOut => http::error_response(503),
                };
            }
        };
        let (parts, source) = response.into_parts();
        let guest = match rest {
            Rest::Ended(end) => Ok(end),
            Rest::Running(guest) => Err(guest),
        };
        let body = exchange::forward(Arc::clone(&self.name), source, guest);
        Response {
            status: parts.status.as_u16(),
            headers: exchange::response_headers(&parts.headers),
            body,
        }
    }
}

/// The guest after its response head: ended, or still running.
enum Rest {
    Ended(GuestEnd),
    Running(GuestTask),
}

/// Lets a guest that still runs finish on its own.
fn spawn_rest(rest: Rest) {
    if let Rest::Running(guest) = rest {
        exchange::finish_on_its_own(guest);
    }
}

/// Counts a request as active for as long as it lives.
struct ActiveRequest(Arc<AtomicU64>);

impl ActiveRequest {
    fn start(active: &Arc<AtomicU64>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(active))
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

//! `wasm-wasi-component` applications: components built for `wasi:http/proxy` 0.2,
//! served through `wasmtime-wasi-http` with a fresh instance per request, made from a
//! component compiled, linked and pre-instantiated once (`ProxyPre`) on the process's
//! pooling allocator.
//!
//! Request and response bodies stream both ways. A guest that fails (trap, panic, exit,
//! no response, a broken body) costs only its own request: the client gets 500, or a
//! cut-short body if the head was already out, and the log says why, tagged with the app.

pub mod host;
pub mod spec;
pub mod wasi_http;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::sync::oneshot;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use self::host::ComponentHost;
use self::spec::ComponentSpec;
use super::guest::{self, Guest, GuestEnd, GuestTask, HeadSource, Rest};
use super::guest_counts::{self, GuestCounts};
use super::limits::Limits;
use super::slow_lane::SlowLane;
use super::{InstanceCounts, Runtime};
use crate::http::{self, Request, Response};

pub struct ComponentApp {
    name: Arc<str>,
    /// What its guests did, counted by its name.
    counts: Arc<GuestCounts>,
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

impl HeadSource for oneshot::Receiver<Head> {
    type Head = Head;

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<Head>> {
        Pin::new(self).poll(cx).map(Result::ok)
    }

    fn take_head(&mut self) -> Option<Head> {
        self.try_recv().ok()
    }
}

impl ComponentApp {
    /// Links the loaded component against `wasi:http/proxy` and the WASI interfaces, and
    /// instantiates it once, so a component that cannot serve fails the change that
    /// configured it.
    pub async fn build(
        runtime: &Runtime,
        name: &str,
        spec: &ComponentSpec,
        limits: Limits,
        component: &Component,
    ) -> anyhow::Result<Self> {
        let spec = spec.clone();
        let path = spec.component.display().to_string();
        let pre = runtime
            .component_linker()
            .instantiate_pre(component)
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
            counts: guest_counts::of(&name),
            name,
            spec,
            pre,
            engine,
            limits,
            slow_lane: Arc::clone(runtime.slow_lane()),
            active: Arc::new(AtomicU64::new(0)),
        })
    }

    /// One instance per request being served; a component keeps no idle instances,
    /// and no request waits for one.
    pub fn counts(&self) -> InstanceCounts {
        let active = self.active.load(Ordering::Relaxed);
        InstanceCounts {
            running: active,
            starting: 0,
            idle: 0,
            active,
            queued: 0,
        }
    }

    /// Serves one request on a fresh instance. A request still running at
    /// `limits.timeout` is stopped inside the guest; the client gets 503 if no head was
    /// sent yet, else a cut-short body.
    pub async fn serve(&self, request: Request) -> Response {
        let deadline = self.limits.deadline();
        let request = match wasi_http::incoming(request) {
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
        let counts = Arc::clone(&self.counts);
        let timeout = self.limits.timeout;
        let active = ActiveRequest::start(&self.active);
        let task: GuestTask = Box::pin(async move {
            let _active = active;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            // Dropping the store after a time-out frees the instance.
            match guest::bounded(deadline, counts.timed(run)).await {
                Ok(()) => GuestEnd::Done,
                Err(stopped) => {
                    stopped.report(&counts, timeout);
                    stopped.end()
                }
            }
        });
        match Guest::new(task, long_running)
            .until_head(&mut head_rx, &self.slow_lane)
            .await
        {
            Ok((head, rest)) => self.respond(head, rest),
            Err(end) => guest::answer_without_head(&self.name, end),
        }
    }

    /// The response for what the guest answered, with its body forwarded as it comes.
    fn respond(&self, head: Head, rest: Rest) -> Response {
        let response = match head {
            Ok(response) => response,
            Err(code) => {
                tracing::warn!(app = %self.name, "the guest answered with an error: {code:?}");
                rest.detach(&self.slow_lane);
                return http::error_response(500);
            }
        };
        let (parts, source) = response.into_parts();
        if !guest::GUEST_STATUSES.contains(&parts.status.as_u16()) {
            tracing::warn!(app = %self.name, status = parts.status.as_u16(), "the guest answered with an invalid status");
            rest.detach(&self.slow_lane);
            return http::error_response(500);
        }
        let guest = match rest {
            Rest::Ended(end) => Ok(end),
            running => {
                // Polled by the writer: here while it is quick, then on the slow lane.
                let slow_lane = Arc::clone(&self.slow_lane);
                let rest: GuestTask = Box::pin(async move { running.finish(&slow_lane).await });
                Err(rest)
            }
        };
        let body = wasi_http::forward(Arc::clone(&self.name), source, guest);
        Response {
            status: parts.status.as_u16(),
            headers: crate::http::fields_of(&parts.headers),
            body,
        }
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

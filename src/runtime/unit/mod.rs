//! NGINX Unit's `wasm` application type: a running app (its linked module and instance
//! pool) and how one HTTP request becomes one request to a guest instance through Unit's
//! ABI.
//!
//! - `spec`: the app's settings; `pool`: its instances; `instance`: one instance's life
//!   and requests; `abi`: the host functions; `layout`: the ABI's byte layouts; `body`:
//!   the request body as the guest reads it.

pub mod abi;
pub mod body;
pub mod instance;
pub mod layout;
pub mod pool;
pub mod spec;

use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use wasmtime::Module;

use self::body::BodySource;
use self::instance::{UnitInstance, UnitModule};
use self::layout::RequestHead;
use self::pool::{CheckoutError, InstancePool, PoolSize};
use self::spec::UnitAppSpec;
use super::guest::{self, Guest, GuestEnd, GuestTask, HeadSource, Stopped, TimedOut, within};
use super::guest_counts::StopReason;
use super::limits::Limits;
use super::slow_lane::SlowLane;
use super::{InstanceCounts, Runtime};
use crate::http::host::push_ip;
use crate::http::pipe::{PipeReader, ResponseHead};
use crate::http::push_decimal;
use crate::http::{self, Request, Response};

pub struct WasmApp {
    /// For log lines (the pool has it too, for the guest's side of a request).
    name: Arc<str>,
    pool: Arc<InstancePool>,
    limits: Limits,
    slow_lane: Arc<SlowLane>,
}

impl HeadSource for PipeReader {
    type Head = ResponseHead;

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Option<ResponseHead>> {
        PipeReader::poll_head(self, cx)
    }

    fn take_head(&mut self) -> Option<ResponseHead> {
        PipeReader::take_head(self)
    }
}

impl WasmApp {
    /// Links the loaded module, checks its exports and starts its spare instances (at
    /// least one), so that a module that cannot serve fails the change that configured it.
    pub async fn build(
        runtime: &Runtime,
        name: &str,
        spec: &UnitAppSpec,
        limits: Limits,
        size: PoolSize,
        module: &Module,
    ) -> anyhow::Result<Self> {
        let module_path = spec.module.display().to_string();
        let name: Arc<str> = Arc::from(name);
        let unit = UnitModule::new(
            runtime.unit_linkers(),
            module,
            spec.clone(),
            Arc::clone(&name),
        )
        .map_err(anyhow::Error::from)
        .with_context(|| format!("`{module_path}`"))?;
        let slow_lane = Arc::clone(runtime.slow_lane());
        let pool = InstancePool::new(
            Arc::clone(&name),
            runtime.engine().clone(),
            unit,
            size,
            limits,
            Arc::clone(&slow_lane),
        );
        pool.warm_up()
            .await
            .with_context(|| format!("`{module_path}` failed to start"))?;
        Ok(Self {
            name,
            pool,
            limits,
            slow_lane,
        })
    }

    pub fn counts(&self) -> InstanceCounts {
        self.pool.counts()
    }

    /// Serves one request on a pooled instance; the response streams as the guest writes it.
    /// A request still running at `limits.timeout` (waiting for an instance included) is
    /// stopped inside the guest and its instance discarded; the client gets 503 if no
    /// head was sent yet, else a truncated body.
    pub async fn serve(&self, request: Request) -> Response {
        let deadline = self.limits.deadline();
        // An idle instance is taken at once; only waiting (or starting one) needs the
        // checkout's future, boxed so that it does not swell this one.
        let checkout = match self.pool.try_checkout() {
            Some(lease) => Ok(Ok(lease)),
            None => Box::pin(within(deadline, self.pool.checkout())).await,
        };
        let mut lease = match checkout {
            Ok(Ok(lease)) => lease,
            Ok(Err(e @ CheckoutError::QueueFull(_))) => {
                tracing::warn!(app = %self.name, "request refused: {e}");
                return http::error_response(503);
            }
            Ok(Err(e)) => {
                tracing::error!(app = %self.name, "no instance could be started: {e:#}");
                return http::error_response(503);
            }
            Err(TimedOut) => {
                tracing::warn!(app = %self.name, "request timed out waiting for an instance");
                self.pool.guest_counts().count_stop(StopReason::Timeout);
                return http::error_response(503);
            }
        };
        let Some(instance) = lease.instance() else {
            return http::error_response(500);
        };
        let long_running = instance.long_running();
        let mut response = instance.open_reply();
        let timeout = self.limits.timeout;
        let task: GuestTask = Box::pin(async move {
            let served = async {
                match lease.instance_and_counts() {
                    (Some(instance), counts) => counts.timed(run(instance, request)).await,
                    (None, _) => Ok(()),
                }
            };
            // On time-out the unreleased lease discards the instance the guest was
            // stopped in.
            let stopped = match within(deadline, served).await {
                Ok(Ok(())) => {
                    lease.release();
                    return GuestEnd::Done;
                }
                Ok(Err(RunFailure::Body(e))) => Stopped::Body(e),
                Ok(Err(RunFailure::Guest(e))) => Stopped::failed(&e),
                Err(TimedOut) => Stopped::TimedOut,
            };
            stopped.report(lease.guest_counts(), timeout);
            let unfinished = lease.instance().and_then(UnitInstance::take_reply);
            drop(lease);
            if let Some(reply) = unfinished {
                reply.abort(stopped.why());
            }
            stopped.end()
        });
        match Guest::new(task, long_running)
            .until_head(&mut response, &self.slow_lane)
            .await
        {
            Ok((head, rest)) => {
                rest.detach(&self.slow_lane);
                Response {
                    status: head.status,
                    headers: head.headers,
                    body: response.into_body(),
                }
            }
            Err(end) => guest::answer_without_head(&self.name, end),
        }
    }
}

/// Why a request's run through a guest failed.
enum RunFailure {
    /// The client's body failed (the guest saw it end early).
    Body(http::BodyError),
    Guest(anyhow::Error),
}

async fn run(instance: &mut UnitInstance, request: Request) -> Result<(), RunFailure> {
    let Request {
        method,
        target,
        version,
        headers,
        host,
        remote,
        local,
        tls,
        mut body,
    } = request;
    // Unit's quirk: a plain target's path keeps its `?query`.
    let path = if target.is_plain() {
        target.raw()
    } else {
        target.path()
    };
    // The three address texts share one buffer: one allocation, no `fmt` machinery.
    let mut addresses = Vec::with_capacity(64);
    let remote = push_ip(&mut addresses, remote);
    let local_addr = push_ip(&mut addresses, local);
    let port_start = addresses.len();
    if let Some(local) = local {
        push_decimal(&mut addresses, u64::from(local.port()));
    }
    let local_port = port_start..addresses.len();
    let server_name: &[u8] = if host.is_empty() { b"localhost" } else { &host };
    // The ABI announces the whole length up front, so a chunked body is gathered first
    // (bounded by the listener's max_body_size).
    let mut source = match body.content_length() {
        Some(_) => BodySource::Stream(&mut body),
        None => BodySource::gather(&mut body)
            .await
            .map_err(RunFailure::Body)?,
    };
    let head = RequestHead {
        method: &method,
        version: version.as_str().as_bytes(),
        path,
        query: target.query(),
        remote: &addresses[remote],
        local_addr: &addresses[local_addr],
        local_port: &addresses[local_port],
        server_name,
        headers: &headers,
        content_len: source.len(),
        tls,
    };
    let served = instance.serve(&head, &mut source).await;
    drop(source);
    match (served, body.failure()) {
        (Ok(()), _) => Ok(()),
        // The guest failed because its body did: the client's failure, not the guest's.
        (Err(_), Some(e)) => Err(RunFailure::Body(e)),
        (Err(e), None) => Err(RunFailure::Guest(e.0)),
    }
}

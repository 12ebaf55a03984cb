//! A running `wasm` application: its compiled module, its instance pool, and how one HTTP
//! request becomes one exchange with a guest instance.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::time::Instant;

use super::guest_task::{self, GuestEnd, GuestTask, TimedOut, finish, run_until_progress, within};
use super::layout::RequestHead;
use super::limits::Limits;
use super::pool::{CheckoutError, InstancePool, PoolCounts, PoolSize};
use super::slow_lane::SlowLane;
use super::unit_abi::{UnitAppSpec, UnitInstance, UnitModule};
use super::{LoadedModule, Runtime};
use crate::http::host::push_ip;
use crate::http::pipe::ResponseHead;
use crate::http::push_decimal;
use crate::http::{self, BodyError, Request, Response};

pub struct WasmApp {
    /// For log lines (the pool has it too, for the guest's side of a request).
    name: Arc<str>,
    pool: Arc<InstancePool>,
    limits: Limits,
    slow_lane: Arc<SlowLane>,
}

/// What happened first while running a guest on the data plane.
type Progress = guest_task::Progress<ResponseHead>;

impl WasmApp {
    /// Links the loaded module, checks its exports and starts its spare instances (at
    /// least one), so that a module that cannot serve fails the change that configured it.
    pub async fn build(
        runtime: &Runtime,
        name: &str,
        spec: &UnitAppSpec,
        limits: Limits,
        size: PoolSize,
        loaded: LoadedModule,
    ) -> anyhow::Result<Self> {
        let module_path = spec.module.display().to_string();
        let unit = UnitModule::new(runtime.unit_linkers(), &loaded.code, spec.clone())
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{module_path}`"))?;
        let slow_lane = Arc::clone(runtime.slow_lane());
        let name: Arc<str> = Arc::from(name);
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

    pub fn counts(&self) -> PoolCounts {
        self.pool.counts()
    }

    /// Serves one request on a pooled instance; the response streams as the guest writes it.
    /// A request still running at `limits.timeout` (waiting for an instance included) is
    /// stopped inside the guest and its instance discarded; the client gets 503 if no
    /// head was sent yet, else a truncated body.
    pub async fn serve(&self, request: Request) -> Response {
        let deadline = self.limits.timeout.map(|t| Instant::now() + t);
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
                return http::error_response(503);
            }
        };
        let Some(instance) = lease.instance() else {
            return http::error_response(500);
        };
        let long_running = instance.long_running();
        let mut response = instance.open_exchange();
        let timeout = self.limits.timeout;
        let mut guest: GuestTask = Box::pin(async move {
            let exchange = async {
                match lease.instance() {
                    Some(instance) => run(instance, request).await,
                    None => Ok(()),
                }
            };
            // On time-out the exchange's future is dropped mid-call: wasmtime unwinds the
            // guest at its next epoch yield, and the unreleased lease discards the instance.
            let (end, why) = match within(deadline, exchange).await {
                Ok(Ok(())) => {
                    lease.release();
                    return GuestEnd::Done;
                }
                Ok(Err(e)) => {
                    tracing::warn!(app = %lease.app(), "request failed in the guest: {e:#}");
                    (GuestEnd::Failed, e.to_string())
                }
                Err(TimedOut) => {
                    tracing::warn!(
                        app = %lease.app(),
                        "request stopped after limits.timeout ({timeout:?}); its instance is discarded"
                    );
                    (GuestEnd::TimedOut, "the request timed out".to_owned())
                }
            };
            let unfinished = lease.instance().and_then(UnitInstance::take_exchange);
            drop(lease);
            if let Some(exchange) = unfinished {
                exchange.abort(why);
            }
            end
        });
        // Most guests answer in one go: run the guest right here, and hand it to a task
        // of its own only if it is still going once the head is out (a streamed or slow
        // response), so a small response costs no task and no cross-task wake-ups. A
        // guest that keeps the CPU busy moves to the slow lane instead.
        let head = match run_until_progress(&mut guest, |cx| response.poll_head(cx), &long_running)
            .await
        {
            Progress::Ended(end) => response.take_head().ok_or(end),
            Progress::Head(head) => {
                tokio::spawn(finish(guest, long_running, Arc::clone(&self.slow_lane)));
                head.ok_or(GuestEnd::Failed)
            }
            Progress::LongRunning => {
                let mut task = self.slow_lane.spawn(guest);
                let first = tokio::select! {
                    biased;
                    end = &mut task => Err(end.unwrap_or(GuestEnd::Failed)),
                    head = poll_fn(|cx| response.poll_head(cx)) => Ok(head),
                };
                match first {
                    Err(end) => response.take_head().ok_or(end),
                    Ok(Some(head)) => Ok(head),
                    // The guest ended without a head; its task says how.
                    Ok(None) => Err(task.await.unwrap_or(GuestEnd::Failed)),
                }
            }
        };
        match head {
            Ok(head) => Response {
                status: head.status,
                headers: head.headers,
                body: response.into_body(),
            },
            Err(GuestEnd::TimedOut) => http::error_response(503),
            Err(GuestEnd::Done | GuestEnd::Failed) => http::error_response(500),
        }
    }
}

async fn run(instance: &mut UnitInstance, request: Request) -> anyhow::Result<()> {
    let Request {
        method,
        target,
        version,
        headers,
        host,
        remote,
        local,
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
        None => BodySource::gather(&mut body).await?,
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
        tls: false,
    };
    instance.serve(&head, &mut source).await?;
    Ok(())
}

/// A request body as the guest consumes it.
pub enum BodySource<'b> {
    Stream(&'b mut http::RequestBody),
    Buffered { pieces: VecDeque<Bytes>, len: u64 },
}

impl BodySource<'_> {
    async fn gather(body: &mut http::RequestBody) -> Result<BodySource<'static>, BodyError> {
        let mut pieces = VecDeque::new();
        let mut len = 0;
        while let Some(piece) = body.chunk().await? {
            len += piece.len() as u64;
            pieces.push_back(piece);
        }
        Ok(BodySource::Buffered { pieces, len })
    }

    fn len(&self) -> u64 {
        match self {
            Self::Stream(body) => body.content_length().unwrap_or(0),
            Self::Buffered { len, .. } => *len,
        }
    }

    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            Self::Stream(body) => body.chunk().await,
            Self::Buffered { pieces, .. } => Ok(pieces.pop_front()),
        }
    }
}

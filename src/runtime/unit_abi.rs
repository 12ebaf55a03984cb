//! Unit's `wasm` guest ABI: the `env` host functions, an instance's lifecycle, and one
//! request's exchange with the guest.
//!
//! An instance serves one request at a time and keeps its state between requests, as in
//! Unit. Each request gets an `Exchange`: the status the guest set, whether the head went
//! out, and the channels to the client. Host functions read the guest's structs through
//! `layout`, which checks every offset against linear memory as it is now (memory may
//! have grown); a violation traps the guest, and a trapped instance is never reused.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use wasmtime::error::Context as _;
use wasmtime::{
    Caller, Engine, InstancePre, Linker, Memory, Module, Store, TypedFunc, UpdateDeadline,
};
use wasmtime::{bail, format_err};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::app::BodySource;
use super::layout::{self, ALLOCATION_SIZE, AbiError, BUFFER_SIZE, HeaderFields, RequestHead};
use super::limits::MemoryBudget;
use super::slow_lane::LONG_RUNNING_TICKS;
use crate::http::pipe::{Pipe, PipeReader, PushError, ResponseHead};

/// What a request hands the guest and how the guest's answer reaches the client.
pub struct Exchange {
    status: i32,
    /// `None` once closed.
    pipe: Option<Pipe>,
    head_sent: bool,
    /// Set at `response_end`, which completes the response for the client while the
    /// guest's hooks still run.
    ended: bool,
}

impl Exchange {
    fn new(pipe: Pipe) -> Self {
        Self {
            status: 200,
            pipe: Some(pipe),
            head_sent: false,
            ended: false,
        }
    }

    /// Ends a response the guest left unfinished: no head yet means the reader answers
    /// with an error page; a head already sent means the client sees a truncated body.
    pub fn abort(mut self, why: String) {
        if let Some(pipe) = self.pipe.take() {
            pipe.abort(why);
        }
    }

    /// Completes the response (unless it is unfinished; see `Drop`) and gives back the
    /// pipe for the next request.
    fn close(mut self) -> Option<Pipe> {
        let pipe = self.pipe.take()?;
        finish(&pipe, self.ended);
        Some(pipe)
    }

    fn head_sent(&self) -> bool {
        self.head_sent
    }

    fn pipe(&self) -> wasmtime::Result<&Pipe> {
        self.pipe
            .as_ref()
            .ok_or_else(|| format_err!("the guest sent a response outside of a request"))
    }
}

impl Drop for Exchange {
    /// An exchange dropped with its response neither ended nor aborted (a panic while the
    /// guest ran) must not look complete to the client.
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            finish(&pipe, self.ended);
        }
    }
}

fn finish(pipe: &Pipe, ended: bool) {
    if ended {
        pipe.end();
    } else {
        pipe.abort("the response was not finished".into());
    }
}

/// Per-instance host state.
pub struct GuestState {
    wasi: WasiP1Ctx,
    memory: Option<Memory>,
    /// Guest address of the shared buffer.
    buffer: u32,
    response_end_hook: Option<TypedFunc<(), ()>>,
    exchange: Option<Exchange>,
    memory_budget: MemoryBudget,
    /// Epoch ticks the current request's guest code has run across.
    ticks: u32,
    /// Set once the current request has run `LONG_RUNNING_TICKS`.
    long_running: Arc<AtomicBool>,
}

/// A `wasm` application's module, handlers and guest environment (`config::model`
/// reads them from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAppSpec {
    pub module: PathBuf,
    pub request_handler: String,
    pub malloc_handler: String,
    pub free_handler: String,
    pub module_init_handler: Option<String>,
    pub module_end_handler: Option<String>,
    pub request_init_handler: Option<String>,
    pub request_end_handler: Option<String>,
    pub response_end_handler: Option<String>,
    pub environment: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// `limits.memory`: bytes of linear memory an instance may have.
    pub memory_limit: usize,
}

/// A host directory the guest sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub readonly: bool,
}

/// The host side of the ABI, linked twice: `response_end` must be an async host
/// function only when it calls back into the guest (its `response_end_handler`). Without
/// that hook it is synchronous, which saves every request a boxed future and a trip
/// through the fiber's blocking context.
pub struct UnitLinkers {
    plain: Linker<GuestState>,
    with_response_end_hook: Linker<GuestState>,
}

impl UnitLinkers {
    pub fn new(engine: &Engine) -> wasmtime::Result<Self> {
        Ok(Self {
            plain: linker(engine, ResponseEnd::Plain)?,
            with_response_end_hook: linker(engine, ResponseEnd::CallsHook)?,
        })
    }

    fn for_spec(&self, spec: &UnitAppSpec) -> &Linker<GuestState> {
        match spec.response_end_handler {
            Some(_) => &self.with_response_end_hook,
            None => &self.plain,
        }
    }
}

#[derive(Clone, Copy)]
enum ResponseEnd {
    Plain,
    CallsHook,
}

/// Defines the five `env` functions and WASI preview 1.
fn linker(engine: &Engine, response_end: ResponseEnd) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut GuestState| &mut state.wasi)?;
    linker.func_wrap("env", "nxt_wasm_get_init_mem_size", || BUFFER_SIZE)?;
    linker.func_wrap(
        "env",
        "nxt_wasm_set_resp_status",
        |mut caller: Caller<'_, GuestState>, status: u32| -> wasmtime::Result<()> {
            exchange(&mut caller)?.status = status.cast_signed();
            Ok(())
        },
    )?;
    // Synchronous: it never waits, and an async host call costs a boxed future and a
    // trip through the fiber's blocking context.
    linker.func_wrap(
        "env",
        "nxt_wasm_send_headers",
        |mut caller: Caller<'_, GuestState>, offset: u32| -> wasmtime::Result<()> {
            let headers = {
                let (memory, buffer) = guest_memory(&mut caller)?;
                let at = u64::from(buffer) + u64::from(offset);
                copy_fields(layout::read_headers(memory, at)?)?
            };
            send_head(&mut caller, headers)
        },
    )?;
    linker.func_wrap_async(
        "env",
        "nxt_wasm_send_response",
        |mut caller: Caller<'_, GuestState>, (offset,): (u32,)| {
            Box::new(async move {
                let piece = {
                    let (memory, buffer) = guest_memory(&mut caller)?;
                    let at = u64::from(buffer) + u64::from(offset);
                    Bytes::copy_from_slice(layout::read_body_piece(memory, at)?)
                };
                let exchange = exchange(&mut caller)?;
                if !exchange.head_sent() {
                    send_head(&mut caller, Vec::new())?;
                }
                // Usually there is room: no pipe clone and no waiting future then.
                let piece = match exchange_body(&mut caller)?.try_push(piece) {
                    Ok(()) => return Ok(()),
                    Err(PushError::Gone) => bail!("the client went away"),
                    Err(PushError::Full(piece)) => piece,
                };
                let pipe = exchange_body(&mut caller)?.clone();
                pipe.push(piece).await?;
                Ok(())
            })
        },
    )?;
    match response_end {
        ResponseEnd::Plain => linker.func_wrap(
            "env",
            "nxt_wasm_response_end",
            |mut caller: Caller<'_, GuestState>| end_response(&mut caller),
        )?,
        ResponseEnd::CallsHook => linker.func_wrap_async(
            "env",
            "nxt_wasm_response_end",
            |mut caller: Caller<'_, GuestState>, (): ()| {
                Box::new(async move {
                    end_response(&mut caller)?;
                    // Unit runs this hook while the guest's request handler is still on
                    // the stack.
                    if let Some(hook) = caller.data().response_end_hook.clone() {
                        hook.call_async(&mut caller, ()).await?;
                    }
                    Ok(())
                })
            },
        )?,
    };
    Ok(linker)
}

/// `response_end`: completes the response for the client (a guest that sent no head
/// gets an empty `text/plain` one).
fn end_response(caller: &mut Caller<'_, GuestState>) -> wasmtime::Result<()> {
    if !exchange(caller)?.head_sent() {
        let text_plain = (
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(b"text/plain"),
        );
        send_head(caller, vec![text_plain])?;
    }
    let exchange = exchange(caller)?;
    exchange.ended = true;
    exchange.pipe()?.end();
    Ok(())
}

fn exchange<'c>(caller: &'c mut Caller<'_, GuestState>) -> wasmtime::Result<&'c mut Exchange> {
    caller
        .data_mut()
        .exchange
        .as_mut()
        .ok_or_else(|| format_err!("the guest sent a response outside of a request"))
}

fn exchange_body<'c>(caller: &'c mut Caller<'_, GuestState>) -> wasmtime::Result<&'c Pipe> {
    let exchange = exchange(caller)?;
    if exchange.ended {
        bail!("the guest sent a body after ending its response");
    }
    exchange.pipe()
}

/// Copies header fields out of guest memory into one shared allocation, checking each
/// field's bounds on the way.
fn copy_fields(fields: HeaderFields<'_>) -> Result<Vec<(Bytes, Bytes)>, AbiError> {
    let mut size = 0;
    for field in fields.iter() {
        let (name, value) = field?;
        size += name.len() + value.len();
    }
    let mut all = BytesMut::with_capacity(size);
    for (name, value) in fields.iter().flatten() {
        all.extend_from_slice(name);
        all.extend_from_slice(value);
    }
    let all = all.freeze();
    let mut copied = Vec::with_capacity(fields.count());
    let mut at = 0;
    for (name, value) in fields.iter().flatten() {
        let name_end = at + name.len();
        let value_end = name_end + value.len();
        copied.push((all.slice(at..name_end), all.slice(name_end..value_end)));
        at = value_end;
    }
    Ok(copied)
}

/// The guest's memory as it is now, and the buffer's address in it.
fn guest_memory<'c>(caller: &'c mut Caller<'_, GuestState>) -> wasmtime::Result<(&'c [u8], u32)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| format_err!("the guest has no memory"))?;
    let buffer = caller.data().buffer;
    Ok((memory.data(caller), buffer))
}

fn send_head(
    caller: &mut Caller<'_, GuestState>,
    headers: Vec<(Bytes, Bytes)>,
) -> wasmtime::Result<()> {
    let exchange = exchange(caller)?;
    let status = u16::try_from(exchange.status)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| format_err!("the guest set the invalid status {}", exchange.status))?;
    if exchange.head_sent {
        bail!("the guest sent the response headers twice");
    }
    exchange.head_sent = true;
    exchange.pipe()?.send_head(ResponseHead { status, headers });
    Ok(())
}

/// The exports an instance is driven through.
#[derive(Clone)]
struct Exports {
    request: TypedFunc<u32, i32>,
    free: TypedFunc<u32, ()>,
    module_end: Option<TypedFunc<(), ()>>,
    request_init: Option<TypedFunc<(), ()>>,
    request_end: Option<TypedFunc<(), ()>>,
}

/// A compiled, linked module ready to instantiate.
pub struct UnitModule {
    pre: InstancePre<GuestState>,
    spec: UnitAppSpec,
}

impl UnitModule {
    /// Links the module and checks that it has every export the config names, with the
    /// right signature, before any instance exists.
    pub fn new(
        linkers: &UnitLinkers,
        module: &Module,
        spec: UnitAppSpec,
    ) -> wasmtime::Result<Self> {
        let pre = linkers
            .for_spec(&spec)
            .instantiate_pre(module)
            .context("the module imports something Wharf does not provide")?;
        let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
        let mut required = vec![
            spec.request_handler.as_str(),
            spec.malloc_handler.as_str(),
            spec.free_handler.as_str(),
            "memory",
        ];
        required.extend(
            [
                &spec.module_init_handler,
                &spec.module_end_handler,
                &spec.request_init_handler,
                &spec.request_end_handler,
                &spec.response_end_handler,
            ]
            .into_iter()
            .flatten()
            .map(String::as_str),
        );
        if let Some(missing) = required.iter().find(|name| !exports.contains(name)) {
            bail!("the module has no export `{missing}`");
        }
        Ok(Self { pre, spec })
    }

    /// Instantiates, runs `_initialize` if exported, allocates the shared buffer and runs
    /// `module_init_handler`.
    pub async fn instantiate(&self, engine: &Engine) -> wasmtime::Result<UnitInstance> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr();
        for (key, value) in &self.spec.environment {
            wasi.env(key, value);
        }
        for dir in &self.spec.preopens {
            let perms = if dir.readonly {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .with_context(|| {
                    format!("failed to open the directory `{}`", dir.host.display())
                })?;
        }
        let state = GuestState {
            wasi: wasi.build_p1(),
            memory: None,
            buffer: 0,
            response_end_hook: None,
            exchange: None,
            memory_budget: MemoryBudget::new(self.spec.memory_limit),
            ticks: 0,
            long_running: Arc::new(AtomicBool::new(false)),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.memory_budget);
        // Yield to other requests at every epoch tick instead of holding a thread. Through
        // tokio's `yield_now`, so the task goes behind the others and the I/O driver
        // runs: a plain self-wake would put it straight back in the worker's LIFO slot.
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            state.ticks = state.ticks.saturating_add(1);
            if state.ticks >= LONG_RUNNING_TICKS {
                state.long_running.store(true, Ordering::Relaxed);
            }
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let instance = self.pre.instantiate_async(&mut store).await?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| format_err!("the module exports no memory named `memory`"))?;
        let spec = &self.spec;
        let typed = |store: &mut Store<GuestState>, name: &str| {
            instance.get_typed_func::<(), ()>(store, name)
        };
        let optional = |store: &mut Store<GuestState>, name: &Option<String>| {
            name.as_deref().map(|n| typed(store, n)).transpose()
        };
        let exports = Exports {
            request: instance.get_typed_func(&mut store, &spec.request_handler)?,
            free: instance.get_typed_func(&mut store, &spec.free_handler)?,
            module_end: optional(&mut store, &spec.module_end_handler)?,
            request_init: optional(&mut store, &spec.request_init_handler)?,
            request_end: optional(&mut store, &spec.request_end_handler)?,
        };
        let malloc: TypedFunc<u32, u32> =
            instance.get_typed_func(&mut store, &spec.malloc_handler)?;
        let module_init = optional(&mut store, &spec.module_init_handler)?;
        store.data_mut().response_end_hook = optional(&mut store, &spec.response_end_handler)?;
        store.data_mut().memory = Some(memory);

        if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            initialize
                .call_async(&mut store, ())
                .await
                .context("`_initialize` failed")?;
        }
        let buffer = malloc
            .call_async(&mut store, ALLOCATION_SIZE)
            .await
            .with_context(|| format!("`{}` failed", spec.malloc_handler))?;
        let end = u64::from(buffer) + u64::from(ALLOCATION_SIZE);
        if buffer == 0 || end > memory.data_size(&store) as u64 {
            bail!(
                "`{}` returned an unusable buffer address {buffer}",
                spec.malloc_handler
            );
        }
        store.data_mut().buffer = buffer;
        if let Some(init) = module_init {
            init.call_async(&mut store, ()).await.with_context(|| {
                format!(
                    "`{}` failed",
                    spec.module_init_handler.as_deref().unwrap_or_default()
                )
            })?;
        }
        Ok(UnitInstance {
            store,
            memory,
            buffer,
            exports,
            served: 0,
            spare_pipe: None,
        })
    }
}

/// One live instance.
pub struct UnitInstance {
    store: Store<GuestState>,
    memory: Memory,
    buffer: u32,
    exports: Exports,
    /// Requests this instance has been given.
    served: u64,
    /// The last request's pipe, kept for the next one.
    spare_pipe: Option<Pipe>,
}

/// A request failed inside the guest; the instance must not be reused.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct GuestFailure(pub anyhow::Error);

impl UnitInstance {
    /// Prepares the next request's exchange; its response comes out of the reader, as
    /// the guest produces it.
    pub fn open_exchange(&mut self) -> PipeReader {
        let (pipe, reader) = self.spare_pipe.take().map_or_else(Pipe::new, Pipe::recycle);
        self.store.data_mut().exchange = Some(Exchange::new(pipe));
        reader
    }

    /// Runs one request through the guest (its exchange opened first): hooks, the head
    /// and body written into the buffer chunk by chunk, `request_handler` once per chunk.
    pub async fn serve(
        &mut self,
        head: &RequestHead<'_>,
        body: &mut BodySource<'_>,
    ) -> Result<(), GuestFailure> {
        self.count_served();
        self.start_counting_ticks();
        let result = self.run_request(head, body).await;
        // (Hooks are called by reference: cloning a `TypedFunc` clones its type, which
        // costs atomic reference counting on every request.)
        let end_hook = match &self.exports.request_end {
            Some(hook) => hook
                .call_async(&mut self.store, ())
                .await
                .context("`request_end_handler` failed"),
            None => Ok(()),
        };
        // On failure the exchange stays in the store, for the caller to abort.
        result.and(end_hook).map_err(|e| GuestFailure(e.into()))?;
        match self.take_exchange() {
            // Returning without `response_end` after the head ends the response.
            Some(mut exchange) if exchange.ended || exchange.head_sent() => {
                exchange.ended = true;
                self.spare_pipe = exchange.close();
                Ok(())
            }
            _ => Err(GuestFailure(anyhow::anyhow!(
                "the guest returned without sending a response"
            ))),
        }
    }

    async fn run_request(
        &mut self,
        head: &RequestHead<'_>,
        body: &mut BodySource<'_>,
    ) -> wasmtime::Result<()> {
        if let Some(hook) = &self.exports.request_init {
            hook.call_async(&mut self.store, ())
                .await
                .context("`request_init_handler` failed")?;
        }
        let content_len = head.content_len;
        let mut pending = Bytes::new();
        let first_at = head.encoded_len();
        let sent = self
            .fill(
                first_at,
                head.first_body_room(),
                body,
                &mut pending,
                content_len,
            )
            .await?;
        head.write(self.buffer_mut()?, sent)?;
        let mut total = sent as u64;
        self.call_request_handler().await?;
        while total < content_len && !self.response_ended() {
            let sent = self
                .fill(
                    layout::REQUEST_HEADER_SIZE,
                    layout::MAX_BODY_CHUNK,
                    body,
                    &mut pending,
                    content_len - total,
                )
                .await?;
            if sent == 0 {
                bail!("the request body ended early");
            }
            total += sent as u64;
            layout::describe_chunk(self.buffer_mut()?, sent, total)?;
            self.call_request_handler().await?;
        }
        Ok(())
    }

    /// Raised once the current request's guest has run for `LONG_RUNNING_TICKS`.
    pub fn long_running(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.store.data().long_running)
    }

    /// The exchange of a request that did not finish cleanly.
    pub fn take_exchange(&mut self) -> Option<Exchange> {
        self.store.data_mut().exchange.take()
    }

    /// Requests this instance has been given, for `limits.requests`.
    pub fn served(&self) -> u64 {
        self.served
    }

    pub(crate) fn count_served(&mut self) {
        self.served += 1;
    }

    fn response_ended(&self) -> bool {
        self.store.data().exchange.as_ref().is_some_and(|e| e.ended)
    }

    async fn call_request_handler(&mut self) -> wasmtime::Result<()> {
        let status = self
            .exports
            .request
            .call_async(&mut self.store, self.buffer)
            .await?;
        if status != 0 {
            bail!("the request handler returned the error {status}");
        }
        Ok(())
    }

    /// Copies up to `room` body bytes (at most `remaining`) to buffer offset `at`.
    async fn fill(
        &mut self,
        at: usize,
        room: usize,
        body: &mut BodySource<'_>,
        pending: &mut Bytes,
        remaining: u64,
    ) -> wasmtime::Result<usize> {
        let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(room);
        let mut filled = 0;
        while filled < want {
            if pending.is_empty() {
                match body.chunk().await? {
                    Some(chunk) => *pending = chunk,
                    None => break,
                }
            }
            let take = pending.len().min(want - filled);
            let piece = pending.split_to(take);
            let buf = self.buffer_mut()?;
            buf[at + filled..at + filled + take].copy_from_slice(&piece);
            filled += take;
        }
        Ok(filled)
    }

    /// The shared buffer, checked against memory as it is now.
    fn buffer_mut(&mut self) -> wasmtime::Result<&mut [u8]> {
        let start = self.buffer as usize;
        let end = start + BUFFER_SIZE as usize;
        self.memory
            .data_mut(&mut self.store)
            .get_mut(start..end)
            .ok_or_else(|| format_err!("the shared buffer lies outside the guest's memory"))
    }

    /// Counts the guest's epoch ticks (towards being long-running) from now, not from
    /// whenever this instance last ran.
    fn start_counting_ticks(&mut self) {
        let state = self.store.data_mut();
        state.ticks = 0;
        state.long_running.store(false, Ordering::Relaxed);
        self.store.set_epoch_deadline(1);
    }

    /// Runs `module_end_handler` and frees the buffer: the end of a retired instance.
    pub async fn retire(mut self) {
        self.start_counting_ticks();
        if let Some(hook) = self.exports.module_end.clone()
            && let Err(e) = hook.call_async(&mut self.store, ()).await
        {
            tracing::warn!("`module_end_handler` failed: {e:#}");
        }
        let free = self.exports.free.clone();
        if let Err(e) = free.call_async(&mut self.store, self.buffer).await {
            tracing::warn!("the free handler failed: {e:#}");
        }
    }
}

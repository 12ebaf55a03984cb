//! An instance of a `wasm` application's module: linked once per app (`UnitModule`),
//! instantiated per pool slot, and driven through one request at a time, as in Unit:
//! an instance keeps its state between requests.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use wasmtime::error::Context as _;
use wasmtime::{Engine, InstancePre, Memory, Module, Store, TypedFunc};
use wasmtime::{bail, format_err};

use super::abi::{GuestState, Reply, UnitLinkers};
use super::body::BodySource;
use super::layout::{self, ALLOCATION_SIZE, BUFFER_SIZE, RequestHead};
use super::spec::UnitAppSpec;
use crate::http::pipe::{Pipe, PipeReader};
use crate::runtime::guest::{self, CpuClock};
use crate::runtime::limits::MemoryBudget;
use crate::runtime::wasi;

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
    /// The app's name, which the guest's output is tagged with.
    app: Arc<str>,
}

impl UnitModule {
    /// Links the module and checks that it has every export the config names, with the
    /// right signature, before any instance exists.
    pub fn new(
        linkers: &UnitLinkers,
        module: &Module,
        spec: UnitAppSpec,
        app: Arc<str>,
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
        Ok(Self { pre, spec, app })
    }

    /// Instantiates, runs `_initialize` if exported, allocates the shared buffer and runs
    /// `module_init_handler`.
    pub async fn instantiate(&self, engine: &Engine) -> wasmtime::Result<UnitInstance> {
        let wasi = wasi::context(&self.app, &self.spec.environment, &self.spec.preopens)
            .map_err(wasmtime::Error::from_anyhow)?
            .build_p1();
        let state = GuestState {
            wasi,
            memory: None,
            buffer: 0,
            response_end_hook: None,
            reply: None,
            memory_budget: MemoryBudget::new(self.spec.memory_limit),
            clock: CpuClock::default(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.memory_budget);
        guest::yield_at_every_tick(&mut store, |state| &mut state.clock);
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
    /// Prepares the next request's reply; its response comes out of the reader, as the
    /// guest produces it.
    pub fn open_reply(&mut self) -> PipeReader {
        let (pipe, reader) = self.spare_pipe.take().map_or_else(Pipe::new, Pipe::recycle);
        self.store.data_mut().reply = Some(Reply::new(pipe));
        reader
    }

    /// Runs one request through the guest (its reply opened first): hooks, the head
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
        // On failure the reply stays in the store, for the caller to abort.
        result.and(end_hook).map_err(|e| GuestFailure(e.into()))?;
        match self.take_reply() {
            // Returning without `response_end` after the head ends the response.
            Some(mut reply) if reply.ended || reply.head_sent() => {
                reply.ended = true;
                self.spare_pipe = reply.close();
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
        self.store.data().clock.long_running()
    }

    /// The reply of a request that did not finish cleanly.
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.store.data_mut().reply.take()
    }

    /// Requests this instance has been given, for `limits.requests`.
    pub fn served(&self) -> u64 {
        self.served
    }

    pub(crate) fn count_served(&mut self) {
        self.served += 1;
    }

    fn response_ended(&self) -> bool {
        self.store.data().reply.as_ref().is_some_and(|r| r.ended)
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
        self.store.data_mut().clock.restart();
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

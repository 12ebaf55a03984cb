//! Unit's `wasm` guest ABI, the host side: the five `env` functions (with WASI preview 1)
//! and the state they work on, one request's `Reply` above all.
//!
//! Host functions read the guest's structs through `layout`, which checks every offset
//! against linear memory as it is now (memory may have grown); a violation traps the
//! guest, and a trapped instance is never reused.

use bytes::{Bytes, BytesMut};
use wasmtime::{Caller, Engine, Linker, Memory, TypedFunc};
use wasmtime::{bail, format_err};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::layout::{self, AbiError, BUFFER_SIZE, HeaderFields};
use super::spec::UnitAppSpec;
use crate::http::pipe::{Pipe, PushError, ResponseHead};
use crate::runtime::guest::{CpuClock, GUEST_STATUSES};
use crate::runtime::limits::MemoryBudget;

/// One request's answer as the guest builds it: the status it set, whether the head went
/// out, and the pipe to the client.
pub struct Reply {
    status: i32,
    /// `None` once closed.
    pipe: Option<Pipe>,
    head_sent: bool,
    /// Set at `response_end`, which completes the response for the client while the
    /// guest's hooks still run.
    pub(super) ended: bool,
}

impl Reply {
    pub(super) fn new(pipe: Pipe) -> Self {
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
    pub(super) fn close(mut self) -> Option<Pipe> {
        let pipe = self.pipe.take()?;
        finish(&pipe, self.ended);
        Some(pipe)
    }

    pub(super) fn head_sent(&self) -> bool {
        self.head_sent
    }

    fn pipe(&self) -> wasmtime::Result<&Pipe> {
        self.pipe
            .as_ref()
            .ok_or_else(|| format_err!("the guest sent a response outside of a request"))
    }
}

impl Drop for Reply {
    /// A reply dropped with its response neither ended nor aborted (a panic while the
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
    pub(super) wasi: WasiP1Ctx,
    pub(super) memory: Option<Memory>,
    /// Guest address of the shared buffer.
    pub(super) buffer: u32,
    pub(super) response_end_hook: Option<TypedFunc<(), ()>>,
    /// The current request's reply.
    pub(super) reply: Option<Reply>,
    pub(super) memory_budget: MemoryBudget,
    pub(super) clock: CpuClock,
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

    pub(super) fn for_spec(&self, spec: &UnitAppSpec) -> &Linker<GuestState> {
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
            reply(&mut caller)?.status = status.cast_signed();
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
                let reply = reply(&mut caller)?;
                if !reply.head_sent() {
                    send_head(&mut caller, Vec::new())?;
                }
                // Usually there is room: no pipe clone and no waiting future then.
                let piece = match reply_body(&mut caller)?.try_push(piece) {
                    Ok(()) => return Ok(()),
                    Err(PushError::Gone) => bail!("the client went away"),
                    Err(PushError::Full(piece)) => piece,
                };
                let pipe = reply_body(&mut caller)?.clone();
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
    if !reply(caller)?.head_sent() {
        let text_plain = (
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(b"text/plain"),
        );
        send_head(caller, vec![text_plain])?;
    }
    let reply = reply(caller)?;
    reply.ended = true;
    reply.pipe()?.end();
    Ok(())
}

fn reply<'c>(caller: &'c mut Caller<'_, GuestState>) -> wasmtime::Result<&'c mut Reply> {
    caller
        .data_mut()
        .reply
        .as_mut()
        .ok_or_else(|| format_err!("the guest sent a response outside of a request"))
}

fn reply_body<'c>(caller: &'c mut Caller<'_, GuestState>) -> wasmtime::Result<&'c Pipe> {
    let reply = reply(caller)?;
    if reply.ended {
        bail!("the guest sent a body after ending its response");
    }
    reply.pipe()
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
    let reply = reply(caller)?;
    let status = u16::try_from(reply.status)
        .ok()
        .filter(|s| GUEST_STATUSES.contains(s))
        .ok_or_else(|| format_err!("the guest set the invalid status {}", reply.status))?;
    if reply.head_sent {
        bail!("the guest sent the response headers twice");
    }
    reply.head_sent = true;
    reply.pipe()?.send_head(ResponseHead { status, headers });
    Ok(())
}

//! `upload-reflector`: answers with the request body, under the request's `Content-Type`
//! (`application/octet-stream` if it has none) and a `Content-Length` equal to the
//! request's. Modelled on Unit's `rust-upload-reflector` (nginx/unit-wasm
//! `examples/rust/upload-reflector`).
//!
//! A body larger than the shared buffer (32 MiB) reaches the module over several calls to
//! the request handler; each call sends its chunk straight back, so the module never holds
//! more than one chunk, whatever the size of the body. (Unit's example copies the whole
//! body into guest memory first.)
//!
//! Exports: `luw_request_handler`, `luw_module_end_handler` (frees the chunk buffer), plus
//! `luw_malloc_handler` / `luw_free_handler` from the library. No hook is needed: a new
//! request is recognised by its first call.

use std::ffi::{CStr, CString};
use std::ptr::null_mut;

use unit_wasm::rusty::*;

const DEFAULT_CONTENT_TYPE: &CStr = c"application/octet-stream";

static mut CTX: luw_ctx_t = UWR_CTX_INITIALIZER();

/// Holds the current chunk while the response is written over the shared buffer;
/// `init mem size` bytes, the most the host writes in one call.
static mut CHUNK_BUF: *mut u8 = null_mut();

/// Body bytes of the current request not reflected yet.
static mut BODY_LEFT: u64 = 0;

#[unsafe(no_mangle)]
pub extern "C" fn luw_module_end_handler() {
    // SAFETY: guests are single-threaded; nothing else holds the buffer.
    unsafe {
        if !CHUNK_BUF.is_null() {
            uwr_free(CHUNK_BUF);
            CHUNK_BUF = null_mut();
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_handler(addr: *mut u8) -> i32 {
    let ctx = &raw mut CTX;
    let first = is_first_call(addr);
    // SAFETY: single-threaded guest.
    let mut left = unsafe { BODY_LEFT };
    if !first && left == 0 {
        // The response is complete (or was never started): nothing to do.
        return 0;
    }
    let buf = chunk_buf();
    if buf.is_null() {
        return -1;
    }

    // The headers and the response body go at offset 0, over the request. The host
    // rewrites content_off and content_sent on every call, so this call's chunk can be
    // found from `addr` whichever call this is.
    uwr_init_ctx(ctx, addr, 0);
    let n = uwr_get_http_content_sent(ctx).min(uwr_mem_get_init_size() as usize);
    // SAFETY: the chunk lies in the shared buffer; `buf` holds init-mem-size bytes and
    // does not overlap it.
    unsafe { std::ptr::copy_nonoverlapping(uwr_get_http_content(ctx), buf, n) };

    if first {
        left = uwr_get_http_content_len(ctx);
        // SAFETY: the library returns NULL or a NUL-terminated string in the request.
        let content_type = unsafe {
            let value = luw_http_hdr_get_value(ctx, c"Content-Type".as_ptr());
            if value.is_null() || *value == 0 {
                DEFAULT_CONTENT_TYPE.to_owned()
            } else {
                // Owned: the headers are about to be written over the request.
                CString::from(CStr::from_ptr(value))
            }
        };
        let content_len = CString::new(left.to_string()).unwrap_or_default();

        uwr_http_init_headers(ctx, 2, 0);
        // SAFETY: NUL-terminated strings that outlive the calls (the library copies them).
        unsafe {
            luw_http_add_header(ctx, c"Content-Type".as_ptr(), content_type.as_ptr());
            luw_http_add_header(ctx, c"Content-Length".as_ptr(), content_len.as_ptr());
        }
        uwr_http_send_headers(ctx);
        // The body goes where the headers were.
        uwr_luw_mem_reset(ctx);
    }

    let n = (n as u64).min(left);
    uwr_mem_write_buf(ctx, buf, n);
    uwr_http_send_response(ctx);
    left -= n;
    if left == 0 {
        uwr_http_response_end();
    }
    // SAFETY: single-threaded guest.
    unsafe { BODY_LEFT = left };
    0
}

/// The chunk buffer, allocated on first use.
fn chunk_buf() -> *mut u8 {
    // SAFETY: single-threaded guest.
    unsafe {
        if CHUNK_BUF.is_null() {
            CHUNK_BUF = uwr_malloc(uwr_mem_get_init_size());
        }
        CHUNK_BUF
    }
}

/// Whether this call starts a request (see `hello`): `total_content_sent` and
/// `content_sent`, rewritten by the host on every call, are equal on the first call only.
fn is_first_call(addr: *const u8) -> bool {
    let req = addr.cast::<luw_req>();
    // SAFETY: `addr` is the shared buffer the host passes in; it starts with a `luw_req`.
    unsafe { (*req).total_content_sent == u64::from((*req).content_sent) }
}

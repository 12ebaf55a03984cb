//! `echo`: answers with a description of the request, in the format of Unit's
//! `rust-echo-request` example (nginx/unit-wasm `examples/rust/echo-request`):
//!
//! ```text
//!  * Welcome to WebAssembly in Rust on Unit! [libunit-wasm (0.4.0/0x00040000)] *
//!
//! [Request Info]
//! REQUEST_PATH = /echo?x=1
//! METHOD       = POST
//! ...
//! SERVER_NAME  = localhost
//!
//! [Request Headers]
//! Host = localhost:8080
//! ...
//!
//! [POST data]
//! <the body>
//! ```
//!
//! The body is shown for `POST` and `PUT` only. Where Unit's example would read past its
//! copy of the request, this one streams a body larger than the shared buffer out piece by
//! piece, as the host hands it in (`Content-Length` is known up front). Names, values and
//! the body are written as raw bytes, so non-UTF-8 input cannot make it trap.
//!
//! Exports: `luw_request_handler`, `luw_module_init_handler` (allocates the request copy;
//! optional, it is allocated on first use otherwise), `luw_module_end_handler` (frees it),
//! plus `luw_malloc_handler` / `luw_free_handler` from the library.

use std::ffi::{CStr, c_char, c_void};
use std::ptr::null_mut;

use unit_wasm::rusty::*;

/// Where the response body goes in the shared buffer; the response headers go at offset 0.
const RESPONSE_OFFSET: usize = 4096;

static mut CTX: luw_ctx_t = UWR_CTX_INITIALIZER();

/// A copy of the request as the first call delivers it (the response is written over the
/// shared buffer); `init mem size` bytes, the most the host writes in one call.
static mut REQUEST_BUF: *mut u8 = null_mut();

/// Body bytes of the current request still to be echoed from later calls.
static mut BODY_LEFT: u64 = 0;

#[unsafe(no_mangle)]
pub extern "C" fn luw_module_init_handler() {
    request_buf();
}

#[unsafe(no_mangle)]
pub extern "C" fn luw_module_end_handler() {
    // SAFETY: guests are single-threaded; nothing else holds the buffer.
    unsafe {
        if !REQUEST_BUF.is_null() {
            uwr_free(REQUEST_BUF);
            REQUEST_BUF = null_mut();
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_handler(addr: *mut u8) -> i32 {
    let ctx = &raw mut CTX;
    if is_first_call(addr) {
        start_request(ctx, addr)
    } else {
        continue_body(ctx, addr)
    }
}

/// Writes the description of the request (and the part of the body this call carries).
fn start_request(ctx: *mut luw_ctx_t, addr: *mut u8) -> i32 {
    // SAFETY: single-threaded guest.
    unsafe { BODY_LEFT = 0 };
    if !copy_request(ctx, addr, RESPONSE_OFFSET) {
        return -1;
    }

    uwr_write_str!(
        ctx,
        " * Welcome to WebAssembly in Rust on Unit! \
         [libunit-wasm ({}.{}.{}/{:#010x})] *\n\n",
        LUW_VERSION_MAJOR,
        LUW_VERSION_MINOR,
        LUW_VERSION_PATCH,
        LUW_VERSION_NUMBER,
    );

    uwr_write_str!(ctx, "[Request Info]\n");
    // SAFETY: the getters return pointers to NUL-terminated strings in the request copy.
    unsafe {
        write_line(ctx, "REQUEST_PATH = ", luw_get_http_path(ctx));
        write_line(ctx, "METHOD       = ", luw_get_http_method(ctx));
        write_line(ctx, "VERSION      = ", luw_get_http_version(ctx));
        write_line(ctx, "QUERY        = ", luw_get_http_query(ctx));
        write_line(ctx, "REMOTE       = ", luw_get_http_remote(ctx));
        write_line(ctx, "LOCAL_ADDR   = ", luw_get_http_local_addr(ctx));
        write_line(ctx, "LOCAL_PORT   = ", luw_get_http_local_port(ctx));
        write_line(ctx, "SERVER_NAME  = ", luw_get_http_server_name(ctx));
    }

    uwr_write_str!(ctx, "\n[Request Headers]\n");
    uwr_http_hdr_iter(ctx, Some(write_header), null_mut());

    // SAFETY: as above.
    let method = unsafe { CStr::from_ptr(luw_get_http_method(ctx)) }.to_bytes();
    let mut body_left = 0;
    if method == b"POST" || method == b"PUT" {
        uwr_write_str!(ctx, "\n[{} data]\n", String::from_utf8_lossy(method));
        // The body bytes this call carries; the rest (if any) come in later calls.
        let sent = uwr_get_http_content_sent(ctx) as u64;
        uwr_mem_write_buf(ctx, uwr_get_http_content(ctx), sent);
        body_left = uwr_get_http_content_len(ctx).saturating_sub(sent);
        if body_left == 0 {
            uwr_write_str!(ctx, "\n");
        }
    }

    // What is written now, plus the body still to come and the newline that ends it.
    let mut content_len = uwr_get_response_data_size(ctx) as u64;
    if body_left > 0 {
        content_len += body_left + 1;
    }
    uwr_http_init_headers(ctx, 2, 0);
    uwr_http_add_header_content_type(ctx, "text/plain");
    uwr_http_add_header(ctx, "Content-Length", &content_len.to_string());
    uwr_http_send_headers(ctx);

    uwr_http_send_response(ctx);
    if body_left == 0 {
        uwr_http_response_end();
    }
    // SAFETY: single-threaded guest.
    unsafe { BODY_LEFT = body_left };
    0
}

/// A later call: one more chunk of a body that did not fit in the shared buffer.
fn continue_body(ctx: *mut luw_ctx_t, addr: *mut u8) -> i32 {
    // SAFETY: single-threaded guest.
    let mut left = unsafe { BODY_LEFT };
    if left == 0 {
        // Not a method whose body is shown, or nothing expected: ignore the chunk.
        return 0;
    }
    let buf = request_buf();
    if buf.is_null() {
        return -1;
    }

    // The response goes at offset 0, over the chunk: copy the chunk out first. The host
    // rewrites content_off and content_sent on every call, so they can be read from `addr`.
    uwr_init_ctx(ctx, addr, 0);
    let n = (uwr_get_http_content_sent(ctx) as u64)
        .min(left)
        .min(u64::from(uwr_mem_get_init_size()));
    // SAFETY: the chunk lies in the shared buffer; `buf` holds init-mem-size bytes and
    // does not overlap it.
    unsafe { std::ptr::copy_nonoverlapping(uwr_get_http_content(ctx), buf, n as usize) };
    uwr_mem_write_buf(ctx, buf, n);
    left -= n;
    if left == 0 {
        uwr_write_str!(ctx, "\n");
    }
    uwr_http_send_response(ctx);
    if left == 0 {
        uwr_http_response_end();
    }
    // SAFETY: single-threaded guest.
    unsafe { BODY_LEFT = left };
    0
}

/// Points `ctx` at the shared buffer with the response at `resp_offset`, and at a copy of
/// the request (`uwr_set_req_buf`), so that the response can overwrite the original.
fn copy_request(ctx: *mut luw_ctx_t, addr: *mut u8, resp_offset: usize) -> bool {
    if request_buf().is_null() {
        return false;
    }
    // `uwr_init_ctx` zeroes the response size at `addr + resp_offset`, which is still
    // part of the request when that is longer than `resp_offset`: keep the word intact
    // until the request is copied.
    let size_word = addr.wrapping_add(resp_offset).cast::<u32>();
    // SAFETY: the shared buffer is 32 MiB + 64 KiB long; `resp_offset` is well inside it.
    let saved = unsafe { size_word.read_unaligned() };
    uwr_init_ctx(ctx, addr, resp_offset);
    // SAFETY: as above.
    unsafe { size_word.write_unaligned(saved) };
    uwr_set_req_buf(ctx, &raw mut REQUEST_BUF, LUW_SRB_NONE);
    // SAFETY: as above; the response starts empty.
    unsafe { size_word.write_unaligned(0) };
    true
}

/// The request copy buffer, allocated on first use if `luw_module_init_handler` did not.
fn request_buf() -> *mut u8 {
    // SAFETY: single-threaded guest.
    unsafe {
        if REQUEST_BUF.is_null() {
            REQUEST_BUF = uwr_malloc(uwr_mem_get_init_size());
        }
        REQUEST_BUF
    }
}

/// Writes `label`, the NUL-terminated string at `value` and a newline.
///
/// # Safety
/// `value` must point to a NUL-terminated string.
unsafe fn write_line(ctx: *mut luw_ctx_t, label: &str, value: *const c_char) {
    uwr_mem_write_str(ctx, label);
    // SAFETY: guaranteed by the caller.
    unsafe { write_c_str(ctx, value) };
    uwr_mem_write_str(ctx, "\n");
}

/// Appends the bytes of a NUL-terminated string to the response, as they are.
///
/// # Safety
/// `s` must point to a NUL-terminated string.
unsafe fn write_c_str(ctx: *mut luw_ctx_t, s: *const c_char) {
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { CStr::from_ptr(s) }.to_bytes();
    uwr_mem_write_buf(ctx, bytes.as_ptr(), bytes.len() as u64);
}

/// `uwr_http_hdr_iter` callback: one `name = value` line per request header.
unsafe extern "C" fn write_header(
    ctx: *mut luw_ctx_t,
    name: *const c_char,
    value: *const c_char,
    _data: *mut c_void,
) -> bool {
    // SAFETY: the library passes NUL-terminated strings from the request copy.
    unsafe {
        write_c_str(ctx, name);
        uwr_mem_write_str(ctx, " = ");
        write_c_str(ctx, value);
    }
    uwr_mem_write_str(ctx, "\n");
    true
}

/// Whether this call starts a request (see `hello`): `total_content_sent` and
/// `content_sent`, rewritten by the host on every call, are equal on the first call only.
fn is_first_call(addr: *const u8) -> bool {
    let req = addr.cast::<luw_req>();
    // SAFETY: `addr` is the shared buffer the host passes in; it starts with a `luw_req`.
    unsafe { (*req).total_content_sent == u64::from((*req).content_sent) }
}

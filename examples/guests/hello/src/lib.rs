//! `hello`: answers every request with `Hello, World!` as `text/plain`.
//!
//! The smallest module for Unit's `wasm` application type, on the `unit-wasm` crate:
//!
//! ```json
//! { "type": "wasm", "module": "/path/to/hello.wasm",
//!   "request_handler": "luw_request_handler",
//!   "malloc_handler": "luw_malloc_handler", "free_handler": "luw_free_handler" }
//! ```
//!
//! `luw_malloc_handler` and `luw_free_handler` (and no-op versions of the optional hooks)
//! come from the C library inside `unit-wasm`; this crate defines the request handler.

use unit_wasm::rusty::*;

/// Where the response body goes in the shared buffer; the response headers go at offset 0
/// (Unit reads header names and values relative to the headers struct, so they must).
const RESPONSE_OFFSET: usize = 4096;

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_handler(addr: *mut u8) -> i32 {
    // A request body larger than the shared buffer arrives over further calls; the answer
    // is complete after the first one, so there is nothing left to do for those.
    if !is_first_call(addr) {
        return 0;
    }

    let ctx = &mut UWR_CTX_INITIALIZER();
    uwr_init_ctx(ctx, addr, RESPONSE_OFFSET);

    uwr_write_str!(ctx, "Hello, World!\n");

    uwr_http_init_headers(ctx, 2, 0);
    uwr_http_add_header_content_type(ctx, "text/plain");
    uwr_http_add_header_content_len(ctx);
    uwr_http_send_headers(ctx);

    uwr_http_send_response(ctx);
    uwr_http_response_end();

    0
}

/// Whether this call starts a request. Later calls only carry further chunks of a body
/// that did not fit in the shared buffer; the host rewrites `total_content_sent` and
/// `content_sent` on every call, and they are equal on the first call only.
fn is_first_call(addr: *const u8) -> bool {
    let req = addr.cast::<luw_req>();
    // SAFETY: `addr` is the shared buffer the host passes in; it starts with a `luw_req`.
    unsafe { (*req).total_content_sent == u64::from((*req).content_sent) }
}

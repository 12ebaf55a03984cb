//! `large-upload`: writes the request body to a file and answers with the number of bytes
//! written (`text/plain`, e.g. `1048576\n`). Modelled on Unit's `rust-large-upload`
//! (nginx/unit-wasm `examples/rust/large-upload`).
//!
//! The file is `$UPLOAD_PATH` if the app's `environment` sets it, else
//! `/var/tmp/large-file.dat` as in Unit's example; it is created (or truncated) by each
//! request. Its directory must be preopened for the guest:
//! `"access": { "filesystem": ["/var/tmp"] }`.
//!
//! A body larger than the shared buffer (32 MiB) reaches the module over several calls to
//! the request handler; each call appends its chunk to the file.
//!
//! Exports: `luw_request_handler`, `luw_request_end_handler` (closes the file if a request
//! ended early; optional), plus `luw_malloc_handler` / `luw_free_handler` from the library.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;

use unit_wasm::rusty::*;

const DEFAULT_UPLOAD_PATH: &str = "/var/tmp/large-file.dat";

/// Where the response body goes in the shared buffer; the response headers go at offset 0.
const RESPONSE_OFFSET: usize = 4096;

/// The upload in progress.
struct Upload {
    file: File,
    content_len: u64,
    written: u64,
}

thread_local! {
    static UPLOAD: RefCell<Option<Upload>> = const { RefCell::new(None) };
}

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_end_handler() {
    UPLOAD.with_borrow_mut(|upload| *upload = None);
}

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_handler(addr: *mut u8) -> i32 {
    UPLOAD.with_borrow_mut(|upload| handle(upload, addr))
}

fn handle(upload: &mut Option<Upload>, addr: *mut u8) -> i32 {
    if is_first_call(addr) {
        let path = std::env::var_os("UPLOAD_PATH")
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_UPLOAD_PATH));
        let Ok(file) = File::create(&path) else {
            *upload = None;
            return -1;
        };
        // SAFETY: `addr` is the shared buffer the host passes in; it starts with a `luw_req`.
        let content_len = unsafe { (*addr.cast::<luw_req>()).content_len };
        *upload = Some(Upload {
            file,
            content_len,
            written: 0,
        });
    }
    let Some(current) = upload.as_mut() else {
        // A chunk of a request whose upload failed: nothing to do.
        return 0;
    };

    // Writes this call's chunk (content_off and content_sent, which the host rewrites
    // on every call, say where it is).
    let wrote = uwr_mem_splice_file(addr, &mut current.file);
    if wrote < 0 {
        *upload = None;
        return -1;
    }
    current.written += wrote as u64;
    if current.written < current.content_len {
        return 0;
    }

    let written = current.written;
    *upload = None; // closes the file

    let ctx = &mut UWR_CTX_INITIALIZER();
    uwr_init_ctx(ctx, addr, RESPONSE_OFFSET);
    uwr_write_str!(ctx, "{}\n", written);
    uwr_http_init_headers(ctx, 2, 0);
    uwr_http_add_header_content_type(ctx, "text/plain");
    uwr_http_add_header_content_len(ctx);
    uwr_http_send_headers(ctx);
    uwr_http_send_response(ctx);
    uwr_http_response_end();
    0
}

/// Whether this call starts a request (see `hello`): `total_content_sent` and
/// `content_sent`, rewritten by the host on every call, are equal on the first call only.
fn is_first_call(addr: *const u8) -> bool {
    let req = addr.cast::<luw_req>();
    // SAFETY: `addr` is the shared buffer the host passes in; it starts with a `luw_req`.
    unsafe { (*req).total_content_sent == u64::from((*req).content_sent) }
}

//! `hostile`: a guest that misbehaves on purpose, for the limit tests in
//! `api-tests/limits.rs`. By request path:
//!
//! - `/loop`: spins forever (stopped by `limits.timeout`);
//! - `/alloc`: allocates 1 MiB blocks until the allocator fails (a memory bomb, stopped
//!   by `limits.memory`);
//! - `/panic`: panics, which on wasm aborts with `unreachable`;
//! - anything else: `ok\n`, `text/plain`.

use std::hint::black_box;

use unit_wasm::rusty::*;

const RESPONSE_OFFSET: usize = 4096;

#[unsafe(no_mangle)]
pub extern "C" fn luw_request_handler(addr: *mut u8) -> i32 {
    let ctx = &mut UWR_CTX_INITIALIZER();
    uwr_init_ctx(ctx, addr, RESPONSE_OFFSET);

    match uwr_get_http_path(ctx) {
        "/loop" => loop {
            black_box(());
        },
        "/alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1; 1 << 20]));
            }
        }
        "/panic" => panic!("asked to panic"),
        _ => {}
    }

    uwr_write_str!(ctx, "ok\n");
    uwr_http_init_headers(ctx, 2, 0);
    uwr_http_add_header_content_type(ctx, "text/plain");
    uwr_http_add_header_content_len(ctx);
    uwr_http_send_headers(ctx);
    uwr_http_send_response(ctx);
    uwr_http_response_end();
    0
}

/*
 * hello-c: answers every request with "Hello from C!" as text/plain.
 *
 * A module for Unit's `wasm` application type written in C on libunit-wasm, the C
 * library of Unit's unit-wasm SDK. scripts/build-examples builds it into
 * target/wasm/hello-c.wasm with the command in docs/writing-modules.md. Its config:
 *
 *   { "type": "wasm", "module": "/path/to/hello-c.wasm",
 *     "request_handler": "luw_request_handler",
 *     "malloc_handler": "luw_malloc_handler", "free_handler": "luw_free_handler" }
 *
 * luw_malloc_handler, luw_free_handler and no-op hooks come from libunit-wasm.
 */
#include <stddef.h>
#include <stdio.h>

#include "unit/unit-wasm.h"

/* Where the response body goes in the shared buffer; the headers go at offset 0. */
#define RESPONSE_OFFSET 4096

__luw_export_name("luw_request_handler")
int luw_request_handler(u8 *addr)
{
	luw_ctx_t ctx;
	char len[16];

	luw_init_ctx(&ctx, addr, RESPONSE_OFFSET);
	/* Later calls only carry more of a large request body: nothing to do. */
	if (luw_get_http_total_content_sent(&ctx) != luw_get_http_content_sent(&ctx))
		return 0;

	luw_mem_writep(&ctx, "Hello from C!\n");

	luw_http_init_headers(&ctx, 2, 0);
	luw_http_add_header(&ctx, "Content-Type", "text/plain");
	snprintf(len, sizeof(len), "%zu", luw_get_response_data_size(&ctx));
	luw_http_add_header(&ctx, "Content-Length", len);
	luw_http_send_headers(&ctx);

	luw_http_send_response(&ctx);
	luw_http_response_end();

	return 0;
}

//! Hostile and broken guests (WAT, see `harness::Wat`): out-of-bounds offsets and sizes,
//! absurd header counts, invalid statuses, traps before and in the middle of a
//! streamed response, handlers that return without answering or with an error. Each
//! gets a clean answer (500 when no head was sent), never a host crash; after each, a
//! healthy app on the same server still serves, and a second request to the hostile app
//! gets the same answer (the trapped instance was replaced, not reused broken).

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    Conn, Response, Server, WAT_BODY, WAT_BODY_OFFSET, Wat, connect_listener, get_from, guest_app,
    listener_key, path_str, wasm_app, write_file,
};

/// A server with a healthy app and the hostile guest `wat`, each on its own listener;
/// returns (server, healthy listener, hostile listener).
fn server_with(wat: &Wat) -> (Server, String, String) {
    let server = Server::start();
    let hostile = path_str(&write_file(
        server.dir(),
        "hostile.wasm",
        wat.render().as_bytes(),
    ));
    let (healthy_key, hostile_key) = (listener_key(), listener_key());
    server.load(&json!({
        "listeners": {
            healthy_key.clone(): {"pass": "applications/healthy"},
            hostile_key.clone(): {"pass": "applications/hostile"}
        },
        "routes": [],
        "applications": {
            "healthy": guest_app(server.dir(), "healthy.wasm"),
            "hostile": wasm_app(&hostile)
        }
    }));
    (server, healthy_key, hostile_key)
}

#[track_caller]
fn assert_healthy_serves(server: &Server, key: &str, what: &str) {
    let resp = crate::harness::fetch(key, "GET", "/healthy", &[], None).unwrap_or_else(|e| {
        panic!(
            "after {what}: the healthy app does not answer: {e}\n{}",
            server.log()
        )
    });
    assert_eq!(resp.status, 200, "after {what}: the healthy app: {resp}");
    assert_eq!(resp.body, WAT_BODY, "after {what}: the healthy app: {resp}");
}

/// Requests the hostile app and expects a clean 500 (twice, with the healthy app in
/// between), and the server still up.
fn expect_500(what: &str, handler: &str) {
    let (server, healthy, hostile) = server_with(&Wat::with_handler(handler));
    for round in ["first", "second"] {
        let resp =
            crate::harness::fetch(&hostile, "GET", "/hostile", &[], None).unwrap_or_else(|e| {
                panic!(
                    "{what} ({round} request): no response: {e}\n{}",
                    server.log()
                )
            });
        assert_eq!(
            resp.status, 500,
            "{what} ({round} request): expected a clean 500, got\n{resp}"
        );
        assert_healthy_serves(&server, &healthy, &format!("{what} ({round} request)"));
    }
    assert_eq!(
        server.get("/config/applications/hostile/type").json(),
        json!("wasm"),
        "the control API still answers after {what}"
    );
    assert!(
        !server.log().contains("panicked"),
        "the server panicked on {what}:\n{}",
        server.log()
    );
}

#[test]
fn send_response_past_the_end_of_memory_is_500() {
    // The body struct itself outside memory.
    expect_500(
        "send_response at an offset past the end of memory",
        "(call $send_response (i32.const 0x7ff00000)) (call $response_end) (i32.const 0)",
    );
    // Offset + buffer address wraps around 2^32.
    expect_500(
        "send_response at offset 0xFFFFFFF0",
        "(call $send_response (i32.const -16)) (call $response_end) (i32.const 0)",
    );
    // The struct inside memory, its size running past the end.
    expect_500(
        "send_response with a size past the end of memory",
        "(i32.store (local.get $addr) (i32.const 0x7fffffff))
         (call $send_response (i32.const 0)) (call $response_end) (i32.const 0)",
    );
    // A size of 0xFFFFFFFF (size + 4 wraps in 32 bits).
    expect_500(
        "send_response with size 0xFFFFFFFF",
        "(i32.store (local.get $addr) (i32.const -1))
         (call $send_response (i32.const 0)) (call $response_end) (i32.const 0)",
    );
}

#[test]
fn send_headers_with_absurd_counts_and_offsets_is_500() {
    expect_500(
        "send_headers with nfields = 0xFFFFFFFF",
        "(i32.store (local.get $addr) (i32.const -1))
         (call $send_headers (i32.const 0)) (call $response_end) (i32.const 0)",
    );
    expect_500(
        "send_headers with nfields = 0x10000000 (16 bytes each: 4 GiB of fields)",
        "(i32.store (local.get $addr) (i32.const 0x10000000))
         (call $send_headers (i32.const 0)) (call $response_end) (i32.const 0)",
    );
    expect_500(
        "send_headers with a name offset past the end of memory",
        "(call $copy_canned (local.get $addr))
         (i32.store offset=4 (local.get $addr) (i32.const 0x7ff00000))
         (call $send_headers (i32.const 0)) (call $response_end) (i32.const 0)",
    );
    expect_500(
        "send_headers with a value length past the end of memory",
        "(call $copy_canned (local.get $addr))
         (i32.store offset=16 (local.get $addr) (i32.const -1))
         (call $send_headers (i32.const 0)) (call $response_end) (i32.const 0)",
    );
    expect_500(
        "send_headers at an offset past the end of memory",
        "(call $send_headers (i32.const 0x7ff00000)) (call $response_end) (i32.const 0)",
    );
}

#[test]
fn invalid_statuses_are_500() {
    // RFC 9110 §15: three digits, 1xx to 5xx.
    for status in ["0", "99", "600", "999", "1000", "70000", "-1"] {
        expect_500(
            &format!("set_resp_status({status})"),
            &format!(
                "(call $set_status (i32.const {status}))
                 (call $respond (local.get $addr)) (i32.const 0)"
            ),
        );
    }
    // Without headers: send_response sends the head with the current status.
    expect_500(
        "set_resp_status(0) then send_response only",
        &format!(
            "(call $set_status (i32.const 0)) (call $copy_canned (local.get $addr))
             (call $send_response (i32.const {WAT_BODY_OFFSET})) (call $response_end)
             (i32.const 0)"
        ),
    );
}

#[test]
fn valid_statuses_set_by_the_guest_are_sent() {
    for status in [201u16, 404, 503, 599] {
        let handler = format!(
            "(call $set_status (i32.const {status})) (call $respond (local.get $addr)) (i32.const 0)"
        );
        let (server, healthy, hostile) = server_with(&Wat::with_handler(&handler));
        for round in 0..2 {
            let resp = get_from(&hostile, "/status");
            assert_eq!(resp.status, status, "round {round}: {resp}");
            assert_eq!(resp.body, WAT_BODY, "round {round}: {resp}");
        }
        assert_healthy_serves(&server, &healthy, &format!("status {status}"));
    }
}

/// WAT: the second byte of the request path (`/x...` gives `x`).
const PATH_BYTE_1: &str = "(i32.load8_u (i32.add (local.get $addr)
    (i32.add (i32.load offset=16 (local.get $addr)) (i32.const 1))))";

#[test]
fn a_status_is_reset_for_each_request() {
    // `/n...` sets 404; anything else sets nothing and must get the default 200.
    let handler = format!(
        "(if (i32.eq {PATH_BYTE_1} (i32.const 110))
           (then (call $set_status (i32.const 404))))
         (call $respond (local.get $addr)) (i32.const 0)"
    );
    let (_server, _healthy, hostile) = server_with(&Wat::with_handler(&handler));
    let mut conn = connect_listener(&hostile).expect("connect");
    let mut statuses = Vec::new();
    for path in ["/n", "/", "/n", "/n", "/ok", "/ok"] {
        let resp = conn.request("GET", path, &[], None).expect("request");
        assert_eq!(resp.body, WAT_BODY, "{resp}");
        statuses.push(resp.status);
    }
    assert_eq!(
        statuses,
        [404, 200, 404, 404, 200, 200],
        "the status must not leak from one request to the next"
    );
}

#[test]
fn a_trap_before_anything_is_sent_is_500() {
    expect_500("a trap in the request handler", "unreachable");
    expect_500(
        "a trap after set_resp_status",
        "(call $set_status (i32.const 201)) unreachable",
    );
    expect_500(
        "an out-of-bounds load in the guest",
        "(drop (i32.load (i32.const 0x7ffffff0))) (i32.const 0)",
    );
}

#[test]
fn returning_without_sending_anything_is_500() {
    expect_500(
        "a handler that returns 0 and sends nothing",
        "(i32.const 0)",
    );
}

#[test]
fn a_non_zero_return_is_500() {
    expect_500("a handler that returns 1", "(i32.const 1)");
    expect_500("a handler that returns -1", "(i32.const -1)");
}

#[test]
fn response_end_with_nothing_sent_is_an_empty_200() {
    let (server, healthy, hostile) =
        server_with(&Wat::with_handler("(call $response_end) (i32.const 0)"));
    let mut conn = connect_listener(&hostile).expect("connect");
    for round in 0..2 {
        let resp = conn.request("GET", "/", &[], None).expect("response");
        assert_eq!(resp.status, 200, "round {round}: {resp}");
        assert_eq!(resp.bytes, b"", "round {round}: {resp}");
        assert!(
            resp.header("content-type")
                .is_some_and(|ct| ct.starts_with("text/plain")),
            "round {round}: Content-Type text/plain expected: {resp}"
        );
    }
    assert_healthy_serves(&server, &healthy, "response_end with nothing sent");
}

#[test]
fn returning_without_response_end_after_a_body_completes_the_response() {
    // Headers and body, then return 0 without nxt_wasm_response_end (Unit would hang).
    let handler = format!(
        "(call $copy_canned (local.get $addr))
         (call $send_headers (i32.const 0))
         (call $send_response (i32.const {WAT_BODY_OFFSET}))
         (i32.const 0)"
    );
    let (server, healthy, hostile) = server_with(&Wat::with_handler(&handler));
    // On one kept-alive connection: each response is complete, so the next one can follow.
    let mut conn = connect_listener(&hostile).expect("connect");
    for round in 0..3 {
        let resp = conn
            .request("GET", "/", &[], None)
            .unwrap_or_else(|e| panic!("round {round}: the response did not complete: {e}"));
        assert_eq!(resp.status, 200, "round {round}: {resp}");
        assert_eq!(resp.body, WAT_BODY, "round {round}: {resp}");
        assert_eq!(resp.header("content-type"), Some("text/plain"), "{resp}");
    }
    assert_healthy_serves(&server, &healthy, "a handler that never calls response_end");
}

/// The bytes after a response head, decoded as chunks as far as they go: the data, and
/// whether the last chunk (`0\r\n\r\n`) was seen.
fn decode_chunks(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (data, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (data, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (
                data,
                rest.starts_with(b"\r\n") || rest.windows(4).any(|w| w == b"\r\n\r\n"),
            );
        }
        let take = size.min(rest.len());
        data.extend_from_slice(&rest[..take]);
        if rest.len() < size + 2 {
            return (data, false);
        }
        rest = &rest[size + 2..];
    }
}

/// A response head's status and headers (names lowercased), and the bytes after it.
type SplitHead<'a> = (u16, Vec<(String, String)>, &'a [u8]);

/// Splits raw response bytes into the head's status and headers and the rest.
fn split_head(bytes: &[u8]) -> Option<SplitHead<'_>> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, &bytes[end + 4..]))
}

#[test]
fn a_trap_in_the_middle_of_a_streamed_response_truncates_it() {
    // Headers (no Content-Length: the body is chunked) and one piece, then a trap.
    let handler = format!(
        "(call $copy_canned (local.get $addr))
         (call $send_headers (i32.const 0))
         (call $send_response (i32.const {WAT_BODY_OFFSET}))
         unreachable"
    );
    let (server, healthy, hostile) = server_with(&Wat::with_handler(&handler));
    for round in ["first", "second"] {
        let mut conn: Conn = connect_listener(&hostile).expect("connect");
        // Keep-alive is the default: only the server's close ends this read.
        conn.send(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send");
        let out = conn.read_to_close(Duration::from_secs(90));
        let text = String::from_utf8_lossy(&out.bytes).into_owned();
        assert!(
            out.closed,
            "{round}: after a trap mid-response the connection must be closed; got {text:?}"
        );
        let (status, headers, rest) = split_head(&out.bytes)
            .unwrap_or_else(|| panic!("{round}: the head was sent before the trap: {text:?}"));
        assert_eq!(status, 200, "{round}: {text:?}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("text/plain"),
            "{text:?}"
        );
        let chunked = header("transfer-encoding").is_some_and(|te| te.contains("chunked"));
        if chunked {
            let (data, terminated) = decode_chunks(rest);
            assert!(
                !terminated,
                "{round}: a truncated chunked body must not end with the last chunk: {text:?}"
            );
            assert!(
                WAT_BODY.as_bytes().starts_with(&data),
                "{round}: the body received is not a prefix of what the guest sent: {text:?}"
            );
        } else {
            // Not chunked: then it must be framed by a Content-Length it does not reach
            // (a close-delimited body would look complete).
            let len: usize = header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or_else(|| {
                    panic!("{round}: neither chunked nor a Content-Length: the client cannot tell the body was cut: {text:?}")
                });
            assert!(rest.len() < len, "{round}: {text:?}");
        }
        assert_healthy_serves(&server, &healthy, &format!("a trap mid-stream ({round})"));
    }
}

#[test]
fn offsets_are_checked_against_memory_as_it_is_now() {
    // `/g...`: grows memory to 700 pages (if not yet) and sends a body struct placed at
    // 40,000,000, inside the grown memory only: valid. Anything else: an offset past
    // the end even of the grown memory: 500.
    let handler = format!(
        "(if (i32.eq {PATH_BYTE_1} (i32.const 103))
           (then
             (if (i32.lt_u (memory.size) (i32.const 700))
               (then (drop (memory.grow (i32.sub (i32.const 700) (memory.size))))))
             (memory.copy (i32.const 40000000)
                          (i32.const {body_src}) (i32.const {len}))
             (call $send_response (i32.sub (i32.const 40000000) (local.get $addr)))
             (call $response_end)
             (return (i32.const 0))))
         (call $send_response (i32.const 0x7ff00000))
         (call $response_end)
         (i32.const 0)",
        body_src = crate::harness::WAT_CANNED + WAT_BODY_OFFSET,
        len = 4 + WAT_BODY.len(),
    );
    let (server, healthy, hostile) = server_with(&Wat::with_handler(&handler));
    for (round, path, status) in [
        (0, "/g", 200),
        (1, "/bad", 500),
        (2, "/g", 200),
        (3, "/bad", 500),
    ] {
        let resp: Response = crate::harness::fetch(&hostile, "GET", path, &[], None)
            .unwrap_or_else(|e| panic!("request #{round} {path}: {e}"));
        assert_eq!(resp.status, status, "request #{round} {path}: {resp}");
        if status == 200 {
            assert_eq!(resp.body, WAT_BODY, "a body in grown memory: {resp}");
        }
    }
    assert_healthy_serves(&server, &healthy, "a guest that grew its memory");
}

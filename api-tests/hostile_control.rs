//! Hostile input on the control socket: oversized bodies, deep nesting, huge keys and
//! URIs, stalled and vanishing clients, garbage instead of HTTP. After each, the server
//! must still answer and the committed tree (and generation) must be unchanged.

use std::io;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Response, Server, assert_done, assert_error, echo_config, request_bytes, wait_until,
};

const MIB: usize = 1024 * 1024;

/// How long a stalled connection may stay open before the test calls it a hang
/// (the contract says ~5 s for headers, ~10 s for bodies; this is generous).
const STALL_LIMIT: Duration = Duration::from_secs(70);

fn echo_server() -> (Server, (Value, u64)) {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let snap = server.snapshot();
    (server, snap)
}

/// A body of exactly `len` bytes: whitespace, then a valid config that differs from
/// `echo_config` (so a body wrongly accepted shows up as a change).
fn padded_config(len: usize) -> Vec<u8> {
    let tail =
        json!({"listeners": {}, "routes": [{"action": {"return": 299}}], "applications": {}})
            .to_string()
            .into_bytes();
    let mut body = vec![b' '; len - tail.len()];
    body.extend(tail);
    body
}

/// PUTs a big body in 1 MiB writes. The server may answer early and close; a failed
/// write is then expected, and whatever response arrived is returned.
fn put_big(server: &Server, path: &str, body: &[u8]) -> Result<Response, io::Error> {
    let mut conn = server.conn();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes())?;
    let mut write_error = None;
    for chunk in body.chunks(MIB) {
        if let Err(e) = conn.send(chunk) {
            write_error = Some(e);
            break;
        }
    }
    match conn.read_response() {
        Ok(resp) => Ok(resp),
        Err(e) => Err(write_error.unwrap_or(e)),
    }
}

#[track_caller]
fn assert_refused_as_too_large(result: Result<Response, io::Error>, what: &str) {
    match result {
        Ok(resp) => assert_eq!(
            resp.status, 413,
            "{what}: expected 413 (or a closed connection), got\n{resp}"
        ),
        Err(e) => eprintln!("{what}: connection closed by the server ({e}), which is allowed"),
    }
}

#[test]
fn a_64_mib_body_is_refused() {
    let (server, before) = echo_server();
    let result = put_big(&server, "/config", &padded_config(64 * MIB));
    assert_refused_as_too_large(result, "a 64 MiB PUT");
    server.assert_unchanged(&before, "a 64 MiB PUT");
}

#[test]
fn a_body_one_byte_over_32_mib_is_refused() {
    let (server, before) = echo_server();
    let result = put_big(&server, "/config", &padded_config(32 * MIB + 1));
    assert_refused_as_too_large(result, "a 32 MiB + 1 byte PUT");
    server.assert_unchanged(&before, "a 32 MiB + 1 byte PUT");
}

#[test]
fn a_body_of_exactly_32_mib_is_accepted() {
    let (server, _) = echo_server();
    let body = padded_config(32 * MIB);
    let resp = put_big(&server, "/config", &body).expect("a 32 MiB body is within the limit");
    assert_done(&resp);
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 299}}])
    );
}

#[test]
fn a_declared_length_over_the_limit_is_refused_without_the_body() {
    let (server, before) = echo_server();
    let mut conn = server.conn();
    let head = format!(
        "PUT /config HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{{",
        64 * MIB
    );
    conn.send(head.as_bytes()).expect("send head");
    // Either a 413 straight away, or the body-stall cut-off: never success.
    let rest = conn.read_to_close(STALL_LIMIT);
    if let Some(status) = rest.status() {
        assert!(status >= 400, "a 64 MiB declaration got {status}");
    }
    server.assert_unchanged(&before, "a 64 MiB Content-Length");
}

fn nested(depth: usize, open: &str, close: &str, inner: &str) -> Vec<u8> {
    let mut body = open.repeat(depth).into_bytes();
    body.extend_from_slice(inner.as_bytes());
    body.extend(close.repeat(depth).into_bytes());
    body
}

#[test]
fn deep_nesting_is_invalid_json() {
    let (server, before) = echo_server();
    for (what, body) in [
        ("100 000 nested arrays", nested(100_000, "[", "]", "")),
        (
            "100 000 nested objects",
            nested(100_000, r#"{"a":"#, "}", "1"),
        ),
        ("100 000 unclosed arrays", "[".repeat(100_000).into_bytes()),
        ("600 nested arrays", nested(600, "[", "]", "")),
        ("513 nested objects", nested(513, r#"{"a":"#, "}", "1")),
    ] {
        for path in ["/config", "/config/routes"] {
            let resp = server.request("PUT", path, &[], Some(&body));
            assert_error(&resp, 400, "Invalid JSON.");
            server.assert_unchanged(&before, &format!("PUT {path} {what}"));
        }
    }
    let resp = server.request(
        "POST",
        "/config/routes",
        &[],
        Some(&nested(100_000, "[", "]", "")),
    );
    assert_error(&resp, 400, "Invalid JSON.");
    server.assert_unchanged(&before, "POST 100 000 nested arrays");
}

#[test]
fn nesting_within_512_levels_is_not_a_json_error() {
    let (server, before) = echo_server();
    // 500 levels parse; the tree is then simply not a valid config.
    for body in [
        nested(500, "[", "]", ""),
        nested(500, r#"{"a":"#, "}", "1"),
        nested(499, "[", "]", r#"{"action": {"return": 200}}"#),
    ] {
        let resp = server.request("PUT", "/config/routes", &[], Some(&body));
        assert_error(&resp, 400, "Invalid configuration.");
        server.assert_unchanged(&before, "500 levels of nesting");
    }
}

#[test]
fn huge_numbers_change_nothing() {
    let (server, before) = echo_server();
    let digits = "9".repeat(MIB);
    for body in [
        digits.clone(),
        format!("-{digits}"),
        format!("0.{digits}"),
        "1e99999999999999999999".to_string(),
        "1e-400".to_string(),
        "18446744073709551616".to_string(),
        "-9223372036854775809".to_string(),
    ] {
        let resp = server.put("/config/applications/echo/processes", &body);
        assert_eq!(
            resp.status,
            400,
            "processes = {}...: {resp}",
            &body[..body.len().min(30)]
        );
        server.assert_unchanged(&before, "a huge number");
    }
}

#[test]
fn a_1_mib_object_key_changes_nothing() {
    let (server, before) = echo_server();
    let key = "k".repeat(MIB);
    let mut config = echo_config(server.dir());
    config[&key] = json!(1);
    let resp = server.put_json("/config", &config);
    assert_error(&resp, 400, "Invalid configuration.");
    server.assert_unchanged(&before, "a 1 MiB unknown key");

    let body = format!(r#"{{"{key}": "x"}}"#);
    let resp = server.put("/config/applications/echo/nope", &body);
    assert_eq!(resp.status, 400, "{resp}");
    server.assert_unchanged(&before, "a 1 MiB key in an unknown member");
}

#[test]
fn a_huge_uri_is_survived() {
    let (server, before) = echo_server();
    for path in [
        format!("/config/{}", "a".repeat(MIB)),
        format!("/config{}", "/a".repeat(64 * 1024)),
    ] {
        let bytes = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
        let out = server.send_raw(&bytes);
        if let Some(status) = out.status() {
            assert!((400..500).contains(&status), "a huge URI got {status}");
        }
        server.assert_unchanged(&before, "a huge URI");
    }
}

#[test]
fn odd_percent_encodings_get_a_client_error() {
    let (server, before) = echo_server();
    for path in [
        "/config/%zz",
        "/config/%",
        "/config/%F",
        "/config/applications/%FF%FE",
        "/config/applications/echo%00",
        "/config/applications/%C0%AF",
        "/status/%ZZ",
    ] {
        let resp = server.get(path);
        assert!((400..500).contains(&resp.status), "GET {path}: {resp}");
        assert!(resp.json()["error"].is_string(), "{resp}");
        let resp = server.put(path, "{}");
        assert!((400..500).contains(&resp.status), "PUT {path}: {resp}");
        server.assert_unchanged(&before, &format!("PUT {path}"));
    }
}

#[test]
fn a_stalled_body_does_not_block_other_clients() {
    let (server, _) = echo_server();
    let mut stalled = server.conn();
    stalled
        .send(b"PUT /config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"listeners\": ")
        .expect("send half a request");

    // Others are served meanwhile, and their changes go through.
    for i in 0..3u16 {
        let resp = server.get("/config");
        assert_eq!(resp.status, 200, "{resp}");
        assert_done(&server.put_json("/config/routes", &json!([{"action": {"return": 200 + i}}])));
    }
    let after = server.snapshot();
    assert_eq!(after.0["routes"], json!([{"action": {"return": 202}}]));

    let rest = stalled.read_to_close(STALL_LIMIT);
    assert!(
        rest.closed,
        "a stalled body must be cut off eventually (waited {STALL_LIMIT:?})"
    );
    if let Some(status) = rest.status() {
        assert!(status >= 400, "a stalled request got {status}");
    }
    server.assert_unchanged(&after, "a stalled body");
}

#[test]
fn stalled_headers_do_not_block_other_clients() {
    let (server, before) = echo_server();
    let mut stalled = server.conn();
    stalled
        .send(b"PUT /config HTTP/1.1\r\nHost: localhost\r\nContent-Le")
        .expect("send half a head");
    for _ in 0..3 {
        assert_eq!(server.get("/config").status, 200);
    }
    assert_done(&server.put_json("/config", &before.0));
    let after = server.snapshot();
    let rest = stalled.read_to_close(STALL_LIMIT);
    assert!(
        rest.closed,
        "stalled headers must be cut off eventually (waited {STALL_LIMIT:?})"
    );
    if let Some(status) = rest.status() {
        assert!(status >= 400, "a stalled request got {status}");
    }
    server.assert_unchanged(&after, "stalled headers");
}

#[test]
fn many_idle_connections_do_not_starve_the_control_socket() {
    let (server, _) = echo_server();
    let idle: Vec<_> = (0..64).map(|_| server.conn()).collect();
    assert_eq!(server.get("/config").status, 200);
    assert_done(&server.put_json("/config/routes", &json!([{"action": {"return": 204}}])));
    drop(idle);
    assert_eq!(
        server.config()["routes"],
        json!([{"action": {"return": 204}}])
    );
}

#[test]
fn a_client_vanishing_mid_body_changes_nothing() {
    let (server, before) = echo_server();
    for _ in 0..5 {
        let mut conn = server.conn();
        conn.send(b"PUT /config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"listeners\": {}, ")
            .expect("send part of a request");
        drop(conn);
    }
    server.assert_unchanged(&before, "clients vanishing mid-body");
}

#[test]
fn a_client_vanishing_before_the_response_is_survived() {
    let (server, before) = echo_server();
    let new = json!({"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}});
    let mut conn = server.conn();
    conn.send(&request_bytes(
        "PUT",
        "/config",
        &[],
        Some(new.to_string().as_bytes()),
    ))
    .expect("send a whole request");
    drop(conn);
    // The request was complete: it may or may not be applied, but nothing else may
    // happen. Watch for a while; every observation must be one of the two trees.
    wait_until(Duration::from_secs(5), || {
        let tree = server.config();
        assert!(
            tree == new || tree == before.0,
            "the tree is neither the old nor the new one: {tree}"
        );
        tree == new
    });
    assert_eq!(
        server.get("/status").status,
        200,
        "the server must still answer"
    );
}

/// A deterministic pseudo-random byte soup.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

#[test]
fn garbage_instead_of_http_is_survived() {
    let (server, before) = echo_server();
    let big_header = format!(
        "GET /config HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many_headers = format!(
        "GET /config HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(10_000)
    );
    let mut tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
    tls_hello.extend(noise(500, 7));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary noise", noise(64 * 1024, 1)),
        ("control bytes", b"\x00\x01\x02\x03 garbage \xff\xfe\r\n\r\n".to_vec()),
        ("TLS ClientHello", tls_hello),
        ("bare method", b"GET\r\n\r\n".to_vec()),
        ("no slash", b"GET config HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("asterisk form", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("HTTP/9.9", b"GET /config HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("header without colon", b"GET /config HTTP/1.1\r\nHost localhost\r\n\r\n".to_vec()),
        ("raw 0xff in the path", b"GET /config/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("NUL in the path", b"GET /config/\x00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("negative length", b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}".to_vec()),
        ("non-numeric length", b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}".to_vec()),
        (
            "overflowing length",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}".to_vec(),
        ),
        (
            "two different lengths",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
        ),
        (
            "chunked with a bad size",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "chunked with a huge size",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}".to_vec(),
        ),
        (
            "unknown transfer coding",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}".to_vec(),
        ),
        ("a 100 KiB header", big_header.into_bytes()),
        ("10 000 headers", many_headers.into_bytes()),
        ("bare LF line endings with a bad body", b"PUT /config HTTP/1.1\nHost: x\nContent-Length: 1\n\n{".to_vec()),
    ];
    // In parallel: a case the server leaves hanging costs its timeout only once.
    let sock = server.sock().to_path_buf();
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(what, bytes)| {
            let sock = sock.clone();
            thread::spawn(move || {
                let Ok(mut conn) = crate::harness::Conn::open(&sock) else {
                    return (what, None);
                };
                if conn.send(&bytes).is_ok() {
                    let _ = conn.shutdown_write();
                }
                let out = conn.read_to_close(Duration::from_secs(60));
                (what, out.status())
            })
        })
        .collect();
    for handle in handles {
        let (what, status) = handle.join().expect("garbage thread");
        eprintln!("{what}: answered {status:?}");
        server.assert_unchanged(&before, what);
    }
}

/// What the HTTP layer refuses before a request reaches the API (a bad `Content-Length`,
/// a head too large, too slow or malformed) is answered in the API's JSON error shape,
/// like every other error, and changes nothing.
#[test]
fn requests_refused_before_the_api_are_answered_in_json() {
    let (server, before) = echo_server();
    let big_head = format!(
        "GET /config HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let too_long = format!(
        "PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        64 * MIB
    );
    let cases: [(&str, Vec<u8>, u16); 6] = [
        (
            "a non-numeric Content-Length",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}".to_vec(),
            400,
        ),
        (
            "two different Content-Lengths",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            400,
        ),
        ("a declared length over 32 MiB", too_long.into_bytes(), 413),
        ("a head over 64 KiB", big_head.into_bytes(), 431),
        (
            "an unknown transfer coding",
            b"PUT /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{}"
                .to_vec(),
            501,
        ),
        (
            "a header line without a colon",
            b"GET /config HTTP/1.1\r\nHost localhost\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, bytes, status) in cases {
        let mut conn = server.conn();
        conn.send(&bytes).expect("send");
        let resp = conn
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_json_error(&resp, status, what);
        server.assert_unchanged(&before, what);
    }

    // A head that does not arrive within the control socket's 5 s.
    let mut conn = server.conn();
    conn.send(b"GET /config HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let resp = conn.read_response().expect("a 408 once the head times out");
    assert_json_error(&resp, 408, "a head that stalls");
    server.assert_unchanged(&before, "a head that stalls");
}

#[track_caller]
fn assert_json_error(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp}");
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/json"),
        "{what}: {resp}"
    );
    let body = resp.json();
    assert!(body["error"].is_string(), "{what}: {resp}");
    assert!(body["detail"].is_string(), "{what}: {resp}");
}

//! RFC 9112 conformance of the data plane, over raw sockets: one case per rule, the
//! bytes sent and what must come back (the status, and whether the connection then
//! closes), covering body framing, head parsing, request-target forms, `Host`,
//! keep-alive and the timeouts; then what a target's form gives routing and guests,
//! and that clients sending their bodies slowly hold no app instance.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Conn, Server, connect_listener, example_app, get_from, listener_key};

/// A listener whose routes tell where a request went: `/deny/*` is refused with 403,
/// `/frag` answers 204, anything else reaches the `echo` example guest (which prints the
/// path, `SERVER_NAME` and the headers it was given). Short timeouts, so that the
/// timeout cases take a second or two; a small `max_body_size`.
fn setup() -> (Server, String) {
    let server = Server::start();
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [
            {"match": {"uri": "/deny/*"}, "action": {"return": 403}},
            {"match": {"uri": "/frag"}, "action": {"return": 204}},
            {"action": {"pass": "applications/echo"}}
        ],
        "applications": {"echo": example_app("echo")},
        "settings": {"http": {
            "header_read_timeout": 1,
            "body_read_timeout": 1,
            "idle_timeout": 1,
            "max_body_size": 65536
        }}
    }));
    (server, key)
}

/// A whole request head to the listener, `Host: t` first.
fn get(target: &str, fields: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
}

fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /echo HTTP/1.1\r\nHost: t\r\n{fields}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// What one case expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// The status; the connection stays open for a next request.
    KeepsOpen(u16),
    /// The status; the server then closes.
    Closes(u16),
}

#[test]
fn each_rule_gets_its_status_and_closes_as_it_must() {
    let (server, key) = setup();
    let long_target = format!("/{}", "a".repeat(64 * 1024));
    let long_extension = format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000));
    let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>, Then)> = vec![
        // Framing of request bodies (RFC 9112 §6, §7.1).
        (
            "a chunked body",
            chunked("3\r\nabc\r\n0\r\n\r\n"),
            Then::KeepsOpen(200),
        ),
        (
            "a chunk size that is not hex",
            chunked("zz\r\nabc\r\n0\r\n\r\n"),
            Then::Closes(400),
        ),
        (
            "a chunk size that overflows",
            chunked("fffffffffffffffffffff\r\n"),
            Then::Closes(413),
        ),
        (
            "no CRLF after chunk data",
            chunked("3\r\nabcX0\r\n\r\n"),
            Then::Closes(400),
        ),
        (
            "a bare LF after a chunk size",
            chunked("3\nabc\r\n0\r\n\r\n"),
            Then::Closes(400),
        ),
        (
            "an over-long chunk extension",
            chunked(&long_extension),
            Then::Closes(400),
        ),
        (
            "an over-long trailer section",
            chunked(&long_trailer),
            Then::Closes(400),
        ),
        (
            "a chunked body over max_body_size",
            chunked("10001\r\n"),
            Then::Closes(413),
        ),
        (
            "a Content-Length over max_body_size",
            post("Content-Length: 65537\r\n", ""),
            Then::Closes(413),
        ),
        (
            "a body that stalls",
            post("Content-Length: 10\r\n", "abc"),
            Then::Closes(408),
        ),
        (
            "Content-Length and Transfer-Encoding",
            post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", ""),
            Then::Closes(400),
        ),
        (
            "two different Content-Lengths",
            post("Content-Length: 3\r\nContent-Length: 4\r\n", ""),
            Then::Closes(400),
        ),
        (
            "chunked, then identity",
            post("Transfer-Encoding: chunked, identity\r\n", ""),
            Then::Closes(400),
        ),
        (
            "Transfer-Encoding twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "",
            ),
            Then::Closes(400),
        ),
        (
            "a coding not ending in chunked",
            post("Transfer-Encoding: gzip\r\n", ""),
            Then::Closes(400),
        ),
        (
            "an unsupported coding before chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", ""),
            Then::Closes(501),
        ),
        // The request line and fields (§3, §5).
        ("a plain GET", get("/", ""), Then::KeepsOpen(200)),
        ("a space in the target", get("/a b", ""), Then::Closes(400)),
        (
            "HTTP/1.2, served as 1.1",
            b"GET / HTTP/1.2\r\nHost: t\r\n\r\n".to_vec(),
            Then::KeepsOpen(200),
        ),
        (
            "HTTP/2.0",
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(),
            Then::Closes(505),
        ),
        ("a 64 KiB target", get(&long_target, ""), Then::Closes(414)),
        (
            "a field without a colon",
            get("/", "Bad Field\r\n"),
            Then::Closes(400),
        ),
        (
            "an obs-folded field",
            get("/", "X: a\r\n b\r\n"),
            Then::Closes(400),
        ),
        // Host (§3.2).
        (
            "no Host on HTTP/1.1",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Then::Closes(400),
        ),
        (
            "no Host on HTTP/1.0",
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            Then::Closes(200),
        ),
        ("two Hosts", get("/", "Host: u\r\n"), Then::Closes(400)),
        (
            "Host with a slash",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(),
            Then::Closes(400),
        ),
        (
            "Host with a space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
            Then::Closes(400),
        ),
        (
            "Host with userinfo",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n".to_vec(),
            Then::Closes(400),
        ),
        (
            "Host with a bad port",
            b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n".to_vec(),
            Then::Closes(400),
        ),
        (
            "Host with an IPv6 literal",
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n".to_vec(),
            Then::KeepsOpen(200),
        ),
        // Request-target forms (§3.2).
        (
            "absolute-form reaches routes",
            get("http://a/deny/x", ""),
            Then::KeepsOpen(403),
        ),
        (
            "absolute-form, no path",
            get("http://a", ""),
            Then::KeepsOpen(200),
        ),
        (
            "absolute-form with userinfo",
            get("http://u@a/", ""),
            Then::Closes(400),
        ),
        (
            "absolute-form, another scheme",
            get("ftp://a/", ""),
            Then::Closes(400),
        ),
        ("authority-form", get("a:80", ""), Then::Closes(400)),
        (
            "CONNECT",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
            Then::Closes(501),
        ),
        ("asterisk-form but OPTIONS", get("*", ""), Then::Closes(400)),
        (
            "OPTIONS *",
            b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            Then::KeepsOpen(200),
        ),
        (
            "a fragment is dropped before routing",
            get("/frag#x", ""),
            Then::KeepsOpen(204),
        ),
        // Keep-alive (§9.3).
        (
            "Connection: close",
            get("/", "Connection: close\r\n"),
            Then::Closes(200),
        ),
        (
            "HTTP/1.0 keep-alive",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec(),
            Then::KeepsOpen(200),
        ),
        // Timeouts, as Unit answers them.
        (
            "a connection that sends nothing",
            Vec::new(),
            Then::Closes(408),
        ),
        (
            "a head that stalls",
            b"GET / HTTP/1.1\r\nHo".to_vec(),
            Then::Closes(408),
        ),
    ];
    let mut failures = Vec::new();
    for (rule, bytes, then) in &cases {
        let got = exchange(&key, bytes);
        if got.as_ref() != Ok(then) {
            failures.push(format!("{rule}: expected {then:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules broken:\n{}\n\nlog:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        server.current_log()
    );
}

/// Sends `bytes` on a new connection; the status of the answer, and whether the
/// connection then closes (a next request on it is not answered) or stays open (it is).
fn exchange(key: &str, bytes: &[u8]) -> Result<Then, String> {
    let mut conn = connect_listener(key).map_err(|e| e.to_string())?;
    conn.send(bytes).map_err(|e| e.to_string())?;
    let status = conn.read_response().map_err(|e| e.to_string())?.status;
    if stays_open(&mut conn) {
        Ok(Then::KeepsOpen(status))
    } else {
        Ok(Then::Closes(status))
    }
}

/// Whether a next request on `conn` is answered.
fn stays_open(conn: &mut Conn) -> bool {
    if conn.send(&get("/frag", "")).is_err() {
        return false;
    }
    conn.read_response().is_ok_and(|r| r.status == 204)
}

#[test]
fn idle_kept_alive_connections_get_408_before_the_close() {
    let (_server, key) = setup();
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(&get("/frag", "")).expect("send");
    assert_eq!(conn.read_response().expect("a response").status, 204);
    // idle_timeout is 1 s.
    let rest = conn.read_to_close(Duration::from_secs(30));
    assert!(rest.closed, "closed after idle_timeout");
    assert_eq!(
        rest.status(),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&rest.bytes)
    );
}

/// The body the echo guest printed, as lines.
fn echoed(response: &crate::harness::Response) -> Vec<String> {
    response.body.lines().map(str::to_owned).collect()
}

#[test]
fn absolute_form_gives_its_path_to_guests_and_its_authority_for_host() {
    let (_server, key) = setup();
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(b"GET http://Example.COM:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        .expect("send");
    let response = conn.read_response().expect("a response");
    assert_eq!(response.status, 200, "{response}");
    let lines = echoed(&response);
    let has = |line: &str| {
        lines
            .iter()
            .any(|l| l.split_whitespace().eq(line.split_whitespace()))
    };
    assert!(has("REQUEST_PATH = /p/q?x=1"), "{}", response.body);
    assert!(has("QUERY        = x=1"), "{}", response.body);
    assert!(has("SERVER_NAME  = example.com"), "{}", response.body);
    assert!(
        lines.iter().any(|l| l.contains("Example.COM:8080")) && !response.body.contains("other"),
        "Host is the target's authority: {}",
        response.body
    );
}

#[test]
fn clients_dripping_bodies_hold_no_instance() {
    let server = Server::start();
    let key = listener_key();
    let mut app: Value = example_app("echo");
    app["processes"] = json!(2);
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/echo"}},
        "applications": {"echo": app},
    }));
    assert_eq!(get_from(&key, "/").status, 200, "warm");
    // Four clients send a 100-byte body a byte at a time, well within body_read_timeout
    // each time, for as long as the test runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drippers: Vec<_> = (0..4)
        .map(|_| {
            let key = key.clone();
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                let mut conn = connect_listener(&key).expect("connect");
                conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
                    .expect("send a head");
                for _ in 0..100 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                    if conn.send(b"x").is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    // Let every dripper's head arrive.
    thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let started = Instant::now();
        let response = get_from(&key, "/");
        let took = started.elapsed();
        assert_eq!(response.status, 200, "{response}");
        assert!(
            took < Duration::from_secs(1),
            "a normal request waited {took:?} behind clients dripping bodies"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for dripper in drippers {
        let _ = dripper.join();
    }
}

#[test]
fn removing_a_listener_finishes_heads_under_way_and_tells_idle_connections() {
    let server = Server::start();
    let key = listener_key();
    let routes = json!([{"action": {"return": 204}}]);
    server.load(&json!({"listeners": {key.clone(): {"pass": "routes"}}, "routes": routes}));
    let mut arriving = connect_listener(&key).expect("connect");
    arriving
        .send(b"GET / HTTP/1.1\r\nHo")
        .expect("send part of a head");
    let mut idle = connect_listener(&key).expect("connect");
    idle.send(&get("/", "")).expect("send");
    assert_eq!(idle.read_response().expect("a response").status, 204);
    // Let the partial head be read before the change.
    thread::sleep(Duration::from_millis(300));
    server.load(&json!({"listeners": {}, "routes": routes}));
    // The head under way is served by the configuration it began in.
    arriving.send(b"st: t\r\n\r\n").expect("send the rest");
    let response = arriving.read_response().expect("a response");
    assert_eq!(response.status, 204, "{response}\n{}", server.current_log());
    // The kept-alive connection is told, as at idle_timeout, and closed.
    let rest = idle.read_to_close(Duration::from_secs(30));
    assert!(rest.closed, "closed once its listener is gone");
    assert_eq!(
        rest.status(),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&rest.bytes)
    );
}

//! The data plane with the example guests built from `examples/guests` (see
//! `harness::example_guest`): the `echo` guest's byte-exact description of requests
//! (Unit's `rust-echo-request` format) over IPv4, IPv6 and Unix listeners, keep-alive,
//! bodies (plain, chunked, larger than the 32 MiB shared buffer), `upload-reflector`
//! with a 1 GiB streamed upload in bounded memory, `large-upload` writing into preopened
//! directories, body size limits and `/status` after serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Conn, Fnv1a64, IO_TIMEOUT, Noise, Response, Server, connect_listener, example_app,
    free_port_v6, get_from, listener_key, path_str, raw_request, read_head, send_noise, vm_rss_kib,
    wait_until,
};

const MIB: usize = 1024 * 1024;

/// What `echo` prints before the request info.
const ECHO_BANNER: &str =
    " * Welcome to WebAssembly in Rust on Unit! [libunit-wasm (0.4.0/0x00040000)] *\n\n";

/// A server with the `echo` example guest behind one listener per key (and extra root
/// members, e.g. `settings`).
fn echo_server(keys: &[&str], extra: Value) -> Server {
    let server = Server::start();
    let listeners: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!({"pass": "applications/echo"})))
        .collect();
    let mut config = json!({
        "listeners": listeners,
        "routes": [],
        "applications": {"echo": example_app("echo")}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    server.load(&config);
    server
}

/// What the connection looks like to the guest.
struct Peer {
    remote: String,
    local_addr: String,
    local_port: String,
}

impl Peer {
    fn tcp(ip: &str, key: &str) -> Peer {
        let port = key.rsplit(':').next().expect("a port").to_string();
        Peer {
            remote: ip.to_string(),
            local_addr: ip.to_string(),
            local_port: port,
        }
    }
}

/// One request as the echo guest sees it.
struct EchoCase<'a> {
    method: &'a str,
    target: &'a [u8],
    /// Header lines as sent (a body adds `Content-Length` after them).
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<&'a [u8]>,
    /// REQUEST_PATH and QUERY as Unit's ABI gives them.
    path: &'a [u8],
    query: &'a [u8],
    server_name: &'a str,
}

impl EchoCase<'_> {
    fn request(&self) -> Vec<u8> {
        let headers: Vec<(&[u8], &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        raw_request(self.method, self.target, &headers, self.body)
    }

    /// The echo guest's answer, byte for byte (`peer: None` leaves the three address
    /// lines out, for Unix sockets).
    fn expected(&self, peer: Option<&Peer>) -> Vec<u8> {
        let mut out = ECHO_BANNER.as_bytes().to_vec();
        out.extend_from_slice(b"[Request Info]\n");
        let mut line = |label: &str, value: &[u8]| {
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(value);
            out.push(b'\n');
        };
        line("REQUEST_PATH = ", self.path);
        line("METHOD       = ", self.method.as_bytes());
        line("VERSION      = ", b"HTTP/1.1");
        line("QUERY        = ", self.query);
        if let Some(peer) = peer {
            line("REMOTE       = ", peer.remote.as_bytes());
            line("LOCAL_ADDR   = ", peer.local_addr.as_bytes());
            line("LOCAL_PORT   = ", peer.local_port.as_bytes());
        }
        line("SERVER_NAME  = ", self.server_name.as_bytes());
        out.extend_from_slice(b"\n[Request Headers]\n");
        let mut headers = self.headers.clone();
        if let Some(body) = self.body {
            headers.push((
                b"Content-Length".to_vec(),
                body.len().to_string().into_bytes(),
            ));
        }
        for (n, v) in &headers {
            out.extend_from_slice(n);
            out.extend_from_slice(b" = ");
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        if matches!(self.method, "POST" | "PUT") {
            out.extend_from_slice(format!("\n[{} data]\n", self.method).as_bytes());
            out.extend_from_slice(self.body.unwrap_or_default());
            out.push(b'\n');
        }
        out
    }
}

/// `Host: localhost` plus these headers.
fn with_host(headers: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![(b"Host".to_vec(), b"localhost".to_vec())];
    out.extend(
        headers
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
    );
    out
}

/// Drops the REMOTE, LOCAL_ADDR and LOCAL_PORT lines of an echo answer (checking they
/// are there, once each, in that order after QUERY).
#[track_caller]
fn without_address_lines(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let labels = ["REMOTE       = ", "LOCAL_ADDR   = ", "LOCAL_PORT   = "];
    let at = lines
        .iter()
        .position(|l| l.starts_with(labels[0]))
        .unwrap_or_else(|| panic!("no REMOTE line in the echo answer:\n{text}"));
    for (i, label) in labels.iter().enumerate() {
        assert!(
            lines.get(at + i).is_some_and(|l| l.starts_with(label)),
            "expected {label:?} at line {} of the echo answer:\n{text}",
            at + i
        );
    }
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !(at..at + 3).contains(&i) {
            out.extend_from_slice(l.as_bytes());
        }
    }
    out
}

/// Asserts an echo answer: 200, `text/plain`, a right `Content-Length`, this body.
#[track_caller]
fn assert_echo(resp: &Response, want: &[u8], what: &str) {
    assert_eq!(resp.status, 200, "{what}: {resp}");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain"),
        "{what}: {resp}"
    );
    if let Some(len) = resp.header("content-length") {
        assert_eq!(len, resp.bytes.len().to_string(), "{what}: {resp}");
    }
    assert_body(&resp.bytes, want, what);
}

/// Compares bodies, showing where they part when they differ.
#[track_caller]
fn assert_body(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |b: &[u8]| {
        let from = at.saturating_sub(200);
        let to = (at + 200).min(b.len());
        String::from_utf8_lossy(&b[from.min(to)..to]).into_owned()
    };
    panic!(
        "{what}: the body differs at byte {at} (got {} bytes, want {}).\n--- got (around it):\n{}\n--- want:\n{}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// Sends one case on `conn` and checks the answer.
#[track_caller]
fn check_case(conn: &mut Conn, case: &EchoCase, peer: Option<&Peer>, what: &str) {
    conn.send(&case.request())
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    let resp = conn
        .read_response()
        .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    let want = case.expected(peer);
    match peer {
        Some(_) => assert_echo(&resp, &want, what),
        None => {
            // Without the address lines, whose values a Unix socket leaves open.
            let mut resp = resp;
            if let Some(len) = resp.header("content-length") {
                assert_eq!(len, resp.bytes.len().to_string(), "{what}: {resp}");
            }
            resp.bytes = without_address_lines(&resp.bytes);
            resp.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
            assert_echo(&resp, &want, what);
        }
    }
}

fn get_case<'a>(target: &'a [u8], path: &'a [u8], query: &'a [u8]) -> EchoCase<'a> {
    EchoCase {
        method: "GET",
        target,
        headers: with_host(&[]),
        body: None,
        path,
        query,
        server_name: "localhost",
    }
}

#[test]
fn echo_get_with_query_strings_is_byte_exact() {
    let key = listener_key();
    let server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    // (target, REQUEST_PATH, QUERY): a plain target keeps its query in the path (Unit's
    // quirk); one that needs normalising gives the decoded, normalised path alone.
    let cases: [(&[u8], &[u8], &[u8]); 13] = [
        (b"/", b"/", b""),
        (b"/echo", b"/echo", b""),
        (b"/echo?x=1", b"/echo?x=1", b"x=1"),
        (b"/echo?x=1&y=two&z", b"/echo?x=1&y=two&z", b"x=1&y=two&z"),
        (b"/a/b.c?", b"/a/b.c?", b""),
        (b"/p?x=%20&y=a?b", b"/p?x=%20&y=a?b", b"x=%20&y=a?b"),
        (b"/x%20y/z?a=1", b"/x y/z", b"a=1"),
        (b"/a//b/./c/../d?q", b"/a/b/d", b"q"),
        (b"/%41%42/?k=v", b"/AB/", b"k=v"),
        // As routing sees them: a final dot segment stays (Unit resolves one only when a
        // slash follows it), an encoded one counts, a fragment is dropped.
        (b"/a/b/.", b"/a/b/.", b""),
        (b"/a/b/..?q", b"/a/b/..", b"q"),
        (b"/a/%2e%2e/b", b"/b", b""),
        (b"/a/b#frag", b"/a/b", b""),
    ];
    for (target, path, query) in cases {
        let what = format!("GET {}", String::from_utf8_lossy(target));
        let mut conn = connect_listener(&key).expect("connect");
        check_case(
            &mut conn,
            &get_case(target, path, query),
            Some(&peer),
            &what,
        );
    }
    drop(server);
}

#[test]
fn targets_unit_cannot_decode_or_resolve_are_bad_requests() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    for target in ["/%zz", "/a%2", "/a%00b", "/../x", "/a/%2e%2e/../x"] {
        let mut conn = connect_listener(&key).expect("connect");
        conn.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("send");
        let resp = conn.read_response().expect("response");
        assert_eq!(resp.status, 400, "GET {target}: {resp}");
    }
    // A malformed escape in the query is the app's business.
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(b"GET /q?x=%zz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let resp = conn.read_response().expect("response");
    assert_eq!(resp.status, 200, "{resp}");
}

#[test]
fn echo_post_and_put_bodies_are_byte_exact() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    let binary = Noise::bytes(7, MIB + 13);
    let bodies: [(&str, &[u8]); 5] = [
        ("POST", b"hello\nworld"),
        ("POST", b""),
        ("PUT", b"{\"json\": true}"),
        ("POST", &binary),
        ("DELETE", b"a body the echo guest does not print"),
    ];
    for (method, body) in bodies {
        let case = EchoCase {
            method,
            target: b"/upload?kind=test",
            headers: with_host(&[("Content-Type", "application/octet-stream")]),
            body: Some(body),
            path: b"/upload?kind=test",
            query: b"kind=test",
            server_name: "localhost",
        };
        let what = format!("{method} with a {} byte body", body.len());
        let mut conn = connect_listener(&key).expect("connect");
        check_case(&mut conn, &case, Some(&peer), &what);
    }
}

#[test]
fn echo_shows_100_headers_in_the_clients_case_and_order() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    let mut headers = with_host(&[]);
    for i in 0..100 {
        let name = match i % 4 {
            0 => format!("X-Header-{i:03}"),
            1 => format!("x-lower-{i:03}"),
            2 => format!("X-UPPER-{i:03}"),
            _ => format!("x-MiXeD-{i:03}"),
        };
        // Not sorted: the order must be the client's.
        headers.insert(
            1,
            (name.into_bytes(), format!("value {i} ;,=").into_bytes()),
        );
    }
    // A repeated name stays two fields.
    headers.push((b"X-Twice".to_vec(), b"first".to_vec()));
    headers.push((b"x-twice".to_vec(), b"second".to_vec()));
    let case = EchoCase {
        headers,
        ..get_case(b"/headers", b"/headers", b"")
    };
    let mut conn = connect_listener(&key).expect("connect");
    check_case(&mut conn, &case, Some(&peer), "100 headers");
}

#[test]
fn echo_passes_utf8_in_header_values_and_the_path_through() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    let target = "/caf\u{e9}/\u{20ac}?q=\u{fc}".as_bytes();
    let mut case = get_case(target, target, "q=\u{fc}".as_bytes());
    case.headers.push((
        b"X-Unicode".to_vec(),
        "h\u{e9}llo w\u{f6}rld \u{20ac} \u{1F600}"
            .as_bytes()
            .to_vec(),
    ));
    let mut conn = connect_listener(&key).expect("connect");
    check_case(&mut conn, &case, Some(&peer), "UTF-8 path and header value");

    // Percent-encoded UTF-8 before `?` needs decoding: the path comes out decoded.
    let case = get_case(
        b"/caf%C3%A9/x?y=%C3%A9",
        "/caf\u{e9}/x".as_bytes(),
        b"y=%C3%A9",
    );
    let mut conn = connect_listener(&key).expect("connect");
    check_case(&mut conn, &case, Some(&peer), "percent-encoded UTF-8 path");
}

#[test]
fn echo_server_name_is_the_lowercased_host_without_port() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    for (host, server_name) in [
        ("Example.COM:8080", "example.com"),
        ("EXAMPLE.org", "example.org"),
        ("localhost:1", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        // The name routing matches: one final dot dropped (Unit's echo example prints it so).
        ("example.com.", "example.com"),
        ("Example.COM.:8080", "example.com"),
    ] {
        let case = EchoCase {
            headers: vec![(b"Host".to_vec(), host.as_bytes().to_vec())],
            server_name,
            ..get_case(b"/host", b"/host", b"")
        };
        let mut conn = connect_listener(&key).expect("connect");
        check_case(&mut conn, &case, Some(&peer), &format!("Host: {host}"));
    }

    // No Host at all (HTTP/1.0): `localhost`.
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(b"GET /nohost HTTP/1.0\r\n\r\n").expect("send");
    let resp = conn.read_response().expect("response");
    let text = String::from_utf8_lossy(&resp.bytes).into_owned();
    assert_eq!(resp.status, 200, "{resp}");
    assert!(
        text.contains("\nVERSION      = HTTP/1.0\n")
            && text.contains("\nSERVER_NAME  = localhost\n")
            && text.ends_with("\n[Request Headers]\n"),
        "an HTTP/1.0 request without Host: {text}"
    );
}

#[test]
fn echo_keep_alive_serves_a_sequence_on_one_connection() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    let mut conn = connect_listener(&key).expect("connect");
    let big = Noise::bytes(11, 3 * MIB);
    for i in 0..12 {
        let target = format!("/seq/{i}?n={i}");
        let query = format!("n={i}");
        let body = format!("body number {i}\n");
        let case = match i % 3 {
            0 => get_case(target.as_bytes(), target.as_bytes(), query.as_bytes()),
            1 => EchoCase {
                method: "POST",
                body: Some(body.as_bytes()),
                ..get_case(target.as_bytes(), target.as_bytes(), query.as_bytes())
            },
            _ => EchoCase {
                method: "PUT",
                body: Some(&big),
                ..get_case(target.as_bytes(), target.as_bytes(), query.as_bytes())
            },
        };
        check_case(
            &mut conn,
            &case,
            Some(&peer),
            &format!("request #{i} on one connection"),
        );
    }
}

#[test]
fn echo_pipelined_requests_are_answered_in_order() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("127.0.0.1", &key);
    let targets: Vec<String> = (0..5).map(|i| format!("/pipe/{i}?i={i}")).collect();
    let cases: Vec<EchoCase> = targets
        .iter()
        .map(|t| {
            get_case(
                t.as_bytes(),
                t.as_bytes(),
                &t.as_bytes()[t.find('?').expect("?") + 1..],
            )
        })
        .collect();
    let mut conn = connect_listener(&key).expect("connect");
    let mut all = Vec::new();
    for case in &cases {
        all.extend(case.request());
    }
    conn.send(&all).expect("send all");
    for (i, case) in cases.iter().enumerate() {
        let resp = conn
            .read_response()
            .unwrap_or_else(|e| panic!("pipelined response #{i}: {e}"));
        assert_echo(
            &resp,
            &case.expected(Some(&peer)),
            &format!("pipelined #{i}"),
        );
    }
}

#[test]
fn echo_over_ipv6() {
    let key = format!("[::1]:{}", free_port_v6());
    let _server = echo_server(&[&key], json!({}));
    let peer = Peer::tcp("::1", &key);
    let port = key.rsplit(':').next().expect("port").to_string();
    let host = format!("[::1]:{port}");
    let mut conn = connect_listener(&key).expect("connect over IPv6");
    for i in 0..3 {
        let case = EchoCase {
            headers: vec![(b"Host".to_vec(), host.clone().into_bytes())],
            server_name: "[::1]",
            body: Some(b"over v6"),
            method: "POST",
            ..get_case(b"/v6?x=1", b"/v6?x=1", b"x=1")
        };
        check_case(&mut conn, &case, Some(&peer), &format!("IPv6 request #{i}"));
    }
}

#[test]
fn echo_over_a_unix_listener() {
    let server = Server::start();
    let sock = server.dir().join("app.sock");
    let key = format!("unix:{}", path_str(&sock));
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/echo"}},
        "routes": [],
        "applications": {"echo": example_app("echo")}
    }));
    assert!(sock.exists(), "the unix listener's socket file is missing");
    let mut conn = connect_listener(&key).expect("connect to the unix listener");
    for i in 0..3 {
        let case = EchoCase {
            method: "POST",
            body: Some(b"over a unix socket"),
            headers: with_host(&[("X-Seq", &i.to_string())]),
            ..get_case(b"/unix?y=2", b"/unix?y=2", b"y=2")
        };
        check_case(&mut conn, &case, None, &format!("unix request #{i}"));
    }
}

#[test]
fn echo_a_chunked_request_body() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let mut conn = connect_listener(&key).expect("connect");
    let pieces: [&[u8]; 3] = [b"first piece, ", b"second\r\npiece, ", b"third"];
    let mut req =
        b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for p in pieces {
        req.extend(format!("{:x}\r\n", p.len()).into_bytes());
        req.extend_from_slice(p);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.send(&req).expect("send");
    let resp = conn.read_response().expect("response");
    let case = EchoCase {
        method: "POST",
        headers: with_host(&[("Transfer-Encoding", "chunked")]),
        body: None,
        ..get_case(b"/chunked", b"/chunked", b"")
    };
    let mut want = case.expected(Some(&Peer::tcp("127.0.0.1", &key)));
    // `expected` prints an empty body for a POST without one: put the pieces in.
    want.truncate(want.len() - 1);
    for p in pieces {
        want.extend_from_slice(p);
    }
    want.push(b'\n');
    assert_echo(&resp, &want, "a chunked POST");
}

#[test]
fn echo_answers_expect_100_continue() {
    let key = listener_key();
    let _server = echo_server(&[&key], json!({}));
    let mut stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
        .write_all(
            b"POST /continue HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .expect("send head");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!(
                "waiting for 100 Continue: {other:?} after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let head = String::from_utf8_lossy(&got);
    assert!(
        head.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {head:?}"
    );
    stream.write_all(b"hello").expect("send body");
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    while !rest.ends_with(b"[POST data]\nhello\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the answer: {e}; got {:?}",
                String::from_utf8_lossy(&rest)
            ),
        }
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\nExpect = 100-continue\n"), "{text}");
    assert!(text.ends_with("[POST data]\nhello\n"), "{text}");
}

#[test]
fn echo_streams_a_body_larger_than_the_shared_buffer() {
    let key = listener_key();
    let _server = echo_server(
        &[&key],
        json!({"settings": {"http": {"max_body_size": 128 * MIB}}}),
    );
    let body = Noise::bytes(3, 70 * MIB + 5);
    let case = EchoCase {
        method: "POST",
        body: Some(&body),
        ..get_case(b"/big", b"/big", b"")
    };
    let mut conn = connect_listener(&key).expect("connect");
    check_case(
        &mut conn,
        &case,
        Some(&Peer::tcp("127.0.0.1", &key)),
        "a 70 MiB POST",
    );
}

/// Sends a POST of `len` bytes of zeros to `key` and returns the answer. The head goes
/// first; a server that refuses the size may answer before the body is sent (it then
/// need not read it).
fn post_sized(key: &str, len: usize) -> Response {
    let mut stream = TcpStream::connect(key).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let head = format!("POST /sized HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // An early answer (e.g. 413 without reading the body)?
    let mut early = Vec::new();
    let mut buf = [0u8; 4096];
    if let Ok(n) = stream.read(&mut buf)
        && n > 0
    {
        early.extend_from_slice(&buf[..n]);
    }
    if early.is_empty() {
        let chunk = vec![0u8; MIB];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB);
            if stream.write_all(&chunk[..n]).is_err() {
                break; // answered and closed; read what came
            }
            left -= n;
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut conn = Conn::from_tcp(stream, early).expect("conn");
    conn.read_response()
        .unwrap_or_else(|e| panic!("POST of {len} bytes: no response: {e}"))
}

/// examples/c/hello-c.c, built by scripts/build-examples with docs/writing-modules.md's
/// clang command on libunit-wasm: a C module serves like the Rust ones.
#[test]
fn the_c_example_on_libunit_wasm_serves() {
    let key = listener_key();
    let server = Server::start();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/hello-c"}},
        "applications": {"hello-c": example_app("hello-c")}
    }));
    for _ in 0..2 {
        let resp = get_from(&key, "/");
        assert_eq!(resp.status, 200, "{resp}");
        assert_eq!(resp.body, "Hello from C!\n", "{resp}");
        assert_eq!(resp.header("content-type"), Some("text/plain"), "{resp}");
    }
    let resp = post_sized(&key, 100_000);
    assert_eq!(resp.status, 200, "a body the module ignores: {resp}");
    assert_eq!(resp.body, "Hello from C!\n", "{resp}");
}

#[test]
fn the_default_body_limit_is_8_mib() {
    let key = listener_key();
    let server = Server::start();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/hello"}},
        "routes": [],
        "applications": {"hello": example_app("hello")}
    }));
    let resp = post_sized(&key, 8 * MIB);
    assert_eq!(
        resp.status, 200,
        "a body of exactly 8 MiB is allowed: {resp}"
    );
    assert_eq!(resp.body, "Hello, World!\n");
    let resp = post_sized(&key, 8 * MIB + 1);
    assert_eq!(
        resp.status, 413,
        "8 MiB + 1 is over Unit's default limit: {resp}"
    );
    // The listener still serves.
    let resp = get_from(&key, "/");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.body, "Hello, World!\n");
}

#[test]
fn max_body_size_sets_the_limit() {
    let key = listener_key();
    let server = Server::start();
    server.load(&json!({
        "settings": {"http": {"max_body_size": 1000}},
        "listeners": {key.clone(): {"pass": "applications/hello"}},
        "routes": [],
        "applications": {"hello": example_app("hello")}
    }));
    let resp = post_sized(&key, 1000);
    assert_eq!(
        resp.status, 200,
        "1000 bytes with max_body_size 1000: {resp}"
    );
    let resp = post_sized(&key, 1001);
    assert_eq!(
        resp.status, 413,
        "1001 bytes with max_body_size 1000: {resp}"
    );
}

#[test]
fn a_1_gib_upload_is_reflected_in_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    const RSS_LIMIT_KIB: u64 = 400 * 1024;
    let limit = Duration::from_secs(600);
    let started = Instant::now();

    let key = listener_key();
    let server = Server::start();
    server.load(&json!({
        "settings": {"http": {"max_body_size": SIZE + MIB as u64}},
        "listeners": {key.clone(): {"pass": "applications/reflector"}},
        "routes": [],
        "applications": {"reflector": example_app("upload-reflector")}
    }));

    // Samples the server's resident memory until told to stop.
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut peak = 0;
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = vm_rss_kib(pid) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            (peak, samples)
        })
    };

    let stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reader = stream.try_clone().expect("clone stream");
    let writer = {
        let mut stream = stream;
        thread::spawn(move || {
            let head = format!(
                "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-wharf-test\r\nContent-Length: {SIZE}\r\n\r\n"
            );
            send_noise(&mut stream, &head, SIZE, Some((started, limit)))
        })
    };

    let result = (|| -> Result<u64, String> {
        let (status, headers) = read_head(&mut reader).map_err(|e| format!("head: {e}"))?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if status != 200 {
            return Err(format!("status {status}, headers {headers:?}"));
        }
        if header("content-type") != Some("application/x-wharf-test") {
            return Err(format!("Content-Type is not the request's: {headers:?}"));
        }
        if header("content-length") != Some(SIZE.to_string().as_str()) {
            return Err(format!("Content-Length is not {SIZE}: {headers:?}"));
        }
        let mut hash = Fnv1a64::default();
        let mut got = 0u64;
        let mut buf = vec![0u8; MIB];
        while got < SIZE {
            if started.elapsed() > limit {
                return Err(format!("received only {got} of {SIZE} bytes in {limit:?}"));
            }
            let want = buf.len().min((SIZE - got) as usize);
            let n = reader
                .read(&mut buf[..want])
                .map_err(|e| format!("after {got} bytes: {e}"))?;
            if n == 0 {
                return Err(format!("closed after {got} of {SIZE} bytes"));
            }
            hash.update(&buf[..n]);
            got += n as u64;
        }
        Ok(hash.0)
    })();
    let sent = writer.join().expect("writer thread");
    stop.store(true, Ordering::SeqCst);
    let (peak_kib, samples) = sampler.join().expect("sampler thread");

    let received = result.unwrap_or_else(|e| panic!("the reflected body: {e} (writer: {sent:?})"));
    let sent = sent.unwrap_or_else(|e| panic!("sending the body: {e}"));
    assert_eq!(
        received, sent,
        "the reflected 1 GiB differs from what was sent (FNV-1a 64)"
    );
    assert!(samples > 0, "could not read VmRSS of pid {pid}");
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "the server's VmRSS peaked at {} MiB during a streamed 1 GiB upload (limit {} MiB)",
        peak_kib / 1024,
        RSS_LIMIT_KIB / 1024
    );
}

/// A `large-upload` app writing to `upload_path` (a path inside the guest) with these
/// preopens; uploads a body larger than the shared buffer, then a small one, and checks
/// the file `host_file` after each.
fn check_large_upload(preopens: Value, upload_path: &str, host_file: &std::path::Path) {
    let key = listener_key();
    let server = Server::start();
    let mut app = example_app("large-upload");
    app["environment"] = json!({"UPLOAD_PATH": upload_path});
    app["access"] = json!({"filesystem": preopens});
    server.load(&json!({
        "settings": {"http": {"max_body_size": 64 * MIB}},
        "listeners": {key.clone(): {"pass": "applications/upload"}},
        "routes": [],
        "applications": {"upload": app}
    }));
    for (seed, len) in [(2u64, 1000), (3, 0), (1, 40 * MIB + 3), (4, 5)] {
        let body = Noise::bytes(seed, len);
        let resp = crate::harness::fetch(&key, "PUT", "/upload", &[], Some(&body))
            .unwrap_or_else(|e| panic!("upload of {len} bytes: {e}"));
        assert_eq!(resp.status, 200, "upload of {len} bytes: {resp}");
        assert_eq!(resp.body, format!("{len}\n"), "upload of {len} bytes");
        let on_disk = std::fs::read(host_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", host_file.display()));
        assert_eq!(on_disk.len(), len, "size of {}", host_file.display());
        assert!(
            on_disk == body,
            "{} does not hold the uploaded bytes (FNV-1a {:x} vs {:x})",
            host_file.display(),
            Fnv1a64::of(&on_disk),
            Fnv1a64::of(&body)
        );
    }
    drop(server);
}

#[test]
fn large_upload_writes_into_a_preopened_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = dir.path().join("up");
    std::fs::create_dir(&up).expect("mkdir");
    let file = up.join("out.dat");
    check_large_upload(json!([path_str(&up)]), &path_str(&file), &file);
}

#[test]
fn large_upload_writes_into_a_mapped_preopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    check_large_upload(
        json!([{"host": path_str(dir.path()), "guest": "/data"}]),
        "/data/out.dat",
        &dir.path().join("out.dat"),
    );
}

#[test]
fn large_upload_without_a_preopen_fails_cleanly() {
    let key = listener_key();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start();
    let mut app = example_app("large-upload");
    app["environment"] = json!({"UPLOAD_PATH": path_str(&dir.path().join("out.dat"))});
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/upload"}},
        "routes": [],
        "applications": {"upload": app}
    }));
    let resp =
        crate::harness::fetch(&key, "PUT", "/upload", &[], Some(b"data")).expect("a response");
    assert_eq!(
        resp.status, 500,
        "the guest cannot create a file outside its preopens: {resp}"
    );
    assert!(
        !dir.path().join("out.dat").exists(),
        "the guest wrote outside its preopens"
    );
}

#[test]
fn status_counts_instances_after_serving() {
    let key = listener_key();
    let server = echo_server(&[&key], json!({}));
    let mut conn = connect_listener(&key).expect("connect");
    for i in 0..5 {
        let resp = conn
            .request("GET", &format!("/s/{i}"), &[], None)
            .expect("GET");
        assert_eq!(resp.status, 200, "{resp}");
    }
    drop(conn);
    let mut last = Value::Null;
    let quiet = wait_until(Duration::from_secs(30), || {
        last = server.get("/status/applications/echo").json();
        // Every started instance is running, idle ones included: quiet is all idle.
        last["processes"]["running"] == last["processes"]["idle"]
            && last["requests"]["active"] == json!(0)
    });
    assert!(quiet, "the echo app never went quiet: {last}");
    assert!(
        last["processes"]["idle"].as_u64() >= Some(1),
        "after serving, the instance is pooled: idle >= 1 expected, got {last}"
    );
    assert_eq!(last["processes"]["starting"], json!(0), "{last}");
    let total = server.get("/status/requests/total").json();
    assert!(
        total.as_u64() >= Some(5),
        "requests.total after 5 requests: {total}"
    );
    let accepted = server.get("/status/connections/accepted").json();
    assert!(
        accepted.as_u64() >= Some(1),
        "connections.accepted: {accepted}"
    );
}

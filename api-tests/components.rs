//! `wasm-wasi-component` applications, on the components built from
//! `examples/components` by `scripts/build-examples`: `hello-component`,
//! `echo-component` (streams the request body back) and `hostile-component` (one path
//! per behaviour, well-behaved or not). Covers serving, streaming both ways (1 GiB each
//! way in bounded memory), what the guest sees (request, environment), its stdout in the
//! log, outbound HTTP denied, every guest fault answered without harm to the server, and
//! files that are not serving components failing the change.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Fnv1a64, IO_TIMEOUT, Noise, Response, Server, connect_listener, example_guest, fetch, get_from,
    guest_app, guest_file, listener_key, median_latency, path_str, read_head, send_noise,
    vm_rss_kib, wait_until, write_file,
};

const MIB: usize = 1024 * 1024;
const GIB: u64 = 1 << 30;

/// Resident memory the server may reach while 1 GiB streams through it.
const RSS_LIMIT_KIB: u64 = 300 * 1024;

fn component_app(name: &str) -> Value {
    json!({"type": "wasm-wasi-component", "component": example_guest(name)})
}

/// A server whose one listener passes to `app`, with extra root members (`settings`).
fn serve(app: Value, extra: Value) -> (Server, String) {
    let key = listener_key();
    let server = Server::start();
    let mut config = json!({
        "listeners": {key.clone(): {"pass": "applications/app"}},
        "routes": [],
        "applications": {"app": app}
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    server.load(&config);
    (server, key)
}

fn big_bodies() -> Value {
    json!({"settings": {"http": {"max_body_size": 2 * GIB}}})
}

#[track_caller]
fn assert_healthy(key: &str, after: &str) {
    let resp = get_from(key, "/request");
    assert_eq!(resp.status, 200, "after {after}: {resp}");
    assert!(resp.body.contains("method: GET"), "after {after}: {resp}");
}

#[test]
fn hello_component_answers_hello() {
    let (server, key) = serve(component_app("hello-component"), json!({}));
    for _ in 0..3 {
        let resp = get_from(&key, "/");
        assert_eq!(resp.status, 200, "{resp}");
        assert_eq!(resp.body, "Hello", "{resp}");
        assert_eq!(resp.header("content-type"), Some("text/plain"), "{resp}");
    }
    // Keep-alive: several requests on one connection, each on a fresh instance.
    let mut conn = connect_listener(&key).expect("connect");
    for _ in 0..3 {
        let resp = conn.request("GET", "/", &[], None).expect("response");
        assert_eq!(resp.body, "Hello", "{resp}");
    }
    let status = server.get("/status").json();
    assert_eq!(
        status["applications"]["app"]["requests"]["active"],
        json!(0),
        "{status}"
    );
}

#[test]
fn a_components_trailers_follow_its_body() {
    let (_server, key) = serve(component_app("echo-component"), big_bodies());
    let mut conn = crate::harness::connect_listener(&key).expect("connect");
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nx-echo-trailer: yes\r\n\
          Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .expect("request");
    let read = conn.read_to_close(IO_TIMEOUT);
    let text = String::from_utf8_lossy(&read.bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(body, "5\r\nhello\r\n0\r\nx-echo-bytes: 5\r\n\r\n");
}

#[test]
fn echo_component_streams_the_body_back() {
    let (_server, key) = serve(component_app("echo-component"), big_bodies());
    // A body in two halves: the first half must come back before the second is sent,
    // so neither side buffers the whole body.
    let half = 2 * MIB;
    let body = Noise::bytes(7, 2 * half);
    let mut stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body[..half]).expect("first half");
    let (status, headers) = read_head(&mut stream).expect("response head");
    assert_eq!(status, 200, "{headers:?}");
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    assert!(chunked, "a streamed body of unknown length: {headers:?}");
    let mut dechunk = Dechunk::new(stream.try_clone().expect("clone"));
    let first = dechunk.read_exact(half).expect("the first half echoed");
    assert!(first == body[..half], "the first half differs");
    stream.write_all(&body[half..]).expect("second half");
    let second = dechunk.read_exact(half).expect("the second half echoed");
    assert!(second == body[half..], "the second half differs");
    assert!(
        dechunk.at_end().expect("the body's end"),
        "more than was sent"
    );

    // A chunked request body, and an empty one.
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .expect("send");
    let resp = conn.read_response().expect("response");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.body, "hello world", "{resp}");
    let resp = conn
        .request("POST", "/echo", &[], Some(b""))
        .expect("empty body");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.body, "", "{resp}");
}

#[test]
fn a_1_gib_upload_streams_through_a_component_in_bounded_memory() {
    let (server, key) = serve(component_app("echo-component"), big_bodies());
    let peak = RssPeak::sample(server.pid());
    let stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reader = stream.try_clone().expect("clone");
    let writer = {
        let mut stream = stream;
        thread::spawn(move || {
            let head = format!(
                "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {GIB}\r\n\r\n"
            );
            send_noise(&mut stream, &head, GIB, None)
        })
    };
    let (status, headers) = read_head(&mut reader).expect("response head");
    assert_eq!(status, 200, "{headers:?}");
    let mut dechunk = Dechunk::new(reader);
    let mut hash = Fnv1a64::default();
    let got = dechunk
        .read_all(|piece| hash.update(piece))
        .expect("the echoed body");
    let sent = writer
        .join()
        .expect("writer thread")
        .expect("sending 1 GiB");
    let peak_kib = peak.stop();
    assert_eq!(got, GIB, "echoed {got} bytes of {GIB}");
    assert_eq!(hash.0, sent, "the echoed 1 GiB differs from what was sent");
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "VmRSS peaked at {} MiB while 1 GiB streamed through (limit {} MiB)",
        peak_kib / 1024,
        RSS_LIMIT_KIB / 1024
    );
}

#[test]
fn a_1_gib_download_streams_from_a_component_in_bounded_memory() {
    let (server, key) = serve(component_app("hostile-component"), json!({}));
    let peak = RssPeak::sample(server.pid());
    let mut stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let request = format!("GET /download?{GIB} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request");
    let (status, headers) = read_head(&mut stream).expect("response head");
    assert_eq!(status, 200, "{headers:?}");
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.clone());
    assert_eq!(length, Some(GIB.to_string()), "{headers:?}");
    let mut buf = vec![0u8; MIB];
    let mut got = 0u64;
    let mut wrong = None;
    while got < GIB {
        let want = buf.len().min((GIB - got) as usize);
        let n = stream.read(&mut buf[..want]).expect("the body");
        assert!(n > 0, "closed after {got} of {GIB} bytes");
        if wrong.is_none()
            && let Some(i) = (0..n).find(|&i| u64::from(buf[i]) != (got + i as u64) % 251)
        {
            wrong = Some(got + i as u64);
        }
        got += n as u64;
    }
    let peak_kib = peak.stop();
    assert_eq!(wrong, None, "the downloaded bytes differ from the pattern");
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "VmRSS peaked at {} MiB during a 1 GiB download (limit {} MiB)",
        peak_kib / 1024,
        RSS_LIMIT_KIB / 1024
    );
}

#[test]
fn the_guest_sees_the_request_as_sent() {
    let (_server, key) = serve(component_app("hostile-component"), json!({}));
    let port = key.rsplit(':').next().expect("a port");
    let resp = fetch(
        &key,
        "PATCH",
        "/request?a=1&b=%20x",
        &[("X-One", "1"), ("X-Multi", "a"), ("X-Multi", "b")],
        Some(b"body"),
    )
    .expect("response");
    assert_eq!(resp.status, 200, "{resp}");
    let lines: Vec<&str> = resp.body.lines().collect();
    for want in [
        "method: PATCH".to_owned(),
        "path: /request?a=1&b=%20x".to_owned(),
        "scheme: http".to_owned(),
        format!("authority: localhost:{port}"),
        "x-one: 1".to_owned(),
        "x-multi: a".to_owned(),
        "x-multi: b".to_owned(),
        "content-length: 4".to_owned(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "missing {want:?} in\n{resp}"
        );
    }
    // `host` reaches the guest as the authority only: wasi:http keeps it (and the
    // hop-by-hop fields) out of the guest's headers.
    assert!(!resp.body.contains("\nhost:"), "{resp}");
    // An authority sent with its port is kept as sent; a method outside the common set
    // arrives as sent.
    let mut conn = connect_listener(&key).expect("connect");
    conn.send(b"PURGE /request HTTP/1.1\r\nHost: example.com:1234\r\n\r\n")
        .expect("send");
    let resp = conn.read_response().expect("response");
    assert!(resp.body.contains("method: PURGE\n"), "{resp}");
    assert!(
        resp.body.contains("authority: example.com:1234\n"),
        "{resp}"
    );
}

#[test]
fn the_guest_sees_only_the_configured_environment() {
    let mut app = component_app("hostile-component");
    app["environment"] = json!({"WHARF_ONE": "1", "WHARF_TWO": "two words"});
    let (_server, key) = serve(app, json!({}));
    let resp = get_from(&key, "/env");
    assert_eq!(resp.status, 200, "{resp}");
    let mut vars: Vec<&str> = resp.body.lines().collect();
    vars.sort_unstable();
    assert_eq!(vars, ["WHARF_ONE=1", "WHARF_TWO=two words"], "{resp}");
}

#[test]
fn the_guests_stdout_and_stderr_go_to_the_log_tagged_with_the_app() {
    let (server, key) = serve(component_app("hostile-component"), json!({}));
    let resp = get_from(&key, "/stdout");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.body, "printed", "{resp}");
    let logged = |text: &str| {
        server
            .current_log()
            .lines()
            .any(|l| l.contains(text) && l.contains("app=app"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || logged(
            "a line on the guest's stdout"
        ) && logged(
            "a line on the guest's stderr"
        )),
        "the guest's output is not in the log:\n{}",
        server.current_log()
    );
}

#[test]
fn outbound_http_is_denied_with_a_clear_error() {
    let (server, key) = serve(component_app("hostile-component"), json!({}));
    let resp = get_from(&key, "/outbound");
    assert_eq!(resp.status, 200, "{resp}");
    assert!(
        resp.body
            .contains("outbound request failed: ErrorCode::HttpRequestDenied")
            || resp.body.contains("HttpRequestDenied"),
        "{resp}"
    );
    assert!(
        server
            .current_log()
            .lines()
            .any(|l| l.contains("example.com") && l.contains("denied")),
        "the denial is not in the log:\n{}",
        server.current_log()
    );
}

#[test]
fn guest_faults_answer_500_and_harm_nothing_else() {
    let (server, key) = serve(component_app("hostile-component"), json!({}));
    for (path, cause) in [
        ("/trap", "unreachable"),
        ("/panic", "the guest panicked on purpose"),
        ("/exit", "exit"),
        ("/no-response", "without setting a response"),
    ] {
        let resp = get_from(&key, path);
        assert_eq!(resp.status, 500, "GET {path}: {resp}");
        assert_healthy(&key, path);
        let logged = || {
            server
                .current_log()
                .lines()
                .any(|l| l.contains("app=app") && l.to_lowercase().contains(cause))
        };
        assert!(
            wait_until(Duration::from_secs(30), logged),
            "GET {path}: no log line with the app and {cause:?}:\n{}",
            server.current_log()
        );
    }
}

#[test]
fn a_guest_failing_after_its_head_cuts_the_body_short() {
    let (_server, key) = serve(component_app("hostile-component"), json!({}));
    // Announces 1000000 bytes, sends 10: the connection closes short of the length.
    let got = raw_exchange(&key, "/body-error");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(got.contains("Content-Length: 1000000"), "{got:?}");
    let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.len() < 1_000_000, "{} body bytes", body.len());
    assert_healthy(&key, "/body-error");

    // Traps after sending part of a chunked body: no terminating chunk.
    let got = raw_exchange(&key, "/trap-mid-body");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the cut body looks complete: {got:?}"
    );
    assert_healthy(&key, "/trap-mid-body");
}

#[test]
fn limits_timeout_stops_a_looping_component() {
    let mut app = component_app("hostile-component");
    app["limits"] = json!({"timeout": 0.5});
    let (_server, key) = serve(app, json!({}));
    let resp = get_from(&key, "/loop");
    assert_eq!(resp.status, 503, "{resp}");
    assert_healthy(&key, "a timed-out loop");
}

#[test]
fn a_component_spinning_after_its_head_does_not_delay_a_neighbour() {
    // As a looping `wasm` guest does not (limits.rs): a component that sends its head
    // and then keeps the CPU moves to the slow lane too.
    let server = Server::start();
    let (healthy, hostile) = (listener_key(), listener_key());
    let mut spinner = component_app("hostile-component");
    spinner["limits"] = json!({"timeout": 1});
    server.load(&json!({
        "listeners": {
            healthy.clone(): {"pass": "applications/healthy"},
            hostile.clone(): {"pass": "applications/spinner"}
        },
        "applications": {"healthy": guest_app(server.dir(), "healthy.wasm"), "spinner": spinner}
    }));
    median_latency(&healthy, 50);
    let idle = median_latency(&healthy, 300);

    let stop = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hammers: Vec<_> = (0..32)
        .map(|_| {
            let (stop, heads, key) = (Arc::clone(&stop), Arc::clone(&heads), hostile.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(&key) else {
                        continue;
                    };
                    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                    let request = "GET /loop-after-head HTTP/1.1\r\nHost: localhost\r\n\r\n";
                    if stream.write_all(request.as_bytes()).is_err() {
                        continue;
                    }
                    if matches!(read_head(&mut stream), Ok((200, _))) {
                        heads.fetch_add(1, Ordering::Relaxed);
                    }
                    // The body is cut short at the timeout: read until the server closes.
                    let _ = io::copy(&mut stream, &mut io::sink());
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || heads.load(Ordering::Relaxed)
            >= 32),
        "the spinning component never sent its heads\n{}",
        server.log()
    );
    let loaded = median_latency(&healthy, 300);
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.join().expect("joins");
    }
    eprintln!(
        "healthy app median latency: idle {idle:?}, while a component spins after its head \
         under 32 connections {loaded:?} ({:.2}x)",
        loaded.as_secs_f64() / idle.as_secs_f64()
    );
    // The bound of limits.rs: generous, so that a busy CI machine does not make it flaky.
    assert!(
        loaded <= idle * 10 + Duration::from_millis(5),
        "the healthy app slowed from {idle:?} to {loaded:?} while a component spun after \
         its head"
    );
    let resp = get_from(&hostile, "/request");
    assert_eq!(resp.status, 200, "the spinner serves again: {resp}");
}

#[test]
fn access_filesystem_preopens_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_file(dir.path(), "note.txt", b"from the host");
    let host = path_str(dir.path());
    let mut app = component_app("hostile-component");
    app["access"] = json!({"filesystem": [host.clone(), {"host": host.clone(), "guest": "/data", "readonly": true}]});
    let (_server, key) = serve(app, json!({}));
    let resp = get_from(&key, &format!("/file?{host}/note.txt"));
    assert_eq!(resp.body, "from the host", "{resp}");
    let resp = get_from(&key, "/file?/data/note.txt");
    assert_eq!(resp.body, "from the host", "{resp}");
    let resp = get_from(&key, "/file?/etc/hostname");
    assert!(
        resp.body.starts_with("error:"),
        "outside the preopens: {resp}"
    );
}

#[test]
fn files_that_are_not_proxy_components_fail_the_change() {
    let server = Server::start();
    let key = listener_key();
    let dir = server.dir().to_path_buf();
    let cases = [
        (
            write_file(&dir, "text.wasm", b"not wasm at all"),
            "component",
        ),
        (guest_file(&dir, "core.wat"), "component"),
        (
            write_file(&dir, "empty.wat", b"(component)"),
            "wasi:http/proxy",
        ),
    ];
    for (file, reason) in cases {
        let file = path_str(&file);
        let resp = server.put_json(
            "/config",
            &json!({
                "listeners": {key.clone(): {"pass": "applications/broken"}},
                "applications": {"broken": {"type": "wasm-wasi-component", "component": file}}
            }),
        );
        assert_apply_failed(&resp, "broken", &file, reason);
    }
    // A component given as a `wasm` module fails too.
    let file = example_guest("hello-component");
    let resp = server.put_json(
        "/config",
        &json!({
            "listeners": {key.clone(): {"pass": "applications/broken"}},
            "applications": {"broken": {
                "type": "wasm", "module": file,
                "request_handler": "luw_request_handler", "malloc_handler": "luw_malloc_handler",
                "free_handler": "luw_free_handler"}}
        }),
    );
    assert_apply_failed(&resp, "broken", &file, "");
    // Nothing was applied; a good component still can be.
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/good"}},
        "applications": {"good": component_app("hello-component")}
    }));
    assert_eq!(get_from(&key, "/").body, "Hello");
}

#[track_caller]
fn assert_apply_failed(resp: &Response, app: &str, file: &str, reason: &str) {
    assert_eq!(resp.status, 500, "{file}: {resp}");
    let body = resp.json();
    assert_eq!(
        body["error"],
        json!("Failed to apply new configuration."),
        "{resp}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(app),
        "the detail must name {app:?}: {detail:?}"
    );
    assert!(
        detail.contains(file),
        "the detail must name {file:?}: {detail:?}"
    );
    assert!(
        detail.contains(reason),
        "the detail must say {reason:?}: {detail:?}"
    );
}

/// Sends a GET and reads until the server closes the connection (the request asks it to).
fn raw_exchange(key: &str, target: &str) -> String {
    let mut conn = connect_listener(key).expect("connect");
    conn.send(
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let read = conn.read_to_close(IO_TIMEOUT);
    assert!(read.closed, "GET {target}: the connection stayed open");
    String::from_utf8_lossy(&read.bytes).into_owned()
}

/// Decodes a chunked response body as it arrives.
struct Dechunk<R> {
    inner: io::BufReader<R>,
    /// Bytes left in the current chunk; `None` before the next size line.
    left: Option<u64>,
    ended: bool,
}

impl<R: Read> Dechunk<R> {
    fn new(inner: R) -> Self {
        Self {
            inner: io::BufReader::with_capacity(MIB, inner),
            left: None,
            ended: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        io::BufRead::read_line(&mut self.inner, &mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed mid-body",
            ));
        }
        Ok(line.trim_end().to_owned())
    }

    /// The next piece of data, at most `max` bytes; empty at the body's end.
    fn piece(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ended {
                return Ok(0);
            }
            match self.left {
                Some(0) => {
                    self.line()?; // the CRLF after the chunk
                    self.left = None;
                }
                Some(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed mid-chunk",
                        ));
                    }
                    self.left = Some(left - n as u64);
                    return Ok(n);
                }
                None => {
                    let line = self.line()?;
                    let size = u64::from_str_radix(line.split(';').next().unwrap_or(""), 16)
                        .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        self.line()?; // the empty line after the last chunk
                        self.ended = true;
                    } else {
                        self.left = Some(size);
                    }
                }
            }
        }
    }

    fn read_exact(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = self.piece(&mut out[got..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended early",
                ));
            }
            got += n;
        }
        Ok(out)
    }

    fn at_end(&mut self) -> io::Result<bool> {
        let mut byte = [0u8; 1];
        Ok(self.piece(&mut byte)? == 0)
    }

    /// Reads to the body's end, handing each piece to `each`; returns the length.
    fn read_all(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
        let mut buf = vec![0u8; MIB];
        let mut total = 0u64;
        loop {
            let n = self.piece(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            each(&buf[..n]);
            total += n as u64;
        }
    }
}

/// Samples a process's resident memory on a thread until stopped.
struct RssPeak {
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<(u64, u64)>,
}

impl RssPeak {
    fn sample(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let (mut peak, mut samples) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    if let Some(kib) = vm_rss_kib(pid) {
                        peak = u64::max(peak, kib);
                        samples += 1;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                (peak, samples)
            })
        };
        Self { stop, sampler }
    }

    /// The peak in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let (peak, samples) = self.sampler.join().expect("sampler thread");
        assert!(samples > 0, "could not read the server's VmRSS");
        peak
    }
}

#[test]
fn components_swap_by_restart_and_watch_and_stay_compiled_across_restarts() {
    let mut server = Server::start();
    let key = listener_key();
    let read = |name| std::fs::read(example_guest(name)).expect("read example component");
    let (hello, echo) = (read("hello-component"), read("echo-component"));
    let file = path_str(&write_file(server.dir(), "app.wasm", &hello));
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/app"}},
        "applications": {"app": {"type": "wasm-wasi-component", "component": file}}
    }));
    let says = |expected: &str| {
        let resp = fetch(&key, "POST", "/", &[], Some(b"ping")).expect("response");
        assert_eq!(resp.status, 200, "{resp}");
        resp.body == expected
    };
    assert!(says("Hello"));

    // Restart: the file as it is now, once its instance is ready.
    write_file(server.dir(), "app.wasm", &echo);
    assert!(
        says("Hello"),
        "without watch, a new file waits for a restart"
    );
    let resp = server.get("/control/applications/app/restart");
    assert_eq!(resp.status, 200, "{resp}\n{}", server.log());
    assert!(says("ping"), "the echo component answers after the restart");

    // A file that is not a component: the restart fails and the old one keeps serving.
    write_file(server.dir(), "app.wasm", b"not a component");
    let resp = server.get("/control/applications/app/restart");
    assert_eq!(resp.status, 500, "{resp}");
    assert!(
        resp.body.contains("Failed to restart application."),
        "{resp}"
    );
    assert!(says("ping"));

    // Watch: writing the file swaps it in. (A change reads the file too, so it must be a
    // component again first.)
    write_file(server.dir(), "app.wasm", &echo);
    let resp = server.put_json("/config/applications/app/watch", &json!(true));
    assert_eq!(resp.status, 200, "{resp}");
    write_file(server.dir(), "app.wasm", &hello);
    assert!(
        wait_until(Duration::from_secs(30), || says("Hello")),
        "the watched file was never swapped in\n{}",
        server.log()
    );

    // Both components are in the compiled cache: a restarted server compiles nothing.
    assert!(server.current_log().contains("component compiled"));
    server.sigterm();
    server.start_again();
    assert!(says("Hello"));
    assert!(
        !server.current_log().contains("component compiled"),
        "{}",
        server.log()
    );
}

//! `proxy` actions and `upstreams` (`docs/configuration.md`, Unit's `nxt_http_proxy.c`):
//! against a real HTTP/1.1 upstream written here (std::net, one thread per
//! connection): what is forwarded and removed, chunked bodies both ways, kept-alive
//! connections reused, weighted round robin, and 502/504 for upstreams that refuse,
//! stall or answer malformed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, fetch, free_port, listener_key};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream answers a request with: raw response bytes.
type Answer = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    accepts: Arc<AtomicUsize>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: yes\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An upstream on a free loopback port; returns its address.
fn tcp_upstream(answer: Answer) -> (Upstream, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let upstream = spawn(answer, move || {
        listener.accept().ok().map(|(s, _)| Box::new(s) as _)
    });
    (upstream, address)
}

trait Stream: Read + Write + Send {
    fn try_clone_box(&self) -> Box<dyn Stream>;
}
impl Stream for TcpStream {
    fn try_clone_box(&self) -> Box<dyn Stream> {
        Box::new(self.try_clone().unwrap())
    }
}
impl Stream for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> Box<dyn Stream> {
        Box::new(self.try_clone().unwrap())
    }
}

fn spawn(
    answer: Answer,
    mut accept: impl FnMut() -> Option<Box<dyn Stream>> + Send + 'static,
) -> Upstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepts = Arc::new(AtomicUsize::new(0));
    let (s, a) = (Arc::clone(&seen), Arc::clone(&accepts));
    thread::spawn(move || {
        while let Some(stream) = accept() {
            a.fetch_add(1, Ordering::SeqCst);
            let (seen, answer) = (Arc::clone(&s), Arc::clone(&answer));
            thread::spawn(move || serve(stream, &seen, &answer));
        }
    });
    Upstream { seen, accepts }
}

/// Requests on one connection until it closes.
fn serve(stream: Box<dyn Stream>, seen: &Mutex<Vec<Seen>>, answer: &Answer) {
    let mut writer = stream.try_clone_box();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut field = String::new();
            if reader.read_line(&mut field).unwrap_or(0) == 0 {
                return;
            }
            let field = field.trim_end();
            if field.is_empty() {
                break;
            }
            let (n, v) = field.split_once(':').unwrap();
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut request = Seen {
            line: line.trim_end().to_owned(),
            headers,
            body: Vec::new(),
        };
        if let Some(n) = request.header("content-length") {
            let mut body = vec![0; n.parse().unwrap()];
            reader.read_exact(&mut body).unwrap();
            request.body = body;
        } else if request.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                request.body.extend_from_slice(&chunk[..size]);
            }
        }
        seen.lock().unwrap().push(request.clone());
        let bytes = answer(&request);
        if bytes.is_empty() {
            // Stall: hold the connection without answering.
            thread::sleep(Duration::from_secs(30));
            return;
        }
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// Wharf with one listener on `routes` and `extra` root members.
fn wharf(routes: Value, extra: Value) -> (Server, String) {
    let server = Server::start();
    let key = listener_key();
    let mut config = json!({"listeners": {key.clone(): {"pass": "routes"}}, "routes": routes});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    server.load(&config);
    (server, key)
}

#[test]
fn forwards_the_request_line_fields_and_body_and_drops_hop_by_hop_fields() {
    let (upstream, address) = tcp_upstream(Arc::new(|_| {
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Up: yes\r\n\r\nhi".to_vec()
    }));
    let (_server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({}),
    );
    let mut conn = crate::harness::connect_listener(&key).unwrap();
    conn.send(
        b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: front.example\r\nX-Custom: kept\r\n\
          Connection: X-Drop\r\nX-Drop: gone\r\nKeep-Alive: timeout=1\r\nTE: trailers\r\n\
          Upgrade: h2c\r\nContent-Length: 8\r\n\r\nthe body",
    )
    .unwrap();
    let resp = conn.read_response().unwrap();
    assert_eq!(resp.status, 201, "{resp}");
    assert_eq!(resp.body, "hi");
    assert_eq!(resp.header("X-Up"), Some("yes"));
    assert_eq!(
        resp.header("X-Hop"),
        None,
        "a field the upstream's Connection names"
    );
    assert_eq!(resp.header("Keep-Alive"), None);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.line, "POST /a/b?x=1&y=%20 HTTP/1.1");
    assert_eq!(
        request.header("host"),
        Some("front.example"),
        "Host as sent"
    );
    assert_eq!(request.header("x-custom"), Some("kept"));
    for dropped in ["x-drop", "keep-alive", "te", "upgrade", "x-forwarded-for"] {
        assert_eq!(request.header(dropped), None, "{dropped}");
    }
    assert_ne!(request.header("connection"), Some("X-Drop"));
    assert_eq!(request.header("content-length"), Some("8"));
    assert_eq!(request.body, b"the body");
}

#[test]
fn chunked_bodies_stream_both_ways() {
    let (upstream, address) = tcp_upstream(Arc::new(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
            .to_vec()
    }));
    let (_server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({}),
    );
    let mut conn = crate::harness::connect_listener(&key).unwrap();
    conn.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let resp = conn.read_response().unwrap();
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.body, "abcdefg");
    assert_eq!(resp.header("Transfer-Encoding"), Some("chunked"));
    let seen = upstream.seen();
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[0].body, b"hello world");
}

#[test]
fn kept_alive_upstream_connections_are_reused() {
    let (upstream, address) = tcp_upstream(Arc::new(|_| ok("x")));
    let (_server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({}),
    );
    for _ in 0..10 {
        let resp = fetch(&key, "GET", "/", &[], None).unwrap();
        assert_eq!(resp.status, 200, "{resp}");
    }
    assert_eq!(upstream.seen().len(), 10);
    assert_eq!(
        upstream.accepts.load(Ordering::SeqCst),
        1,
        "one connection for ten requests"
    );
}

#[test]
fn upstreams_spread_requests_by_weight() {
    let (a, a_address) = tcp_upstream(Arc::new(|_| ok("a")));
    let (b, b_address) = tcp_upstream(Arc::new(|_| ok("b")));
    let (c, c_address) = tcp_upstream(Arc::new(|_| ok("c")));
    let server = Server::start();
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "upstreams/pool"}},
        "upstreams": {"pool": {"servers": {
            a_address: {"weight": 2},
            b_address: {},
            c_address: {"weight": 0}
        }}}
    }));
    let bodies: Vec<String> = (0..9)
        .map(|_| fetch(&key, "GET", "/", &[], None).unwrap().body)
        .collect();
    assert_eq!(bodies.iter().filter(|b| *b == "a").count(), 6, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| *b == "b").count(), 3, "{bodies:?}");
    assert_eq!((a.seen().len(), b.seen().len(), c.seen().len()), (6, 3, 0));
}

#[test]
fn a_route_passes_to_an_upstream_and_bad_upstreams_are_refused_with_paths() {
    let (_a, address) = tcp_upstream(Arc::new(|_| ok("routed")));
    let (server, key) = wharf(
        json!([{"action": {"pass": "upstreams/u"}}]),
        json!({"upstreams": {"u": {"servers": {address.clone(): {"weight": 0.5}}}}}),
    );
    assert_eq!(fetch(&key, "GET", "/", &[], None).unwrap().body, "routed");
    let before = server.snapshot();
    for (tree, path) in [
        (
            json!({"routes": [{"action": {"pass": "upstreams/none"}}]}),
            "routes/0/action/pass",
        ),
        (
            json!({"upstreams": {"u": {"servers": {"localhost:80": {}}}}}),
            "upstreams/u/servers",
        ),
        (
            json!({"upstreams": {"u": {"servers": {address.clone(): {"weight": -1}}}}}),
            "weight",
        ),
        (
            json!({"upstreams": {"u": {"servers": {address.clone(): {"weight": 1000001}}}}}),
            "weight",
        ),
        (json!({"upstreams": {"u": {}}}), "upstreams/u"),
        (
            json!({"routes": [{"action": {"proxy": "http://localhost:80"}}]}),
            "routes/0/action/proxy",
        ),
    ] {
        let mut config = before.0.clone();
        for (k, v) in tree.as_object().unwrap() {
            config[k] = v.clone();
        }
        let resp = server.put_json("/config", &config);
        assert_eq!(resp.status, 400, "{resp}");
        assert!(resp.body.contains(path), "{path}: {resp}");
    }
    assert_eq!(server.snapshot(), before);
}

#[test]
fn refused_stalled_and_malformed_upstreams_get_502_and_504() {
    let closed = free_port();
    let (_stall, stall) = tcp_upstream(Arc::new(|_| Vec::new()));
    let (_bad, bad) = tcp_upstream(Arc::new(|_| b"HTTP/1.1 abc nonsense\r\n\r\n".to_vec()));
    let (_cut, cut) = tcp_upstream(Arc::new(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some".to_vec()
    }));
    let (_server, key) = wharf(
        json!([
            {"match": {"uri": "/refused"}, "action": {"proxy": format!("http://127.0.0.1:{closed}")}},
            {"match": {"uri": "/stall"}, "action": {"proxy": format!("http://{stall}")}},
            {"match": {"uri": "/bad"}, "action": {"proxy": format!("http://{bad}")}},
            {"match": {"uri": "/cut"}, "action": {"proxy": format!("http://{cut}")}}
        ]),
        json!({"settings": {"http": {"proxy_read_timeout": 1}}}),
    );
    assert_eq!(
        fetch(&key, "GET", "/refused", &[], None).unwrap().status,
        502
    );
    assert_eq!(fetch(&key, "GET", "/stall", &[], None).unwrap().status, 504);
    assert_eq!(fetch(&key, "GET", "/bad", &[], None).unwrap().status, 502);
    // The head went out; the short body must not look complete.
    let cut = fetch(&key, "GET", "/cut", &[], None);
    assert!(cut.is_err() || cut.is_ok_and(|r| r.bytes.len() < 100));
}

#[test]
fn trailers_come_through_and_the_upstreams_server_field_is_replaced() {
    let (_up, up) = tcp_upstream(Arc::new(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\
          Server: upstream/1.0\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 5d41402a\r\n\
          Content-Length: 99\r\n\r\n"
            .to_vec()
    }));
    let (_server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{up}")}}]),
        json!({}),
    );
    let mut conn = crate::harness::connect_listener(&key).unwrap();
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let read = conn.read_to_close(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&read.bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    // hyper's client hands field names over in lower case.
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ntrailer: x-checksum"),
        "announced: {head}"
    );
    assert!(
        head.contains("\r\nserver: wharf/"),
        "Wharf's Server, as Unit: {head}"
    );
    assert!(!head.contains("upstream/1.0"), "{head}");
    assert_eq!(
        body.to_ascii_lowercase(),
        "5\r\nhello\r\n0\r\nx-checksum: 5d41402a\r\n\r\n",
        "the trailer after the last chunk; a framing field is not a trailer"
    );
}

#[test]
fn a_connection_that_does_not_open_gets_504_after_proxy_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a
    // connection to it neither opens nor is refused.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    let mut hanging = false;
    for _ in 0..8192 {
        match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(_) => {
                hanging = true;
                break;
            }
        }
    }
    assert!(hanging, "the accept queue never filled");
    let (server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({"settings": {"http": {"proxy_connect_timeout": 1}}}),
    );
    let started = std::time::Instant::now();
    let answer = fetch(&key, "GET", "/", &[], None).unwrap();
    assert_eq!(answer.status, 504, "{}", server.log());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    drop((listener, queued));
}

#[test]
fn an_upstream_that_takes_no_body_gets_504_after_proxy_send_timeout() {
    // Accepts and never reads: once the socket buffers are full, the upload stalls.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
        }
    });
    let (server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({"settings": {"http": {"proxy_send_timeout": 1, "max_body_size": 256 << 20}}}),
    );
    let size: usize = 192 << 20;
    let mut stream = TcpStream::connect(&key).unwrap();
    let head = format!("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The body goes from another thread while this one waits for the answer.
    let sender = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            let piece = vec![b'x'; 1 << 20];
            for _ in 0..(size >> 20) {
                if stream.write_all(&piece).is_err() {
                    return;
                }
            }
        })
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 504", "{}", server.log());
    drop(stream);
    sender.join().unwrap();
}

#[test]
fn a_unix_socket_upstream() {
    let server = Server::start();
    let path = server.dir().join("up.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let upstream = spawn(Arc::new(|_| ok("over unix")), move || {
        listener.accept().ok().map(|(s, _)| Box::new(s) as _)
    });
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [{"action": {"proxy": format!("http://unix:{}", path.display())}}]
    }));
    let resp = fetch(&key, "GET", "/u", &[], None).unwrap();
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "over unix"),
        "{resp}"
    );
    assert_eq!(upstream.seen()[0].line, "GET /u HTTP/1.1");
}

#[test]
fn large_bodies_stream_through_with_the_rss_bounded() {
    const SIZE: usize = 1024 * 1024 * 1024;
    const PIECE: usize = 1 << 20;
    // An upstream that streams too: a GET gets SIZE bytes written piece by piece, a PUT
    // is answered with the number of body bytes it read (none kept).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let uploaded = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&uploaded);
    thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            let counted = Arc::clone(&counted);
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut field = String::new();
                    reader.read_line(&mut field).unwrap();
                    if field.trim_end().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = field.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let piece = vec![b'd'; PIECE];
                if line.starts_with("PUT") {
                    let mut left: usize = length;
                    let mut buf = vec![0u8; PIECE];
                    while left > 0 {
                        let n = reader.read(&mut buf[..left.min(PIECE)]).unwrap();
                        assert!(n > 0, "the upload ended {left} bytes short");
                        left -= n;
                    }
                    counted.store(length, Ordering::SeqCst);
                    let _ = writer.write_all(&ok(&length.to_string()));
                } else {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
                    writer.write_all(head.as_bytes()).unwrap();
                    for _ in 0..SIZE / PIECE {
                        if writer.write_all(&piece).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let (server, key) = wharf(
        json!([{"action": {"proxy": format!("http://{address}")}}]),
        json!({"settings": {"http": {"max_body_size": 1024 * 1024 * 1024}}}),
    );
    let rss = || crate::harness::vm_rss_kib(server.pid()).expect("VmRSS");
    let before = rss();
    // Download, read slowly at first so that back-pressure has to hold the body.
    let mut conn = TcpStream::connect(&key).unwrap();
    conn.write_all(b"GET /down HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while received < SIZE {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n;
    }
    let after_download = rss();
    // Upload.
    let mut conn = TcpStream::connect(&key).unwrap();
    conn.write_all(
        format!("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let piece = vec![b'u'; PIECE];
    for _ in 0..SIZE / PIECE {
        conn.write_all(&piece).unwrap();
    }
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let after_upload = rss();
    assert_eq!(uploaded.load(Ordering::SeqCst), SIZE);
    for after in [after_download, after_upload] {
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB for {SIZE} bytes"
        );
    }
}

//! Socket-level tests of the server: a real listener, an echoing handler, and a client
//! that writes raw bytes and reads raw responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::decode::{BodyDecoder, Decoded};
use super::{Completion, Handler, Request, Response, ResponseBody, Settings, StreamAbort, serve};

/// Long enough never to trip on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// Echoes the request (or, by target, streams, panics or ignores the body).
struct Echo;

impl Handler for Echo {
    type Pinned = ();

    async fn serve(&self, request: Request, _: Option<()>) -> (Response, Option<Completion>) {
        (answer(request).await, None)
    }
}

async fn answer(request: Request) -> Response {
    match &request.target.raw()[..] {
        b"/panic" => panic!("the test handler panics"),
        b"/ignore" => text("ignored"),
        b"/stream" => stream(None, &["one ", "two ", "three"]),
        b"/stream-length" => stream(Some(13), &["one ", "two ", "three"]),
        b"/stream-short" => stream(Some(20), &["one ", "two ", "three"]),
        b"/duplex" => {
            // Answers at once and streams the body back as it arrives.
            let (tx, rx) = mpsc::channel(1);
            let mut body = request.body;
            tokio::spawn(async move {
                while let Ok(Some(piece)) = body.chunk().await {
                    if tx.send(Ok(piece)).await.is_err() {
                        return;
                    }
                }
            });
            Response {
                status: 200,
                headers: vec![],
                body: ResponseBody::Stream(Box::new(rx)),
            }
        }
        b"/stream-abort" => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(b"partial"))).await;
                let _ = tx.send(Err(StreamAbort("test".into()))).await;
            });
            Response {
                status: 200,
                headers: vec![],
                body: ResponseBody::Stream(Box::new(rx)),
            }
        }
        _ => echo(request).await,
    }
}

fn text(body: &str) -> Response {
    Response {
        status: 200,
        headers: vec![(
            Bytes::from_static(b"Content-Type"),
            Bytes::from_static(b"text/plain"),
        )],
        body: ResponseBody::Full(Bytes::copy_from_slice(body.as_bytes())),
    }
}

fn stream(length: Option<u64>, pieces: &[&'static str]) -> Response {
    let (tx, rx) = mpsc::channel(1);
    let pieces = pieces.to_vec();
    tokio::spawn(async move {
        for piece in pieces {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if tx
                .send(Ok(Bytes::from_static(piece.as_bytes())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let headers = length
        .map(|n| {
            vec![(
                Bytes::from_static(b"Content-Length"),
                Bytes::from(n.to_string()),
            )]
        })
        .unwrap_or_default();
    Response {
        status: 200,
        headers,
        body: ResponseBody::Stream(Box::new(rx)),
    }
}

async fn echo(mut request: Request) -> Response {
    let mut out = format!(
        "{} {} {}\n",
        String::from_utf8_lossy(&request.method),
        String::from_utf8_lossy(request.target.raw()),
        request.version.as_str()
    );
    for (name, value) in &request.headers {
        out.push_str(&format!(
            "{}: {}\n",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        ));
    }
    out.push_str(&format!("length: {:?}\n\n", request.body.content_length()));
    loop {
        match request.body.chunk().await {
            Ok(Some(piece)) => out.push_str(&String::from_utf8_lossy(&piece)),
            Ok(None) => break,
            Err(e) => {
                out.push_str(&format!("body error: {e:?}"));
                break;
            }
        }
    }
    text(&out)
}

struct Server {
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn start(settings: Settings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(serve(
        listener.into(),
        Arc::new(Echo),
        Arc::new(ArcSwap::from_pointee(settings)),
        Arc::default(),
        stop,
    ));
    Server {
        address,
        shutdown,
        task,
    }
}

fn quick_settings() -> Settings {
    Settings {
        header_read_timeout: Duration::from_millis(200),
        body_read_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(200),
        ..Settings::default()
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client<S> {
    stream: S,
    buf: BytesMut,
}

impl Client<TcpStream> {
    async fn connect(address: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(address).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// More bytes, or `false` at the end of the stream.
    async fn fill(&mut self) -> bool {
        self.buf.reserve(4096);
        match timeout(PATIENCE, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_) => panic!("the server sent nothing for {PATIENCE:?}"),
        }
    }

    /// The next response; `None` if the connection closes first.
    async fn reply(&mut self, head_request: bool) -> Option<Reply> {
        let (len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut slots);
            match response.parse(&self.buf).expect("a valid response head") {
                httparse::Status::Complete(len) => {
                    let headers = response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (len, response.code.expect("status"), headers);
                }
                httparse::Status::Partial => {
                    if !self.fill().await {
                        assert!(self.buf.is_empty(), "the connection closed mid-head");
                        return None;
                    }
                }
            }
        };
        self.buf.advance(len);
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return Some(reply);
        }
        if reply.header("transfer-encoding").is_some() {
            let mut decoder = BodyDecoder::chunked(u64::MAX);
            loop {
                match decoder
                    .decode(&mut self.buf, 1 << 20)
                    .expect("valid chunks")
                {
                    Decoded::Data(piece) => reply.body.extend_from_slice(&piece),
                    Decoded::End => break,
                    Decoded::NeedMore => {
                        assert!(self.fill().await, "the connection closed mid-body")
                    }
                }
            }
        } else if let Some(length) = reply.header("content-length") {
            let length: usize = length.parse().expect("a numeric Content-Length");
            while self.buf.len() < length {
                assert!(self.fill().await, "the connection closed mid-body");
            }
            reply.body = self.buf.split_to(length).to_vec();
        } else {
            while self.fill().await {}
            reply.body = self.buf.split().to_vec();
        }
        Some(reply)
    }

    async fn get(&mut self, target: &str) -> Reply {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await;
        self.reply(false).await.expect("a response")
    }

    /// The server closes the connection (after any bytes still to come).
    async fn closed(&mut self) -> bool {
        loop {
            self.buf.clear();
            if !self.fill().await {
                return true;
            }
        }
    }
}

#[tokio::test]
async fn header_case_and_order_are_kept() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"GET /a?b=c HTTP/1.1\r\nHost: test\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "GET /a?b=c HTTP/1.1\nHost: test\nX-B: 1\nx-a: 2\nX-B: 3\nlength: Some(0)\n\n"
    );
    assert!(reply.header("date").is_some());
    assert!(
        reply
            .header("server")
            .is_some_and(|s| s.starts_with("Wharf/"))
    );
    assert_eq!(reply.header("connection"), None);
}

#[tokio::test]
async fn keep_alive_serves_requests_in_turn() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    for i in 0..3 {
        let reply = client.get(&format!("/{i}")).await;
        assert!(reply.text().starts_with(&format!("GET /{i} HTTP/1.1\n")));
    }
    client
        .send(b"GET /last HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(
            b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
              POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /stream HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /4 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await;
    let first = client.reply(false).await.expect("reply 1");
    assert!(first.text().starts_with("GET /1 "));
    let second = client.reply(false).await.expect("reply 2");
    assert!(second.text().starts_with("POST /2 ") && second.text().ends_with("\n\nhello"));
    let third = client.reply(false).await.expect("reply 3");
    assert!(third.text().starts_with("POST /3 ") && third.text().ends_with("\n\nabc"));
    let fourth = client.reply(false).await.expect("reply 4");
    assert_eq!(fourth.text(), "one two three");
    let fifth = client.reply(false).await.expect("reply 5");
    assert!(fifth.text().starts_with("GET /4 "));
}

#[tokio::test]
async fn chunked_request_bodies_are_decoded() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    client
        .send(b"7 ; a=\"b\"\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert!(
        reply.text().ends_with("length: None\n\nhello, world"),
        "{}",
        reply.text()
    );
    // The connection is still usable.
    assert!(client.get("/after").await.text().starts_with("GET /after "));
}

#[tokio::test]
async fn content_length_bodies_are_streamed() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    let body = vec![b'x'; 300_000];
    let mut request = b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n".to_vec();
    request.extend_from_slice(&body);
    client.send(&request).await;
    let reply = client.reply(false).await.expect("a response");
    assert!(
        reply
            .text()
            .ends_with(&format!("length: Some(300000)\n\n{}", "x".repeat(300_000)))
    );
    assert!(client.get("/after").await.text().starts_with("GET /after "));
}

#[tokio::test]
async fn responses_stream_while_the_body_arrives() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(
            b"POST /duplex HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await;
    while !client.buf.ends_with(b"5\r\nhello\r\n") {
        assert!(client.fill().await, "closed early");
    }
    client.send(b"6\r\n world\r\n0\r\n\r\n").await;
    while !client.buf.ends_with(b"6\r\n world\r\n0\r\n\r\n") {
        assert!(client.fill().await, "closed early");
    }
    client.buf.clear();
    assert!(client.get("/after").await.text().starts_with("GET /after "));
}

#[tokio::test]
async fn expect_continue_is_answered_when_the_body_is_read() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let interim = client.reply(false).await.expect("100 Continue");
    assert_eq!(interim.status, 100);
    client.send(b"body").await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 200);
    assert!(reply.text().ends_with("\n\nbody"));

    // A handler that never reads: no 100, and the connection closes after.
    client
        .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ignored");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn unread_small_bodies_are_read_past() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(
        client.reply(false).await.expect("a response").text(),
        "ignored"
    );
    client.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").await;
    assert_eq!(
        client.reply(false).await.expect("a response").text(),
        "ignored"
    );
    assert!(client.get("/after").await.text().starts_with("GET /after "));

    // Too much to read past: the connection closes.
    client
        .send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\nabc")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.text(), "ignored");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let settings = Settings {
        max_body_size: 10,
        ..Settings::default()
    };
    let server = start(settings).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.text(),
        "<!DOCTYPE html><title>Error 413</title><p>Error 413.\r\n"
    );
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);

    // A chunked body that grows too large: the handler hears of it, the client gets
    // 413 whatever the handler answered.
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn bad_requests_get_error_pages() {
    let server = start(Settings::default()).await;
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nFolded: a\r\n b\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ];
    for &(request, status) in cases {
        let mut client = Client::connect(server.address).await;
        client.send(request).await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
        assert!(reply.text().contains(&format!("Error {status}")));
        assert!(client.closed().await);
    }

    // A target too long for the head: 414, not 431.
    let mut client = Client::connect(server.address).await;
    let mut request = b"GET /".to_vec();
    request.extend_from_slice(&vec![b'a'; 64 * 1024]);
    client.send(&request).await;
    assert_eq!(client.reply(false).await.expect("a response").status, 414);

    let mut client = Client::connect(server.address).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..600 {
        request.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    client.send(&request).await;
    assert_eq!(client.reply(false).await.expect("a response").status, 431);

    let mut client = Client::connect(server.address).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ".to_vec();
    request.extend_from_slice(&vec![b'a'; 70 * 1024]);
    client.send(&request).await;
    assert_eq!(client.reply(false).await.expect("a response").status, 431);

    // Many fields are fine.
    let mut client = Client::connect(server.address).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..150 {
        request.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    client.send(&request).await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("\nX-149: 149\n"));
}

#[tokio::test]
async fn http10_streams_end_with_the_connection() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client.send(b"GET /stream HTTP/1.0\r\n\r\n").await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.text(), "one two three");
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.header("content-length"), None);
    assert_eq!(reply.header("transfer-encoding"), None);

    // HTTP/1.0 keep-alive, when asked for and the length is known.
    let mut client = Client::connect(server.address).await;
    for _ in 0..2 {
        client
            .send(b"GET /stream-length HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let reply = client.reply(false).await.expect("a response");
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(reply.text(), "one two three");
    }
    client.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn streamed_responses_follow_their_framing() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    let reply = client.get("/stream").await;
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.text(), "one two three");
    let reply = client.get("/stream-length").await;
    assert_eq!(reply.header("content-length"), Some("13"));
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.text(), "one two three");

    // Short of its Content-Length: the connection closes.
    client
        .send(b"GET /stream-short HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let _ = timeout(PATIENCE, client.stream.read_to_end(&mut raw))
        .await
        .expect("closed");
    assert!(raw.ends_with(b"\r\n\r\none two three"));

    // Aborted: the chunked body is left unterminated and the connection closes.
    let mut client = Client::connect(server.address).await;
    client
        .send(b"GET /stream-abort HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let _ = timeout(PATIENCE, client.stream.read_to_end(&mut raw))
        .await
        .expect("closed");
    assert!(
        raw.ends_with(b"\r\n\r\n7\r\npartial\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[tokio::test]
async fn head_requests_get_heads_only() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    for (target, length) in [
        ("/", None),
        ("/ignore", Some("7")),
        ("/stream-length", Some("13")),
        ("/stream", None),
    ] {
        client
            .send(format!("HEAD {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let reply = client.reply(true).await.expect("a response");
        assert_eq!(reply.status, 200);
        if let Some(length) = length {
            assert_eq!(reply.header("content-length"), Some(length));
        }
        assert_eq!(reply.header("transfer-encoding"), None);
    }
    // No body bytes were sent: the next response follows at once.
    assert!(client.get("/after").await.text().starts_with("GET /after "));
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    let reply = client.get("/panic").await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("Error 500"));
    assert!(client.get("/after").await.text().starts_with("GET /after "));
    let mut other = Client::connect(server.address).await;
    assert_eq!(other.get("/").await.status, 200);
}

#[tokio::test]
async fn slow_heads_and_idle_connections_time_out() {
    let server = start(quick_settings()).await;
    // Part of a head, then silence: 408 and close.
    let mut client = Client::connect(server.address).await;
    client.send(b"GET / HTTP/1.1\r\nHost:").await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 408);
    assert!(client.closed().await);
    // Nothing at all: 408 and close, as Unit.
    let mut client = Client::connect(server.address).await;
    assert_eq!(client.reply(false).await.map(|r| r.status), Some(408));
    assert!(client.closed().await);
    // Idle after a request: the same.
    let mut client = Client::connect(server.address).await;
    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(client.reply(false).await.map(|r| r.status), Some(408));
    assert!(client.closed().await);
    // A stalled body: 408, whatever the handler made of it.
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(client.closed().await);
    // A body that drips within body_read_timeout but past body_total_timeout: 408.
    let server = start(Settings {
        body_read_timeout: Duration::from_secs(5),
        body_total_timeout: Duration::from_millis(300),
        ..quick_settings()
    })
    .await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\na")
        .await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(b"b").await;
    }
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 408, "{}", reply.text());
}

#[tokio::test]
async fn clients_closing_mid_body_are_reported() {
    let server = start(Settings::default()).await;
    let mut client = Client::connect(server.address).await;
    client
        .send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    client.stream.shutdown().await.expect("half-close");
    let reply = client.reply(false).await.expect("a response");
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let server = start(Settings::default()).await;
    let mut idle = Client::connect(server.address).await;
    assert_eq!(idle.get("/").await.status, 200);
    server.shutdown.send_replace(true);
    timeout(PATIENCE, server.task)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(idle.closed().await);
    assert!(TcpStream::connect(server.address).await.is_err());
}

#[tokio::test]
async fn unix_sockets_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("http.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(serve(
        listener.into(),
        Arc::new(Echo),
        Arc::new(ArcSwap::from_pointee(Settings::default())),
        Arc::default(),
        stop,
    ));
    let stream = UnixStream::connect(&path).await.expect("connect");
    let mut client = Client {
        stream,
        buf: BytesMut::new(),
    };
    let reply = client.get("/unix").await;
    assert!(reply.text().starts_with("GET /unix HTTP/1.1\n"));
    shutdown.send_replace(true);
    timeout(PATIENCE, task)
        .await
        .expect("serve returns")
        .expect("no panic");
}

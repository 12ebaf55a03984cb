//! A `wasi:http/proxy` component for tests: each path shows one behaviour, well-behaved
//! or hostile, so the server's handling of it can be checked from outside.
//!
//! - `/request`: the request as the guest sees it (method, path and query, scheme,
//!   authority, then every header as `name: value`), one per line.
//! - `/env`: the environment variables, `NAME=value` per line.
//! - `/stdout`: prints a line to stdout and one to stderr, answers `printed`.
//! - `/outbound`: tries an outbound request and answers with the error it got.
//! - `/file?/path`: answers the contents of the file at `/path` (through the preopens).
//! - `/download?N`: streams `N` bytes, byte `i` being `i % 251`.
//! - `/trap`, `/panic`, `/exit`: fail before answering.
//! - `/no-response`: returns without setting the response.
//! - `/body-error`: announces 1000000 bytes, sends 10 and finishes the body.
//! - `/trap-mid-body`: sends the head and part of the body, then traps.
//! - `/loop`: spins forever.
//! - `/loop-after-head`: sends the head and a first piece of a chunked body, then spins
//!   forever.

use std::io::Write as _;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct Hostile;

wasi::http::proxy::export!(Hostile);

impl wasi::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match path {
            "/request" => respond(response_out, describe(&request).as_bytes()),
            "/env" => {
                let vars: String = std::env::vars().map(|(k, v)| format!("{k}={v}\n")).collect();
                respond(response_out, vars.as_bytes());
            }
            "/stdout" => {
                println!("a line on the guest's stdout");
                eprintln!("a line on the guest's stderr");
                respond(response_out, b"printed");
            }
            "/outbound" => respond(response_out, outbound().as_bytes()),
            "/file" => match std::fs::read(query) {
                Ok(bytes) => respond(response_out, &bytes),
                Err(e) => respond(response_out, format!("error: {e}").as_bytes()),
            },
            "/download" => download(response_out, query.parse().unwrap_or(0)),
            "/trap" => core::arch::wasm32::unreachable(),
            "/panic" => panic!("the guest panicked on purpose"),
            "/exit" => std::process::exit(3),
            "/no-response" => {}
            "/body-error" => body_error(response_out),
            "/trap-mid-body" => {
                let (body, mut out) = start(response_out, None);
                out.write_all(b"partial").expect("the client takes the body");
                out.flush().expect("the client takes the body");
                drop(body);
                core::arch::wasm32::unreachable()
            }
            "/loop" => spin(),
            "/loop-after-head" => {
                let (_body, mut out) = start(response_out, None);
                out.write_all(b"started\n").expect("the client takes the body");
                out.flush().expect("the client takes the body");
                spin()
            }
            _ => respond(response_out, b"hostile component\n"),
        }
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn describe(request: &IncomingRequest) -> String {
    use wasi::http::types::Method;
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other,
    };
    let scheme = match request.scheme() {
        Some(Scheme::Http) => "http".to_owned(),
        Some(Scheme::Https) => "https".to_owned(),
        Some(Scheme::Other(other)) => other,
        None => "none".to_owned(),
    };
    let mut text = format!(
        "method: {method}\npath: {}\nscheme: {scheme}\nauthority: {}\n",
        request.path_with_query().unwrap_or_default(),
        request.authority().unwrap_or_default(),
    );
    for (name, value) in request.headers().entries() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
    }
    text
}

fn outbound() -> String {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("example.com"));
    let _ = request.set_path_with_query(Some("/"));
    match outgoing_handler::handle(request, None) {
        Err(e) => format!("outbound request failed: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("outbound request answered {}", response.status()),
                Some(Ok(Err(e))) => format!("outbound request failed: {e:?}"),
                Some(Err(())) | None => "outbound request: no result".to_owned(),
            }
        }
    }
}

/// Sets a 200 response and hands back its body and the body's stream.
fn start(
    response_out: ResponseOutparam,
    length: Option<u64>,
) -> (OutgoingBody, wasi::io::streams::OutputStream) {
    let mut fields = vec![("content-type".to_owned(), b"text/plain".to_vec())];
    if let Some(length) = length {
        fields.push(("content-length".to_owned(), length.to_string().into_bytes()));
    }
    let headers = Fields::from_list(&fields).expect("valid header fields");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let out = body.write().expect("the stream is taken once");
    (body, out)
}

fn respond(response_out: ResponseOutparam, bytes: &[u8]) {
    let (body, mut out) = start(response_out, Some(bytes.len() as u64));
    out.write_all(bytes).expect("the client takes the body");
    out.flush().expect("the client takes the body");
    drop(out);
    OutgoingBody::finish(body, None).expect("the body is complete");
}

fn download(response_out: ResponseOutparam, size: u64) {
    let (body, mut out) = start(response_out, Some(size));
    let pattern: Vec<u8> = (0..64 * 1024 * 251).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < size {
        // Every piece starts at a multiple of 251, so it continues the pattern.
        let n = (size - sent).min(pattern.len() as u64) as usize;
        out.write_all(&pattern[..n]).expect("the client takes the body");
        sent += n as u64;
    }
    out.flush().expect("the client takes the body");
    drop(out);
    OutgoingBody::finish(body, None).expect("the body is complete");
}

fn body_error(response_out: ResponseOutparam) {
    let (body, mut out) = start(response_out, Some(1_000_000));
    out.write_all(b"0123456789").expect("the client takes the body");
    out.flush().expect("the client takes the body");
    drop(out);
    // Fewer bytes than announced: finishing fails and the host ends the stream in error.
    let _ = OutgoingBody::finish(body, None);
}

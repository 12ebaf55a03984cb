//! `settings.telemetry`: a span per request exported over OTLP to a receiver the test
//! runs on loopback (HTTP/protobuf, and gRPC over HTTP/2), which decodes what it gets.
//! The client's `traceparent` is followed; the guest and a proxied server get Wharf's
//! span as their parent; a collector that is down slows and fails no request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::json;

use crate::harness::{Server, example_guest, fetch, listener_key, wait_until, wasm_app};

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(body: &[u8], spans: &Spans) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
    let mut out = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| value_text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
}

fn value_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver: answers every POST with 200 and decodes its protobuf body.
fn http_receiver() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = Spans::default();
    let seen = Arc::clone(&spans);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = Arc::clone(&seen);
            thread::spawn(move || serve_http(stream, &seen));
        }
    });
    (endpoint, spans)
}

fn serve_http(stream: TcpStream, spans: &Spans) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut field = String::new();
            reader.read_line(&mut field).unwrap();
            let field = field.trim_end();
            if field.is_empty() {
                break;
            }
            let (name, value) = field.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        assert_eq!(content_type, "application/x-protobuf");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        decode(&body, spans);
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

/// An OTLP/gRPC receiver: the TraceService's Export over HTTP/2, answered with an empty
/// response and `grpc-status: 0`.
fn grpc_receiver() -> (String, Spans) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let spans = Spans::default();
    let seen = Arc::clone(&spans);
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let _ = serve_grpc(socket, &seen).await;
                });
            }
        });
    });
    (endpoint, spans)
}

async fn serve_grpc(socket: tokio::net::TcpStream, spans: &Spans) -> Result<(), h2::Error> {
    let mut connection = h2::server::handshake(socket).await?;
    // The connection makes progress only while `accept` is polled: each exchange runs
    // in a task of its own.
    while let Some(exchange) = connection.accept().await {
        let (request, respond) = exchange?;
        let spans = Arc::clone(spans);
        tokio::spawn(async move {
            if let Err(e) = export(request, respond, &spans).await {
                eprintln!("the gRPC receiver failed: {e}");
            }
        });
    }
    Ok(())
}

async fn export(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    spans: &Spans,
) -> Result<(), h2::Error> {
    assert_eq!(
        request.uri().path(),
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    let mut body = request.into_body();
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    // One length-prefixed message: a compression flag, a 4-byte length, protobuf.
    assert_eq!(message[0], 0, "uncompressed");
    let length = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
    decode(&message[5..5 + length], spans);
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(head, false)?;
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers)?;
    Ok(())
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A server whose `front` listener proxies to its `back` listener, which serves the
/// echo guest, with telemetry sending to `endpoint`.
fn traced_server(endpoint: &str, protocol: &str) -> (Server, String) {
    let server = Server::start();
    let (front, back) = (listener_key(), listener_key());
    server.load(&json!({
        "settings": {"telemetry": {
            "endpoint": endpoint, "protocol": protocol, "batch_size": 2
        }},
        "listeners": {
            &front: {"pass": "routes/front"},
            &back: {"pass": "applications/echo"}
        },
        "routes": {"front": [{"action": {"proxy": format!("http://{back}")}}]},
        "applications": {"echo": wasm_app(&example_guest("echo"))}
    }));
    (server, front)
}

/// A request carrying the client's trace goes through the proxy to the guest: three
/// spans' worth of context, two spans exported, each the child of the one before.
fn check_propagation(server: &Server, front: &str, spans: &Spans) {
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let resp = fetch(
        front,
        "GET",
        "/traced?q=1",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        None,
    )
    .expect("a response");
    assert_eq!(resp.status, 200, "{resp}");
    // The guest saw a traceparent in the client's trace, naming the back listener's span.
    let seen = resp
        .body
        .lines()
        .find_map(|line| line.strip_prefix("traceparent = "))
        .unwrap_or_else(|| panic!("the guest saw no traceparent:\n{}", resp.body))
        .to_owned();
    assert!(seen.starts_with(&format!("00-{CLIENT_TRACE}-")), "{seen}");
    assert!(seen.ends_with("-01"), "{seen}");
    assert!(
        resp.body.contains("tracestate = congo=t61rcWkgMzE"),
        "{}",
        resp.body
    );
    let guest_parent = seen[36..52].to_owned();
    // The client is told the front span.
    let told = resp
        .header("traceparent")
        .expect("a traceparent in the response");
    assert!(told.starts_with(&format!("00-{CLIENT_TRACE}-")), "{told}");

    assert!(
        wait_until(Duration::from_secs(30), || spans.lock().unwrap().len() >= 2),
        "the receiver got {:?}\n{}",
        spans.lock().unwrap(),
        server.log()
    );
    let spans = spans.lock().unwrap().clone();
    let front_span = spans
        .iter()
        .find(|s| s.parent_span_id == CLIENT_SPAN)
        .unwrap_or_else(|| panic!("no span is the client's child: {spans:?}"));
    let back_span = spans
        .iter()
        .find(|s| s.parent_span_id == front_span.span_id)
        .unwrap_or_else(|| panic!("no span is the front span's child: {spans:?}"));
    for span in [front_span, back_span] {
        assert_eq!(span.trace_id, CLIENT_TRACE);
        assert_eq!(span.name, "GET");
        assert_eq!(span.service, "wharf");
        assert_eq!(span.attributes["http.request.method"], "GET");
        assert_eq!(span.attributes["url.path"], "/traced");
        assert_eq!(span.attributes["url.query"], "q=1");
        assert_eq!(span.attributes["http.response.status_code"], "200");
    }
    assert_eq!(back_span.span_id, guest_parent);
    assert_eq!(&told[36..52], front_span.span_id);
    assert_eq!(back_span.attributes["wharf.application"], "echo");
    assert!(!front_span.attributes.contains_key("wharf.application"));
}

#[test]
fn spans_go_to_an_otlp_http_collector_and_the_trace_context_to_the_guest_and_upstream() {
    let (endpoint, spans) = http_receiver();
    let (server, front) = traced_server(&endpoint, "http");
    check_propagation(&server, &front, &spans);

    // Metrics count what was exported.
    let metrics = server.get("/metrics").body;
    let exported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_telemetry_spans_total{outcome=\"exported\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the exported count");
    assert!(exported >= 2.0, "{metrics}");
}

#[test]
fn spans_go_to_an_otlp_grpc_collector() {
    let (endpoint, spans) = grpc_receiver();
    let (server, front) = traced_server(&endpoint, "grpc");
    check_propagation(&server, &front, &spans);
}

#[test]
fn a_request_without_a_trace_starts_one_and_sampling_zero_records_none() {
    let (endpoint, spans) = http_receiver();
    let server = Server::start();
    let key = listener_key();
    let config = |ratio: f64| {
        json!({
            "settings": {"telemetry": {
                "endpoint": &endpoint, "protocol": "HTTP", "sampling_ratio": ratio
            }},
            "listeners": {&key: {"pass": "applications/echo"}},
            "applications": {"echo": wasm_app(&example_guest("echo"))}
        })
    };
    server.load(&config(0.0));
    for _ in 0..20 {
        let resp = fetch(&key, "GET", "/", &[], None).expect("a response");
        assert_eq!(resp.status, 200);
        // Not recorded, yet the context goes on, marked as not sampled.
        assert!(resp.body.contains("traceparent = 00-"), "{}", resp.body);
        assert!(
            resp.header("traceparent")
                .is_some_and(|t| t.ends_with("-00"))
        );
    }
    // A client's sampled trace is still followed at ratio 0.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    fetch(&key, "GET", "/", &[("traceparent", &sampled)], None).expect("a response");

    server.load(&config(1.0));
    let resp = fetch(&key, "GET", "/fresh", &[], None).expect("a response");
    let told = resp
        .header("traceparent")
        .expect("a traceparent")
        .to_owned();
    assert!(
        wait_until(Duration::from_secs(30), || spans.lock().unwrap().len() >= 2),
        "{:?}\n{}",
        spans.lock().unwrap(),
        server.log()
    );
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(
        spans.iter().any(|s| s.trace_id == CLIENT_TRACE),
        "{spans:?}"
    );
    let fresh = spans
        .iter()
        .find(|s| s.attributes["url.path"] == "/fresh")
        .unwrap_or_else(|| panic!("{spans:?}"));
    assert_eq!(fresh.parent_span_id, "", "a root span");
    assert_eq!(told, format!("00-{}-{}-01", fresh.trace_id, fresh.span_id));
}

#[test]
fn a_collector_that_is_down_fails_no_request_and_the_failures_are_counted() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start();
    let key = listener_key();
    server.load(&json!({
        "settings": {"telemetry": {"endpoint": endpoint, "protocol": "http", "batch_size": 1}},
        "listeners": {&key: {"pass": "applications/echo"}},
        "applications": {"echo": wasm_app(&example_guest("echo"))}
    }));
    for _ in 0..20 {
        let resp = fetch(&key, "GET", "/", &[], None).expect("a response");
        assert_eq!(resp.status, 200);
    }
    let failed = || {
        server
            .get("/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("wharf_telemetry_spans_total{outcome=\"failed\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || failed() >= 1.0),
        "{}",
        server.get("/metrics").body
    );
    assert!(
        server.log().contains("spans were not exported"),
        "{}",
        server.log()
    );
}

#[test]
fn invalid_telemetry_settings_are_refused_with_their_paths() {
    let server = Server::start();
    for (telemetry, detail) in [
        (json!({"protocol": "http"}), "settings/telemetry"),
        (
            json!({"endpoint": "http://127.0.0.1:4318", "protocol": "udp"}),
            "settings/telemetry/protocol: must be \"http\" or \"grpc\"",
        ),
        (
            json!({"endpoint": "https://collector:4318", "protocol": "http"}),
            "settings/telemetry/endpoint: must be an http:// URL",
        ),
        (
            json!({"endpoint": "http://c:4318", "protocol": "http", "sampling_ratio": 1.5}),
            "settings/telemetry/sampling_ratio: must be a number from 0 to 1",
        ),
        (
            json!({"endpoint": "http://c:4318", "protocol": "http", "batch_size": 0}),
            "settings/telemetry/batch_size: must be an integer from 1 to 65536",
        ),
        (
            json!({"endpoint": "http://c:4318", "protocol": "http", "headers": {}}),
            "settings/telemetry",
        ),
    ] {
        let resp = server.put_json("/config/settings", &json!({"telemetry": telemetry}));
        assert_eq!(resp.status, 400, "{telemetry}: {resp}");
        let answer: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
        let said = answer["detail"].as_str().unwrap_or_default();
        assert!(said.starts_with(detail), "{telemetry}: {said}");
    }
}

#[test]
fn a_graceful_stop_sends_the_spans_still_queued() {
    let (endpoint, spans) = http_receiver();
    let mut server = Server::start();
    let key = listener_key();
    // The default batch waits up to a second to fill; the stop must not wait for that.
    server.load(&json!({
        "settings": {"telemetry": {"endpoint": endpoint, "protocol": "http"}},
        "listeners": {&key: {"pass": "applications/echo"}},
        "applications": {"echo": wasm_app(&example_guest("echo"))}
    }));
    let resp = fetch(&key, "GET", "/last", &[], None).expect("a response");
    assert_eq!(resp.status, 200);
    let status = server.stop_with("QUIT");
    assert!(status.success(), "{status:?}\n{}", server.log());
    // The receiver recorded the span before it answered the export the stop waited for.
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}\n{}", server.log());
    assert_eq!(spans[0].attributes["url.path"], "/last");
}

//! `/metrics`: the Prometheus exposition on the control socket, in the text format by
//! default and OpenMetrics when `Accept` asks for it; the counts by application,
//! listener and status, and bounded labels.

use std::collections::BTreeMap;

use serde_json::json;

use std::time::Duration;

use crate::harness::{
    Conn, Server, Wat, assert_done, fetch, guest_app, listener_key, path_str, wait_until, wasm_app,
    write_file,
};

/// One sample: its name and labels (sorted), and its value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses the text format strictly enough to catch a malformed exposition: every
/// sample line is `name{labels} value`, every sample belongs to a family that has a
/// `# TYPE` before it. Returns the samples and the families' types.
fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels: Vec<(String, String)> = labels
                    .split("\",")
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let family = types.keys().any(|family| {
            name.strip_prefix(family.as_str())
                .is_some_and(|suffix| ["", "_total", "_bucket", "_sum", "_count"].contains(&suffix))
        });
        assert!(family, "a sample before its # TYPE: {line}");
        let mut labels = labels;
        labels.sort();
        samples.insert((name.to_owned(), labels), value);
    }
    (samples, types)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

#[test]
fn metrics_count_requests_by_app_listener_and_code_with_bounded_labels() {
    let server = Server::start();
    let listener = listener_key();
    let config = json!({
        "listeners": {&listener: {"pass": "routes"}},
        "routes": [
            {"match": {"uri": "/teapot"}, "action": {"return": 418}},
            {"action": {"pass": "applications/hello"}}
        ],
        "applications": {"hello": guest_app(server.dir(), "hello.wasm")}
    });
    assert_done(&server.put_json("/config", &config));

    let mut app_status = None;
    for i in 0..50 {
        // 50 distinct paths: none of them may become a label value.
        let path = format!("/distinct/{i}");
        let resp = Conn::open_tcp(&listener)
            .unwrap()
            .request("GET", &path, &[], None)
            .unwrap();
        assert!(app_status.is_none_or(|s| s == resp.status));
        app_status = Some(resp.status);
    }
    for _ in 0..3 {
        let resp = Conn::open_tcp(&listener)
            .unwrap()
            .request("GET", "/teapot", &[], None)
            .unwrap();
        assert_eq!(resp.status, 418);
    }
    assert_eq!(app_status, Some(200));
    let app_status = app_status.unwrap().to_string();

    let resp = server.get("/metrics");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!resp.body.contains("# EOF"));
    let (samples, types) = parse(&resp.body);
    assert_eq!(types["wharf_http_requests_total"], "counter");
    assert_eq!(types["wharf_http_request_duration_seconds"], "histogram");
    assert_eq!(types["wharf_application_instances"], "gauge");

    let requests = |app: &str, code: &str| {
        let key = labels(&[("app", app), ("listener", &listener), ("code", code)]);
        samples
            .get(&("wharf_http_requests_total".to_owned(), key))
            .copied()
    };
    assert_eq!(requests("hello", &app_status), Some(50.0), "{}", resp.body);
    assert_eq!(requests("", "418"), Some(3.0), "{}", resp.body);
    // Exactly those two series: the paths added no label values.
    let request_series = samples
        .keys()
        .filter(|(name, _)| name == "wharf_http_requests_total")
        .count();
    assert_eq!(request_series, 2, "{}", resp.body);
    assert!(!resp.body.contains("/distinct/"), "{}", resp.body);

    let hist = |suffix: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("app", "hello")];
        pairs.extend_from_slice(extra);
        let name = format!("wharf_http_request_duration_seconds{suffix}");
        samples.get(&(name, labels(&pairs))).copied()
    };
    assert_eq!(hist("_count", &[]), Some(50.0));
    assert_eq!(hist("_bucket", &[("le", "+Inf")]), Some(50.0));
    assert!(hist("_sum", &[]).is_some_and(|s| s > 0.0));
    let guest_time = |app: &str| {
        samples
            .get(&(
                "wharf_guest_cpu_seconds_total".to_owned(),
                labels(&[("app", app)]),
            ))
            .copied()
    };
    assert_eq!(types["wharf_guest_cpu_seconds_total"], "counter");
    assert!(
        guest_time("hello").is_some_and(|s| s > 0.0),
        "{}",
        resp.body
    );

    let accepted = samples[&("wharf_connections_accepted_total".to_owned(), vec![])];
    assert!(accepted >= 53.0, "{accepted}");
    let generation = samples[&("wharf_config_generation".to_owned(), vec![])];
    assert!(generation >= 1.0);
    let idle = labels(&[("app", "hello"), ("state", "idle")]);
    assert!(samples.contains_key(&("wharf_application_instances".to_owned(), idle)));

    // Another scrape after more paths: still two request series.
    for i in 50..60 {
        let path = format!("/other/{i}");
        Conn::open_tcp(&listener)
            .unwrap()
            .request("GET", &path, &[], None)
            .unwrap();
    }
    let (samples, _) = parse(&server.get("/metrics").body);
    assert_eq!(
        samples
            .keys()
            .filter(|(name, _)| name == "wharf_http_requests_total")
            .count(),
        2
    );
}

#[test]
fn bytes_received_and_sent_are_counted_as_framed_on_the_wire() {
    use std::io::{Read, Write};

    let server = Server::start();
    let listener = listener_key();
    server.load(&json!({
        "listeners": {&listener: {"pass": "applications/hello"}},
        "applications": {"hello": guest_app(server.dir(), "hello.wasm")}
    }));
    let bytes = |server: &Server| {
        let (samples, types) = parse(&server.get("/metrics").body);
        assert_eq!(types["wharf_http_received_bytes_total"], "counter");
        assert_eq!(types["wharf_http_sent_bytes_total"], "counter");
        let get = |name: &str| samples[&(name.to_owned(), vec![])];
        (
            get("wharf_http_received_bytes_total"),
            get("wharf_http_sent_bytes_total"),
        )
    };
    assert_eq!(
        bytes(&server),
        (0.0, 0.0),
        "the control socket is not counted"
    );

    // Two requests on one connection, the first with a chunked body; the connection
    // closes after the second, so everything either side wrote has been read.
    let request: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n\
        GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut stream = std::net::TcpStream::connect(&listener).expect("connect");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read to the close");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");

    let (received, sent) = bytes(&server);
    assert_eq!(received, request.len() as f64);
    assert_eq!(sent, answer.len() as f64);
}

#[test]
fn a_metrics_action_serves_the_exposition_on_a_listener_and_nothing_else() {
    use std::io::{Read, Write};

    let server = Server::start();
    let listener = listener_key();
    server.load(&json!({
        "listeners": {&listener: {"pass": "routes"}},
        "routes": [
            {"match": {"uri": "/metrics"}, "action": {"metrics": true}},
            {"action": {"pass": "applications/hello"}}
        ],
        "applications": {"hello": guest_app(server.dir(), "hello.wasm")}
    }));
    for _ in 0..3 {
        let resp = fetch(&listener, "GET", "/app", &[], None).expect("a response");
        assert_eq!(resp.status, 200, "{resp}");
    }
    // The control API is not reachable through the listener: its paths go to the app.
    let resp = fetch(&listener, "GET", "/config", &[], None).expect("a response");
    assert!(!resp.body.contains("listeners"), "{resp}");

    let scraped = fetch(&listener, "GET", "/metrics", &[], None).expect("a response");
    assert_eq!(scraped.status, 200, "{scraped}");
    assert_eq!(
        scraped.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (samples, types) = parse(&scraped.body);
    let hello = labels(&[("app", "hello"), ("listener", &listener), ("code", "200")]);
    assert_eq!(
        samples.get(&("wharf_http_requests_total".to_owned(), hello)),
        Some(&4.0),
        "{}",
        scraped.body
    );
    // The same families as the control socket's /metrics, which also counts the scrape
    // itself as one of the listener's requests that no application answered.
    let (control, control_types) = parse(&server.get("/metrics").body);
    assert_eq!(types, control_types);
    let scrape = labels(&[("app", ""), ("listener", &listener), ("code", "200")]);
    assert_eq!(
        control.get(&("wharf_http_requests_total".to_owned(), scrape)),
        Some(&1.0)
    );

    let accept = [("Accept", "application/openmetrics-text; version=1.0.0")];
    let open = fetch(&listener, "GET", "/metrics", &accept, None).expect("a response");
    assert!(open.body.ends_with("# EOF\n"), "{open}");
    // HEAD: the head alone, up to the close.
    let mut stream = std::net::TcpStream::connect(&listener).expect("connect");
    stream
        .write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut head = String::new();
    stream.read_to_string(&mut head).expect("read to the close");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    let post = fetch(&listener, "POST", "/metrics", &[], Some(b"x")).expect("a response");
    assert_eq!(post.status, 405, "{post}");
}

#[test]
fn openmetrics_when_accept_asks_for_it_and_only_get() {
    let server = Server::start();
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let resp = server.request("GET", "/metrics", &[("Accept", accept)], None);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(resp.body.ends_with("# EOF\n"), "{}", resp.body);
    // OpenMetrics names a counter's family without `_total`; its samples keep it.
    assert!(
        resp.body
            .contains("# TYPE wharf_connections_accepted counter\n")
    );
    assert!(resp.body.contains("\nwharf_connections_accepted_total "));
    assert!(
        resp.body
            .contains("# UNIT wharf_http_request_duration_seconds seconds\n")
    );

    let resp = server.request("PUT", "/metrics", &[], Some(b"{}"));
    assert_eq!(resp.status, 405);
    assert_eq!(server.get("/metrics/x").status, 404);
}

#[test]
fn refused_changes_reload_time_and_certificate_expiry_are_exported() {
    let server = Server::start();
    let sample = |samples: &Samples, name: &str, pairs: &[(&str, &str)]| {
        samples.get(&(name.to_owned(), labels(pairs))).copied()
    };
    let (samples, types) = parse(&server.get("/metrics").body);
    assert_eq!(types["wharf_config_changes_refused_total"], "counter");
    for step in ["invalid", "precondition", "apply"] {
        let refused = sample(
            &samples,
            "wharf_config_changes_refused_total",
            &[("step", step)],
        );
        assert_eq!(refused, Some(0.0), "{step}");
    }
    // A fresh state dir has served nothing it was given yet.
    assert_eq!(
        sample(&samples, "wharf_config_last_reload_timestamp_seconds", &[]),
        None
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let routes = json!([{"action": {"return": 204}}]);
    assert_done(&server.put_json("/config/routes", &routes));
    let invalid = server.put_json("/config/routes", &json!({"no": "routes"}));
    assert_eq!(invalid.status, 400, "{invalid}");
    let stale = server.request(
        "PUT",
        "/config/routes",
        &[("If-Match", "\"999\"")],
        Some(b"[]"),
    );
    assert_eq!(stale.status, 412, "{stale}");
    let missing = server.dir().join("no-such-module.wasm");
    let app = crate::harness::wasm_app(&crate::harness::path_str(&missing));
    let unloadable = server.put_json("/config/applications/gone", &app);
    assert_eq!(unloadable.status, 500, "{unloadable}");

    // A bundle whose one certificate expires at a known instant.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["metrics.test".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 6);
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let resp = server.request("PUT", "/certificates/site", &[], Some(pem.as_bytes()));
    assert_eq!(resp.status, 200, "{resp}");

    let body = server.get("/metrics").body;
    let (samples, types) = parse(&body);
    for (step, n) in [("invalid", 1.0), ("precondition", 1.0), ("apply", 1.0)] {
        let refused = sample(
            &samples,
            "wharf_config_changes_refused_total",
            &[("step", step)],
        );
        assert_eq!(refused, Some(n), "{step}: {body}");
    }
    let reloaded = sample(&samples, "wharf_config_last_reload_timestamp_seconds", &[]);
    assert!(reloaded.is_some_and(|t| t >= before.floor()), "{body}");
    assert_eq!(
        types["wharf_tls_certificate_expiry_timestamp_seconds"],
        "gauge"
    );
    // 2031-05-06T00:00:00Z.
    let expiry = sample(
        &samples,
        "wharf_tls_certificate_expiry_timestamp_seconds",
        &[("certificate", "site")],
    );
    assert_eq!(expiry, Some(1_935_792_000.0), "{body}");
}

/// A handler that runs `hostile` on requests with a body and answers others normally.
fn misbehaving_on_post(hostile: &str) -> Wat {
    Wat::with_handler(&format!(
        "
    (if (i32.ne (i32.load offset=80 (local.get $addr)) (i32.const 0))
      (then {hostile}))
    (if (call $first_call (local.get $addr))
      (then (call $respond (local.get $addr))))
    (i32.const 0)"
    ))
}

#[test]
fn stopped_guests_the_wait_queue_and_where_compiled_code_came_from_are_exported() {
    let mut server = Server::start();
    let dir = server.dir().to_owned();
    let module = |name: &str, hostile: &str| {
        let wat = misbehaving_on_post(hostile).render();
        path_str(&write_file(&dir, name, wat.as_bytes()))
    };
    let bomb = module(
        "bomb.wasm",
        "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))",
    );
    let trap = module("trap.wasm", "(unreachable)");
    let spin = module("spin.wasm", "(loop $spin (br $spin))");
    let app = |module: &str, limits: serde_json::Value| {
        let mut app = wasm_app(module);
        app["limits"] = limits;
        app["processes"] = json!(1);
        app
    };
    let keys: Vec<String> = (0..4).map(|_| listener_key()).collect();
    let config = json!({
        "listeners": {
            keys[0].clone(): {"pass": "applications/bomb"},
            keys[1].clone(): {"pass": "applications/trap"},
            keys[2].clone(): {"pass": "applications/spin"},
            keys[3].clone(): {"pass": "applications/trap-again"}
        },
        "applications": {
            "bomb": app(&bomb, json!({"memory": 64 << 20})),
            "trap": app(&trap, json!({})),
            // Long enough that a request queued behind it is seen waiting.
            "spin": app(&spin, json!({"timeout": 10})),
            "trap-again": app(&trap, json!({}))
        }
    });
    server.load(&config);
    let sample = |server: &Server, name: &str, pairs: &[(&str, &str)]| {
        let (samples, _) = parse(&server.get("/metrics").body);
        samples.get(&(name.to_owned(), labels(pairs))).copied()
    };
    // Three modules compiled; `trap-again` found `trap`'s code already loaded.
    let loads = |server: &Server, source: &str| {
        sample(server, "wharf_module_loads_total", &[("source", source)]).unwrap_or(-1.0)
    };
    assert!(
        loads(&server, "compiled") >= 3.0,
        "{}",
        server.get("/metrics")
    );
    assert!(
        loads(&server, "memory") >= 1.0,
        "{}",
        server.get("/metrics")
    );

    for key in &keys[..2] {
        let resp = fetch(key, "POST", "/", &[], Some(b"x")).expect("a response");
        assert_eq!(resp.status, 500, "{resp}");
    }
    let stopped = |server: &Server, app: &str, reason: &str| {
        sample(
            server,
            "wharf_guest_requests_stopped_total",
            &[("app", app), ("reason", reason)],
        )
    };
    assert_eq!(stopped(&server, "bomb", "memory_limit"), Some(1.0));
    assert_eq!(stopped(&server, "bomb", "trap"), Some(0.0));
    assert_eq!(stopped(&server, "trap", "trap"), Some(1.0));
    assert_eq!(stopped(&server, "trap", "memory_limit"), Some(0.0));
    assert_eq!(stopped(&server, "trap-again", "trap"), Some(0.0));

    // The spinner holds `spin`'s one instance; a GET behind it waits in the queue.
    let spin_key = keys[2].clone();
    let spin_start = std::time::Instant::now();
    let spinner = std::thread::spawn(move || fetch(&spin_key, "POST", "/", &[], Some(b"x")));
    let active = |server: &Server| {
        sample(
            server,
            "wharf_application_requests_active",
            &[("app", "spin")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || active(&server) == Some(1.0)),
        "the spinner never took the instance:\n{}",
        server.log()
    );
    let waiter_key = keys[2].clone();
    let waiter = std::thread::spawn(move || fetch(&waiter_key, "GET", "/", &[], None));
    let queued = |server: &Server| {
        sample(
            server,
            "wharf_application_requests_queued",
            &[("app", "spin")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || queued(&server) == Some(1.0)),
        "the GET was never seen queued: {:?}\n{}",
        queued(&server),
        server.log()
    );
    let spun = spinner.join().expect("spinner thread").expect("a response");
    assert_eq!(spun.status, 503, "{spun}");
    let _ = waiter.join().expect("waiter thread");
    let spin_wall = spin_start.elapsed().as_secs_f64();
    assert_eq!(queued(&server), Some(0.0));
    // The spinner ran its guest for most of its 10 s; the time it (and the GET) waited
    // does not count, so the guest time stays within the wall time.
    let spin_time = sample(&server, "wharf_guest_cpu_seconds_total", &[("app", "spin")])
        .expect("the spinner's guest time");
    assert!(
        (2.0..=spin_wall).contains(&spin_time),
        "{spin_time} s of guest time in {spin_wall} s"
    );
    assert!(
        stopped(&server, "spin", "timeout").is_some_and(|n| n >= 1.0),
        "{}",
        server.get("/metrics")
    );

    // After a restart the compiled code comes from the cache on disk.
    server.stop_with("TERM");
    server.start_again();
    assert!(loads(&server, "disk") >= 3.0, "{}", server.get("/metrics"));
    assert_eq!(
        loads(&server, "compiled"),
        0.0,
        "{}",
        server.get("/metrics")
    );
}

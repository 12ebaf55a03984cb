//! Per-app limits and fault isolation, proven with hostile WAT guests: an infinite loop
//! in the request handler and in hooks, a memory bomb, a stack overflow, a guest that
//! streams without end and one that never ends its response; `limits.requests`, the
//! bounded wait queue, and a healthy app's latency while a looping neighbour is
//! hammered.
//!
//! Each hostile guest misbehaves only on requests with a body (`POST`), and answers
//! `GET` normally, so a test can check that the app serves again right after.
//! For each case: the client gets the documented answer within the limit plus one
//! second (plus slack for a busy machine; nothing here asserts speed), the server stays
//! up, the next request to the same app succeeds, and a healthy neighbour serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Response, Server, WAT_BODY, Wat, connect_listener, fetch, get_from, guest_app, listener_key,
    median_latency, path_str, wasm_app, write_file,
};

/// `limits.timeout` of the hostile apps, in seconds.
const TIMEOUT: f64 = 1.0;

/// What "within the limit plus one second" may stretch to on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(4);

/// Misbehaves (runs `hostile`) on the first call of a request with a body; answers
/// requests without one with the canned response.
fn on_post(hostile: &str) -> String {
    format!(
        "
    (if (i32.ne (i32.load offset=80 (local.get $addr)) (i32.const 0))
      (then {hostile}))
    (if (call $first_call (local.get $addr))
      (then (call $respond (local.get $addr))))
    (i32.const 0)"
    )
}

const SPIN: &str = "(loop $spin (br $spin))";

/// A server with a healthy app and a hostile one (`wat`, with `extra` members merged
/// into its app object), each on its own listener.
struct Setup {
    server: Server,
    healthy: String,
    hostile: String,
}

impl Setup {
    fn new(wat: &Wat, extra: Value) -> Setup {
        let server = Server::start();
        let module = write_file(server.dir(), "hostile.wasm", wat.render().as_bytes());
        let mut app = wasm_app(&path_str(&module));
        merge(&mut app, extra);
        let (healthy, hostile) = (listener_key(), listener_key());
        server.load(&json!({
            "listeners": {
                healthy.clone(): {"pass": "applications/healthy"},
                hostile.clone(): {"pass": "applications/hostile"}
            },
            "applications": {
                "healthy": guest_app(server.dir(), "healthy.wasm"),
                "hostile": app
            }
        }));
        Setup {
            server,
            healthy,
            hostile,
        }
    }

    /// The hostile app with `limits.timeout` = [`TIMEOUT`] and one instance, so the next
    /// request needs the instance the hostile one held.
    fn timed(wat: &Wat) -> Setup {
        Setup::new(wat, json!({"limits": {"timeout": TIMEOUT}, "processes": 1}))
    }

    /// POSTs to the hostile app; returns the response and how long it took.
    #[track_caller]
    fn provoke(&self) -> (Response, Duration) {
        let start = Instant::now();
        let resp = fetch(&self.hostile, "POST", "/", &[], Some(b"x"))
            .unwrap_or_else(|e| panic!("no response from the hostile app: {e}\n{}", self.log()));
        (resp, start.elapsed())
    }

    /// The hostile app answers a GET again, the healthy one too, and nothing panicked.
    #[track_caller]
    fn assert_recovered(&self, what: &str) {
        for key in [&self.hostile, &self.healthy] {
            let resp = get_from(key, "/");
            assert_eq!(resp.status, 200, "after {what}: {resp}\n{}", self.log());
            assert_eq!(resp.body, WAT_BODY, "after {what}");
        }
        assert!(
            !self.log().contains("panicked"),
            "the server panicked on {what}:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        self.server.log()
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

#[track_caller]
fn assert_within(took: Duration, limit: Duration, what: &str) {
    assert!(took <= limit, "{what} took {took:?}, more than {limit:?}");
}

/// The timeout plus one second, plus slack for a loaded machine.
fn timeout_bound() -> Duration {
    Duration::from_secs_f64(TIMEOUT + 1.0) + SLACK
}

/// Server CPU time (user + system) in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

#[test]
fn an_infinite_loop_is_stopped_at_the_timeout_with_503() {
    let setup = Setup::timed(&Wat::with_handler(&on_post(SPIN)));
    let (resp, took) = setup.provoke();
    assert_eq!(resp.status, 503, "{resp}");
    assert!(resp.body.contains("Error 503"), "{resp}");
    assert!(
        took >= Duration::from_secs_f64(TIMEOUT * 0.9),
        "answered before the timeout: {took:?}"
    );
    assert_within(took, timeout_bound(), "the looping request");
    setup.assert_recovered("an infinite loop");

    // Stopped inside the guest, not only answered: the server is idle again. A guest
    // still spinning would burn a whole core (100 ticks a second).
    let pid = setup.server.pid();
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 50,
        "the server used {used} CPU ticks in the second after the timeout: the guest still runs"
    );
    assert!(setup.log().contains("limits.timeout"), "{}", setup.log());
}

#[test]
fn an_infinite_loop_in_a_hook_after_the_response_is_stopped() {
    // The response is complete when the guest ends it; the hook then spins while the
    // guest still holds the app's only instance.
    let mut wat = Wat::with_handler(&on_post("(global.set $bad (i32.const 1))"));
    wat.extra = "(global $bad (mut i32) (i32.const 0))
  (func (export \"luw_response_end_handler\")
    (if (global.get $bad) (then (loop $spin (br $spin)))))"
        .to_string();
    let setup = Setup::new(
        &wat,
        json!({
            "limits": {"timeout": TIMEOUT},
            "processes": 1,
            "response_end_handler": "luw_response_end_handler"
        }),
    );
    let (resp, took) = setup.provoke();
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(
        resp.body, WAT_BODY,
        "the response was complete before the hook ran"
    );
    assert_within(took, SLACK, "the response before the looping hook");

    // The next request waits for the one instance; the looping hook is stopped at its
    // timeout and a fresh instance serves it. Sent half a timeout later, so that its own
    // timeout cannot come first on a loaded machine.
    thread::sleep(Duration::from_secs_f64(TIMEOUT / 2.0));
    let start = Instant::now();
    setup.assert_recovered("an infinite loop in response_end_handler");
    assert_within(start.elapsed(), timeout_bound(), "the next request");
}

#[test]
fn an_infinite_loop_in_module_init_fails_the_change_at_the_timeout() {
    let server = Server::start();
    let wat = Wat {
        extra: "(func (export \"luw_module_init_handler\") (loop $spin (br $spin)))".to_string(),
        ..Wat::default()
    };
    let module = write_file(server.dir(), "init.wasm", wat.render().as_bytes());
    let mut app = wasm_app(&path_str(&module));
    merge(
        &mut app,
        json!({"limits": {"timeout": TIMEOUT}, "module_init_handler": "luw_module_init_handler"}),
    );
    let before = server.snapshot();
    let start = Instant::now();
    let resp = server.put_json(
        "/config",
        &json!({
            "listeners": {listener_key(): {"pass": "applications/init"}},
            "applications": {"init": app}
        }),
    );
    assert_within(start.elapsed(), timeout_bound(), "the refused change");
    assert_eq!(resp.status, 500, "{resp}");
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("application \"init\"") && detail.contains("took longer than 1s"),
        "{resp}"
    );
    server.assert_unchanged(&before, "a module_init_handler that never returns");
}

#[test]
fn a_memory_bomb_traps_at_the_memory_limit_with_500() {
    let bomb = "(loop $grow
        (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))";
    let limit = 64 << 20;
    let setup = Setup::new(
        &Wat::with_handler(&on_post(bomb)),
        json!({"limits": {"memory": limit}}),
    );
    let (resp, _) = setup.provoke();
    assert_eq!(resp.status, 500, "{resp}");
    setup.assert_recovered("a memory bomb");
    assert!(
        setup
            .log()
            .contains(&format!("over its limit of {limit} bytes")),
        "{}",
        setup.log()
    );
}

#[test]
fn the_default_memory_limit_is_256_mib() {
    let bomb = "(loop $grow
        (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))";
    let setup = Setup::new(&Wat::with_handler(&on_post(bomb)), json!({}));
    let (resp, _) = setup.provoke();
    assert_eq!(resp.status, 500, "{resp}");
    setup.assert_recovered("a memory bomb under the default limit");
    assert!(
        setup.log().contains("over its limit of 268435456 bytes"),
        "{}",
        setup.log()
    );
}

#[test]
fn a_module_larger_than_the_memory_limit_fails_the_change() {
    let server = Server::start();
    let module = write_file(server.dir(), "big.wasm", Wat::default().render().as_bytes());
    let mut app = wasm_app(&path_str(&module));
    // The WAT guest starts with 600 pages (37.5 MiB).
    merge(&mut app, json!({"limits": {"memory": 16 << 20}}));
    let before = server.snapshot();
    let resp = server.put_json("/config/applications", &json!({"big": app}));
    assert_eq!(resp.status, 500, "{resp}");
    assert!(
        resp.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("over its limit of 16777216 bytes")),
        "{resp}"
    );
    server.assert_unchanged(&before, "a module over its memory limit");
}

#[test]
fn a_stack_overflow_is_500() {
    let mut wat = Wat::with_handler(&on_post("(drop (call $deep (i32.const 0)))"));
    wat.extra = "(func $deep (param $n i32) (result i32)
    (i32.add (call $deep (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))"
        .to_string();
    let setup = Setup::new(&wat, json!({}));
    let (resp, _) = setup.provoke();
    assert_eq!(resp.status, 500, "{resp}");
    setup.assert_recovered("a stack overflow");
}

#[test]
fn unreachable_is_500() {
    let setup = Setup::new(&Wat::with_handler(&on_post("unreachable")), json!({}));
    let (resp, _) = setup.provoke();
    assert_eq!(resp.status, 500, "{resp}");
    setup.assert_recovered("unreachable");
}

/// Sends a POST and reads until the server closes; returns (status, saw the chunked
/// terminator, took).
fn provoke_stream(setup: &Setup) -> (Option<u16>, bool, Duration) {
    let mut conn = connect_listener(&setup.hostile).expect("connect");
    let start = Instant::now();
    conn.send(&crate::harness::request_bytes("POST", "/", &[], Some(b"x")))
        .expect("send");
    let read = conn.read_to_close(timeout_bound() + SLACK);
    assert!(
        read.closed,
        "the server did not end the connection\n{}",
        setup.log()
    );
    let complete = read.bytes.ends_with(b"\r\n0\r\n\r\n");
    (read.status(), complete, start.elapsed())
}

#[test]
fn a_guest_that_streams_without_end_is_cut_at_the_timeout() {
    let endless = "(call $copy_canned (local.get $addr))
      (call $send_headers (i32.const 0))
      (loop $more (call $send_response (i32.const 64)) (br $more))";
    let setup = Setup::timed(&Wat::with_handler(&on_post(endless)));
    let (status, complete, took) = provoke_stream(&setup);
    assert_eq!(status, Some(200));
    assert!(
        !complete,
        "an endless stream must end truncated, not complete"
    );
    assert_within(took, timeout_bound(), "the endless stream");
    setup.assert_recovered("an endless stream");
}

#[test]
fn a_guest_that_never_ends_its_response_is_cut_at_the_timeout() {
    let stalled = "(call $copy_canned (local.get $addr))
      (call $send_headers (i32.const 0))
      (call $send_response (i32.const 64))
      (loop $spin (br $spin))";
    let setup = Setup::timed(&Wat::with_handler(&on_post(stalled)));
    let (status, complete, took) = provoke_stream(&setup);
    assert_eq!(status, Some(200));
    assert!(!complete, "an unfinished response must end truncated");
    assert_within(took, timeout_bound(), "the unfinished response");
    setup.assert_recovered("a response never ended");
}

#[test]
fn an_instance_is_replaced_after_limits_requests() {
    // Each instance counts its requests in the status: 201, 202, ...
    let mut wat = Wat::with_handler(
        "(global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $set_status (i32.add (i32.const 200) (global.get $count)))
    (call $respond (local.get $addr))
    (i32.const 0)",
    );
    wat.extra = "(global $count (mut i32) (i32.const 0))".to_string();
    let setup = Setup::new(&wat, json!({"limits": {"requests": 2}, "processes": 1}));
    let statuses: Vec<u16> = (0..5)
        .map(|_| get_from(&setup.hostile, "/").status)
        .collect();
    assert_eq!(statuses, [201, 202, 201, 202, 201], "{}", setup.log());
}

#[test]
fn a_full_queue_answers_503_at_once() {
    // One instance, one place in the queue: a looping POST holds the instance, one GET
    // waits, the next GET is refused at once.
    let setup = Setup::new(
        &Wat::with_handler(&on_post(SPIN)),
        json!({"limits": {"timeout": 4, "queue": 1}, "processes": 1}),
    );
    let hostile = setup.hostile.clone();
    let looping = thread::spawn(move || fetch(&hostile, "POST", "/", &[], Some(b"x")));
    wait_for_running(&setup, 1);
    // The waiting GET must still be within its own timeout when the loop is stopped at
    // its own. Looping guests run on the low-priority slow lane, which a busy machine
    // runs late, so the waiter arrives well after the loop.
    thread::sleep(Duration::from_millis(1500));
    let hostile = setup.hostile.clone();
    let waiting = thread::spawn(move || fetch(&hostile, "GET", "/", &[], None));
    thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    let refused = get_from(&setup.hostile, "/");
    assert_eq!(refused.status, 503, "{refused}");
    assert_within(start.elapsed(), SLACK / 2, "the refusal");
    assert!(setup.log().contains("already waiting"), "{}", setup.log());

    let looped = looping.join().expect("joins").expect("a response");
    assert_eq!(looped.status, 503, "the loop is stopped at its timeout");
    let waited = waiting.join().expect("joins").expect("a response");
    assert_eq!(
        waited.status, 200,
        "the waiting request is served: {waited}"
    );
    setup.assert_recovered("a full queue");
}

/// Waits until the hostile app has `n` instances busy (per `/status`: requests active).
fn wait_for_running(setup: &Setup, n: u64) {
    let running = || {
        setup.server.get("/status").json()["applications"]["hostile"]["requests"]["active"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        crate::harness::wait_until(Duration::from_secs(30), || running() >= n),
        "the hostile app never had {n} busy instances\n{}",
        setup.log()
    );
}

#[test]
fn a_healthy_app_keeps_serving_while_a_looping_neighbour_is_hammered() {
    let setup = Setup::new(
        &Wat::with_handler(&on_post(SPIN)),
        json!({"limits": {"timeout": TIMEOUT}}),
    );
    // Warm both the connection path and the healthy app's instances.
    median_latency(&setup.healthy, 50);
    let idle = median_latency(&setup.healthy, 300);

    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..32)
        .map(|_| {
            let (stop, key) = (Arc::clone(&stop), setup.hostile.clone());
            thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = fetch(&key, "POST", "/", &[], Some(b"x")).map(|r| r.status);
                    answers.push(status.map_err(|e| e.to_string()));
                }
                answers
            })
        })
        .collect();
    wait_for_running(&setup, 1);
    thread::sleep(Duration::from_millis(300));
    let loaded = median_latency(&setup.healthy, 300);
    stop.store(true, Ordering::Relaxed);
    let answers: Vec<_> = hammers
        .into_iter()
        .flat_map(|h| h.join().expect("joins"))
        .collect();

    eprintln!(
        "healthy app median latency: idle {idle:?}, while its neighbour loops under 32 \
         connections {loaded:?} ({:.2}x)",
        loaded.as_secs_f64() / idle.as_secs_f64()
    );
    assert!(
        answers.iter().all(|a| *a == Ok(503)),
        "every looping request ends with 503: {answers:?}"
    );
    // The goal is 2x (see docs/performance.md); the bound is generous so that a busy
    // CI machine does not make it flaky.
    assert!(
        loaded <= idle * 10 + Duration::from_millis(5),
        "the healthy app slowed from {idle:?} to {loaded:?} while its neighbour looped"
    );
    setup.assert_recovered("32 connections on a looping app");
}

/// A guest whose `luw_module_end_handler` prints `module_end` on stdout (WASI), which
/// reaches the server's log.
fn module_end_printer() -> Wat {
    Wat {
        imports: "(import \"wasi_snapshot_preview1\" \"fd_write\"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))"
            .to_string(),
        extra: "(data (i32.const 100) \"\\c8\\00\\00\\00\\0b\\00\\00\\00\")
  (data (i32.const 200) \"module_end\\n\")
  (func (export \"luw_module_end_handler\")
    (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 120))))"
            .to_string(),
        ..Wat::default()
    }
}

#[test]
fn retired_instances_run_module_end_once_each() {
    let setup = Setup::new(
        &module_end_printer(),
        json!({"processes": 2, "module_end_handler": "luw_module_end_handler"}),
    );
    let ends = || setup.log().matches("module_end\n").count();
    let wait_for_ends = |n: usize, what: &str| {
        assert!(
            crate::harness::wait_until(Duration::from_secs(30), || ends() >= n),
            "{what}: expected {n} module_end lines, saw {}\n{}",
            ends(),
            setup.log()
        );
    };
    assert_eq!(get_from(&setup.hostile, "/").status, 200);
    assert_eq!(ends(), 0, "no instance retired yet");

    // Changing the app retires the old pool's two instances.
    let resp = setup.server.put_json(
        "/config/applications/hostile/environment",
        &json!({"V": "2"}),
    );
    assert_eq!(resp.status, 200, "{resp}");
    wait_for_ends(2, "a changed app");

    // So does the next change; with `limits.requests: 1` each request's instance then
    // retires after its request.
    let resp = setup.server.put_json(
        "/config/applications/hostile/limits",
        &json!({"requests": 1}),
    );
    assert_eq!(resp.status, 200, "{resp}");
    wait_for_ends(4, "a second change");
    for _ in 0..2 {
        assert_eq!(get_from(&setup.hostile, "/").status, 200);
    }
    wait_for_ends(6, "two instances worn out by limits.requests");

    thread::sleep(Duration::from_millis(500));
    assert_eq!(ends(), 6, "module_end ran more than once for some instance");
    assert!(!setup.log().contains("panicked"), "{}", setup.log());
}

#[test]
fn a_hostile_rust_guest_is_contained() {
    // examples/guests/hostile, built with unit-wasm like a real app.
    let server = Server::start();
    let mut hostile = crate::harness::example_app("hostile");
    merge(
        &mut hostile,
        json!({"limits": {"timeout": TIMEOUT, "memory": 64 << 20}, "processes": 1}),
    );
    let (healthy, key) = (listener_key(), listener_key());
    server.load(&json!({
        "listeners": {
            healthy.clone(): {"pass": "applications/healthy"},
            key.clone(): {"pass": "applications/hostile"}
        },
        "applications": {"healthy": guest_app(server.dir(), "healthy.wasm"), "hostile": hostile}
    }));
    for (path, status) in [("/loop", 503), ("/alloc", 500), ("/panic", 500)] {
        let start = Instant::now();
        let resp = get_from(&key, path);
        assert_eq!(resp.status, status, "{path}: {resp}\n{}", server.log());
        assert_within(start.elapsed(), timeout_bound(), path);
        let ok = get_from(&key, "/");
        assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"), "after {path}");
        assert_eq!(get_from(&healthy, "/").body, WAT_BODY, "after {path}");
    }
    assert!(
        server.log().contains("over its limit of 67108864 bytes"),
        "{}",
        server.log()
    );
}

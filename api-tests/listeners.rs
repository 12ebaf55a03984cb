//! Listeners at runtime: added and removed while another keeps serving without a single
//! failure, ports released and Unix socket files removed on removal, a port in use
//! refused with the address and the OS error (the old config staying), wildcard and
//! IPv6 addresses, and listeners coming back after a restart.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::harness::{
    IO_TIMEOUT, Noise, Server, WAT_BODY, assert_done, connect_listener, enc, example_app,
    free_port, free_port_v6, get_from, guest_app, listener_key, path_str, request_bytes,
    wait_until,
};

const HELLO: &str = "Hello, World!\n";

/// A server with the `hello` example guest behind listener `key`.
fn hello_server(key: &str) -> Server {
    let server = Server::start();
    server.load(&json!({
        "listeners": {key: {"pass": "applications/hello"}},
        "routes": [],
        "applications": {"hello": example_app("hello")}
    }));
    server
}

#[track_caller]
fn assert_hello(key: &str, what: &str) {
    let resp = get_from(key, "/");
    assert_eq!(resp.status, 200, "{what}: {resp}");
    assert_eq!(resp.body, HELLO, "{what}: {resp}");
}

/// Whether a TCP connect to `addr` is refused (or otherwise fails).
fn tcp_refused(addr: &str) -> bool {
    match TcpStream::connect(addr) {
        Ok(_) => false,
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::ConnectionRefused,
                "connect {addr}: expected a refusal, got {e}"
            );
            true
        }
    }
}

/// The path under `/config/listeners` of a listener key.
fn listener_path(key: &str) -> String {
    format!("/config/listeners/{}", enc(key))
}

#[test]
fn listeners_come_and_go_while_another_keeps_serving() {
    let key_a = listener_key();
    let server = hello_server(&key_a);
    assert_hello(&key_a, "listener A at the start");

    // Hammer A from two threads: one opens a connection per request, one keeps one alive.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let hammers: Vec<_> = [false, true]
        .into_iter()
        .map(|keep_alive| {
            let (stop, ok, failures, key) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failures),
                key_a.clone(),
            );
            thread::spawn(move || {
                let mut conn = None;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if conn.is_none() || !keep_alive {
                        conn = match connect_listener(&key) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                failures
                                    .lock()
                                    .expect("lock")
                                    .push(format!("request {i}: connect: {e}"));
                                continue;
                            }
                        };
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match c.request("GET", &format!("/a/{i}"), &[], None) {
                        Ok(resp) if resp.status == 200 && resp.body == HELLO => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(resp) => {
                            failures
                                .lock()
                                .expect("lock")
                                .push(format!("request {i} (keep-alive {keep_alive}): {resp}"));
                            conn = None;
                        }
                        Err(e) => {
                            failures
                                .lock()
                                .expect("lock")
                                .push(format!("request {i} (keep-alive {keep_alive}): {e}"));
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();

    let key_b = listener_key();
    let sock_c = server.dir().join("c.sock");
    let key_c = format!("unix:{}", path_str(&sock_c));
    for round in 0..10 {
        // Add B (TCP, the same port every round) and C (a Unix socket).
        assert_done(&server.put_json(
            &listener_path(&key_b),
            &json!({"pass": "applications/hello"}),
        ));
        assert_hello(&key_b, &format!("round {round}: the new listener B"));
        assert_done(&server.put_json(
            &listener_path(&key_c),
            &json!({"pass": "applications/hello"}),
        ));
        assert!(
            sock_c.exists(),
            "round {round}: {} is missing",
            sock_c.display()
        );
        assert_hello(&key_c, &format!("round {round}: the new unix listener C"));

        // And remove them again (one change each, then both at once every other round).
        if round % 2 == 0 {
            assert_done(&server.delete(&listener_path(&key_b)));
            assert_done(&server.delete(&listener_path(&key_c)));
        } else {
            let mut tree = server.config();
            let listeners = tree["listeners"].as_object_mut().expect("listeners");
            listeners.remove(&key_b);
            listeners.remove(&key_c);
            server.load(&tree);
        }
        assert!(
            wait_until(Duration::from_secs(10), || tcp_refused(&key_b)),
            "round {round}: {key_b} still accepts connections after its listener was removed"
        );
        assert!(
            wait_until(Duration::from_secs(10), || !sock_c.exists()),
            "round {round}: {} is still there after its listener was removed",
            sock_c.display()
        );
        assert!(
            connect_listener(&key_c).is_err(),
            "round {round}: the removed unix listener still accepts"
        );
    }

    stop.store(true, Ordering::SeqCst);
    for hammer in hammers {
        hammer.join().expect("hammer thread");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "listener A failed {} time(s) while B and C came and went ({} successes):\n{}",
        failures.len(),
        ok.load(Ordering::SeqCst),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        ok.load(Ordering::SeqCst) >= 20,
        "listener A answered only {} requests",
        ok.load(Ordering::SeqCst)
    );
    let listeners = server.config()["listeners"].clone();
    assert_eq!(
        listeners,
        json!({key_a.clone(): {"pass": "applications/hello"}})
    );
    assert_hello(&key_a, "listener A at the end");
}

#[test]
fn a_listener_can_move_to_another_app() {
    let key = listener_key();
    let server = hello_server(&key);
    assert_done(&server.put_json(
        "/config/applications/wat",
        &guest_app(server.dir(), "wat.wasm"),
    ));
    for round in 0..3 {
        assert_done(&server.put(
            &format!("{}/pass", listener_path(&key)),
            r#""applications/wat""#,
        ));
        let resp = get_from(&key, "/");
        assert_eq!(resp.body, WAT_BODY, "round {round}: {resp}");
        assert_done(&server.put(
            &format!("{}/pass", listener_path(&key)),
            r#""applications/hello""#,
        ));
        assert_hello(&key, &format!("round {round}: back to hello"));
    }
}

#[test]
fn a_port_in_use_fails_the_change_and_keeps_the_old_config() {
    let key_a = listener_key();
    let server = hello_server(&key_a);
    let before = server.snapshot();
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = format!("127.0.0.1:{}", squatter.local_addr().expect("addr").port());

    let check = |resp: &crate::harness::Response, what: &str| {
        assert_eq!(resp.status, 500, "{what}: {resp}");
        let body = resp.json();
        assert_eq!(
            body["error"],
            json!("Failed to apply new configuration."),
            "{what}: {resp}"
        );
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&busy),
            "{what}: the detail must name {busy}: {detail:?}"
        );
        assert!(
            detail.to_lowercase().contains("address already in use")
                || detail.contains("os error 98"),
            "{what}: the detail must give the OS error: {detail:?}"
        );
        server.assert_unchanged(&before, what);
        assert_hello(&key_a, &format!("after {what}"));
    };

    let resp = server.put_json(
        &listener_path(&busy),
        &json!({"pass": "applications/hello"}),
    );
    check(&resp, "a listener on a port in use");

    // A whole tree: the other new listener must not stay bound either.
    let other = listener_key();
    let mut tree = before.0.clone();
    tree["listeners"][&busy] = json!({"pass": "applications/hello"});
    tree["listeners"][&other] = json!({"pass": "applications/hello"});
    let resp = server.put_json("/config", &tree);
    check(&resp, "a tree with a listener on a port in use");
    assert!(
        tcp_refused(&other),
        "the refused tree's other listener {other} must not be bound"
    );

    // A tree that moves A to the busy port: A must keep serving where it was.
    let mut tree = before.0.clone();
    tree["listeners"] = json!({busy.clone(): {"pass": "applications/hello"}});
    let resp = server.put_json("/config", &tree);
    check(&resp, "moving the listener to a port in use");

    // Once the port is free, the same change works.
    drop(squatter);
    assert_done(&server.put_json(
        &listener_path(&busy),
        &json!({"pass": "applications/hello"}),
    ));
    assert_hello(&busy, "the freed port");
}

#[test]
fn a_unix_socket_path_in_use_fails_the_change() {
    let key_a = listener_key();
    let server = hello_server(&key_a);
    let before = server.snapshot();
    // A directory where the socket should be.
    let path = server.dir().join("taken");
    std::fs::create_dir(&path).expect("mkdir");
    let key = format!("unix:{}", path_str(&path));
    let resp = server.put_json(&listener_path(&key), &json!({"pass": "applications/hello"}));
    assert_eq!(resp.status, 500, "{resp}");
    assert_eq!(
        resp.json()["error"],
        json!("Failed to apply new configuration.")
    );
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains(&path_str(&path)), "{detail:?}");
    server.assert_unchanged(&before, "a unix listener on a directory");
    assert!(path.is_dir(), "the directory in the way must be left alone");
    assert_hello(&key_a, "after a refused unix listener");
}

#[test]
fn wildcard_and_ipv6_listeners_serve() {
    let port = free_port();
    let star = format!("*:{port}");
    let server = hello_server(&star);
    assert_hello(&star, "*:port reached on 127.0.0.1");
    let v6 = format!("[::1]:{}", free_port_v6());
    assert_done(&server.put_json(&listener_path(&v6), &json!({"pass": "applications/hello"})));
    assert_hello(&v6, "[::1]:port");
    assert_done(&server.delete(&listener_path(&v6)));
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(&v6).is_err()),
        "{v6} still accepts after removal"
    );
    assert_done(&server.delete(&listener_path(&star)));
    assert!(
        wait_until(Duration::from_secs(10), || tcp_refused(&format!(
            "127.0.0.1:{port}"
        ))),
        "{star} still accepts after removal"
    );
}

#[test]
fn listeners_come_back_after_a_restart() {
    let key = listener_key();
    let mut server = hello_server(&key);
    let sock = server.dir().join("app.sock");
    let unix = format!("unix:{}", path_str(&sock));
    assert_done(&server.put_json(
        &listener_path(&unix),
        &json!({"pass": "applications/hello"}),
    ));
    assert_hello(&key, "before the restart");
    assert_hello(&unix, "before the restart");
    server.restart();
    assert_hello(&key, "after a clean restart");
    assert_hello(&unix, "after a clean restart");
    server.kill9();
    // The unix socket file left behind by kill -9 must not stop the next start.
    server.start_again();
    assert_hello(&key, "after kill -9 and a start");
    assert_hello(&unix, "after kill -9 and a start");
}

#[test]
fn removing_a_listener_lets_an_in_flight_response_finish() {
    // A 6 MiB answer from `echo` is in flight (its head read, its body not yet) while
    // its listener is removed: the response still completes.
    let key = listener_key();
    let server = Server::start();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/echo"}},
        "routes": [],
        "applications": {"echo": example_app("echo")}
    }));
    let body = Noise::bytes(5, 6 * 1024 * 1024);
    let mut stream = TcpStream::connect(&key).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
        .write_all(&request_bytes("PUT", "/inflight", &[], Some(&body)))
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("read the head"),
            1,
            "closed in the head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("echo sends a Content-Length: {head}"));

    assert_done(&server.delete(&listener_path(&key)));

    let mut rest = vec![0u8; len];
    stream
        .read_exact(&mut rest)
        .expect("the in-flight response completes after its listener is removed");
    assert!(
        rest.ends_with(&[&body[body.len() - 1000..], b"\n"].concat()),
        "the in-flight response was changed"
    );
}

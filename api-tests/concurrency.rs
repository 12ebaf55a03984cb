//! Concurrent clients: changes are applied one at a time and none is lost; GETs never
//! wait, never fail, and always see a committed tree that matches their ETag.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{Value, json};

use crate::harness::{Conn, Server, assert_done, guest_app, guest_file, path_str, wasm_app};

#[test]
fn thirty_concurrent_posts_all_land() {
    let server = Server::start();
    let g0 = server.generation();
    let n = 30u16;
    let barrier = Arc::new(Barrier::new(n as usize));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let mut conn = server.conn();
            thread::spawn(move || {
                let body = json!({"action": {"return": 200 + i}}).to_string();
                barrier.wait();
                conn.request("POST", "/config/routes", &[], Some(body.as_bytes()))
                    .unwrap_or_else(|e| panic!("POST #{i}: {e}"))
            })
        })
        .collect();
    let mut etags = BTreeSet::new();
    for handle in handles {
        let resp = handle.join().expect("POST thread");
        assert_done(&resp);
        etags.insert(resp.etag());
    }
    assert_eq!(
        etags,
        (g0 + 1..=g0 + u64::from(n)).collect::<BTreeSet<_>>(),
        "30 commits must get 30 distinct consecutive generations"
    );
    let resp = server.get("/config/routes");
    assert_eq!(resp.etag(), g0 + u64::from(n));
    let routes = resp.json();
    let codes: BTreeSet<u64> = routes
        .as_array()
        .expect("routes array")
        .iter()
        .map(|r| r["action"]["return"].as_u64().expect("return code"))
        .collect();
    assert_eq!(
        routes.as_array().map(Vec::len),
        Some(n as usize),
        "{routes}"
    );
    assert_eq!(
        codes,
        (200..200 + u64::from(n)).collect::<BTreeSet<_>>(),
        "{routes}"
    );
}

#[test]
fn concurrent_puts_to_different_members_all_land() {
    let server = Server::start();
    let n = 20;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let mut conn = server.conn();
            let module = path_str(&guest_file(server.dir(), &format!("app{i}.wasm")));
            thread::spawn(move || {
                let body = wasm_app(&module).to_string();
                barrier.wait();
                conn.request(
                    "PUT",
                    &format!("/config/applications/app{i}"),
                    &[],
                    Some(body.as_bytes()),
                )
                .unwrap_or_else(|e| panic!("PUT #{i}: {e}"))
            })
        })
        .collect();
    for handle in handles {
        assert_done(&handle.join().expect("PUT thread"));
    }
    let apps = server.get("/config/applications").json();
    for i in 0..n {
        assert_eq!(
            apps[format!("app{i}")],
            wasm_app(&path_str(&server.dir().join(format!("app{i}.wasm")))),
            "app{i} was lost: {apps}"
        );
    }
    assert_eq!(apps.as_object().map(|a| a.len()), Some(n));
}

#[test]
fn gets_during_changes_never_fail_and_match_their_etag() {
    let server = Server::start();
    let (initial, g0) = server.snapshot();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let sock = server.sock().to_path_buf();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut seen: Vec<(u64, Value)> = Vec::new();
                let mut i = 0u64;
                // At least a few reads, then until the writer is done.
                while i < 5 || !done.load(Ordering::SeqCst) {
                    i += 1;
                    let mut conn =
                        Conn::open(&sock).unwrap_or_else(|e| panic!("reader {r}: connect: {e}"));
                    let resp = conn
                        .request("GET", "/config", &[], None)
                        .unwrap_or_else(|e| panic!("reader {r}: GET /config: {e}"));
                    assert_eq!(resp.status, 200, "reader {r}: {resp}");
                    seen.push((resp.etag(), resp.json()));
                    let resp = conn
                        .request("GET", "/status", &[], None)
                        .unwrap_or_else(|e| panic!("reader {r}: GET /status: {e}"));
                    assert_eq!(resp.status, 200, "reader {r}: {resp}");
                }
                seen
            })
        })
        .collect();

    let app = guest_app(server.dir(), "x.wasm");
    let mut written: HashMap<u64, Value> = HashMap::new();
    written.insert(g0, initial);
    for i in 0..40u16 {
        let config = json!({
            "listeners": {},
            "routes": [{"action": {"return": 200 + i}}],
            "applications": {format!("app{i}"): app.clone()}
        });
        let resp = server.put_json("/config", &config);
        assert_done(&resp);
        written.insert(resp.etag(), config);
    }
    done.store(true, Ordering::SeqCst);

    for (r, reader) in readers.into_iter().enumerate() {
        let seen = reader.join().expect("reader thread");
        let mut last = 0;
        for (etag, tree) in seen {
            let want = written
                .get(&etag)
                .unwrap_or_else(|| panic!("reader {r} saw ETag {etag}, which no commit produced"));
            assert_eq!(
                &tree, want,
                "reader {r}: the tree served with ETag {etag} is not generation {etag}'s"
            );
            assert!(
                etag >= last,
                "reader {r}: generation went back from {last} to {etag}"
            );
            last = etag;
        }
    }
}

#[test]
fn concurrent_changes_with_the_same_if_match_admit_exactly_one() {
    let server = Server::start();
    let g = server.generation();
    let n = 10u16;
    let barrier = Arc::new(Barrier::new(n as usize));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let mut conn = server.conn();
            thread::spawn(move || {
                let body = json!([{"action": {"return": 200 + i}}]).to_string();
                let if_match = format!("\"{g}\"");
                barrier.wait();
                let resp = conn
                    .request(
                        "PUT",
                        "/config/routes",
                        &[("If-Match", &if_match)],
                        Some(body.as_bytes()),
                    )
                    .unwrap_or_else(|e| panic!("PUT #{i}: {e}"));
                (i, resp)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for handle in handles {
        let (i, resp) = handle.join().expect("PUT thread");
        match resp.status {
            200 => winners.push(i),
            412 => assert_eq!(resp.error_title(), "Precondition failed.", "{resp}"),
            _ => panic!("PUT #{i}: expected 200 or 412, got\n{resp}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one conditional change may win, got {winners:?}"
    );
    let (tree, gen_now) = server.snapshot();
    assert_eq!(gen_now, g + 1);
    assert_eq!(
        tree["routes"],
        json!([{"action": {"return": 200 + winners[0]}}])
    );
}

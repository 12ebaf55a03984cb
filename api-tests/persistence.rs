//! The committed tree (and its generation and history) survive restarts, clean or
//! not: after `kill -9` in the middle of a stream of changes, every acknowledged
//! change is there, and at most the one in flight besides.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, assert_done, echo_config, wait_until};

fn history(server: &Server) -> Value {
    let resp = server.get("/history");
    assert_eq!(resp.status, 200, "{resp}");
    resp.json()
}

#[test]
fn the_tree_generation_and_history_survive_a_clean_restart() {
    let mut server = Server::start();
    server.load(&echo_config(server.dir()));
    assert_done(&server.post("/config/routes", r#"{"action": {"return": 204}}"#));
    assert_done(&server.put("/config/applications/echo/processes", "2"));
    let before = server.snapshot();
    let hist = history(&server);

    server.restart();
    server.assert_unchanged(&before, "a restart");
    assert_eq!(history(&server), hist, "the history survives a restart");

    // Generations keep counting from where they were.
    let resp = server.put("/config/applications/echo/processes", "3");
    assert_done(&resp);
    assert_eq!(
        resp.etag(),
        before.1 + 1,
        "the generation must not restart after a restart"
    );
}

#[test]
fn the_tree_survives_kill_9() {
    let mut server = Server::start();
    server.load(&echo_config(server.dir()));
    assert_done(&server.post("/config/routes", r#"{"action": {"return": 204}}"#));
    let before = server.snapshot();
    server.kill9();
    // The stale socket file left behind must not stop the next start.
    server.start_again();
    server.assert_unchanged(&before, "kill -9 and a restart");
}

#[test]
fn an_empty_tree_is_restored_as_empty() {
    let mut server = Server::start();
    assert_done(&server.delete("/config"));
    let before = server.snapshot();
    assert_eq!(before.0, json!({}));
    server.restart();
    server.assert_unchanged(&before, "a restart after DELETE /config");
}

#[test]
fn a_restore_survives_a_restart() {
    let mut server = Server::start();
    let config = echo_config(server.dir());
    server.load(&config);
    let a = server.generation();
    assert_done(&server.put("/config/applications/echo/processes", "2"));
    assert_done(&server.post(&format!("/history/{a}/restore"), ""));
    let before = server.snapshot();
    assert_eq!(before.0, config);
    server.kill9();
    server.start_again();
    server.assert_unchanged(&before, "kill -9 after a restore");
}

fn route(i: u32) -> Value {
    json!({"action": {"return": 100 + (i % 900)}})
}

#[derive(Default)]
struct Progress {
    /// Elements whose POST was answered with 200.
    acked: Vec<Value>,
    /// The element of a POST sent but not answered when the server went away.
    in_flight: Option<Value>,
    /// A response that was neither a success nor a dead connection.
    unexpected: Option<String>,
}

#[test]
fn kill_9_during_a_stream_of_changes_loses_nothing_acknowledged() {
    let mut server = Server::start();
    let mut next = 0u32;
    for round in 0..3 {
        let (tree, g0) = server.snapshot();
        let base = tree["routes"].as_array().cloned().expect("routes array");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let writer = {
            let progress = Arc::clone(&progress);
            let sock = server.sock().to_path_buf();
            let first = next;
            thread::spawn(move || {
                for i in first..first + 5000 {
                    let element = route(i);
                    progress.lock().expect("lock").in_flight = Some(element.clone());
                    let body = element.to_string();
                    let result = crate::harness::Conn::open(&sock).and_then(|mut c| {
                        c.request("POST", "/config/routes", &[], Some(body.as_bytes()))
                    });
                    let mut p = progress.lock().expect("lock");
                    match result {
                        Ok(resp) if resp.status == 200 => {
                            p.acked.push(element);
                            p.in_flight = None;
                        }
                        Ok(resp) => {
                            p.unexpected = Some(resp.to_string());
                            return;
                        }
                        Err(_) => return, // the server is gone
                    }
                }
            })
        };
        let enough = wait_until(Duration::from_secs(120), || {
            progress.lock().expect("lock").acked.len() >= 20 + round * 7
        });
        server.kill9();
        writer.join().expect("writer thread");
        let p = progress.lock().expect("lock");
        assert!(
            p.unexpected.is_none(),
            "round {round}: a change failed: {:?}",
            p.unexpected
        );
        assert!(
            enough,
            "round {round}: fewer than 20 changes acknowledged in 120 s"
        );
        next += (p.acked.len() + 1) as u32;

        let mut acked_tree = base.clone();
        acked_tree.extend(p.acked.iter().cloned());
        let mut candidates = vec![acked_tree.clone()];
        if let Some(element) = &p.in_flight {
            let mut with_in_flight = acked_tree.clone();
            with_in_flight.push(element.clone());
            candidates.push(with_in_flight);
        }

        server.start_again();
        let (tree, g) = server.snapshot();
        let routes = tree["routes"].as_array().cloned().expect("routes array");
        assert!(
            candidates.contains(&routes),
            "round {round}: after kill -9 the routes are not the last acknowledged tree \
             ({} elements) nor that plus the one in flight; got {} elements",
            acked_tree.len(),
            routes.len()
        );
        let committed = (routes.len() - base.len()) as u64;
        assert_eq!(
            g,
            g0 + committed,
            "round {round}: one generation per committed change"
        );
        let resp = server.get(&format!("/history/{g}"));
        assert_eq!(
            resp.status, 200,
            "round {round}: the last generation's history entry: {resp}"
        );
        assert_eq!(
            resp.json()["config"],
            tree,
            "round {round}: history and tree disagree"
        );
    }
}

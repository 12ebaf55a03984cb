//! `/status` (shape, sub-paths, errors) and `/control/applications/<name>/restart`.

use serde_json::{Value, json};

use crate::harness::{Server, assert_done, assert_error, echo_config, wasm_app};

fn zero_app() -> Value {
    json!({"processes": {"running": 0, "starting": 0, "idle": 0}, "requests": {"active": 0}})
}

#[test]
fn status_of_a_fresh_server_is_all_zero() {
    let server = Server::start();
    let resp = server.get("/status");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(
        resp.json(),
        json!({
            "connections": {"accepted": 0, "active": 0, "idle": 0, "closed": 0},
            "requests": {"total": 0},
            "applications": {}
        })
    );
}

#[test]
fn status_lists_every_configured_application() {
    let server = Server::start();
    let mut config = echo_config();
    config["applications"]["second"] = wasm_app("/tmp/second.wasm");
    server.load(&config);
    let status = server.get("/status").json();
    assert_eq!(
        status["applications"],
        json!({"echo": zero_app(), "second": zero_app()}),
        "{status}"
    );

    // Removing an app removes it from /status; adding one adds it.
    assert_done(&server.delete("/config/applications/second"));
    assert_done(&server.put_json("/config/applications/third", &wasm_app("/tmp/third.wasm")));
    let status = server.get("/status").json();
    assert_eq!(
        status["applications"],
        json!({"echo": zero_app(), "third": zero_app()}),
        "{status}"
    );
}

#[test]
fn status_sub_paths_work_like_config() {
    let server = Server::start();
    server.load(&echo_config());
    for (path, want) in [
        (
            "/status/connections",
            json!({"accepted": 0, "active": 0, "idle": 0, "closed": 0}),
        ),
        ("/status/connections/accepted", json!(0)),
        ("/status/requests", json!({"total": 0})),
        ("/status/requests/total", json!(0)),
        ("/status/applications/echo", zero_app()),
        ("/status/applications/echo/processes/idle", json!(0)),
        ("/status/applications/echo/requests/active", json!(0)),
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 200, "GET {path}: {resp}");
        assert_eq!(resp.json(), want, "GET {path}");
    }
    let resp = server.get("/status/requests/total");
    assert_eq!(resp.body.trim(), "0", "a scalar comes back bare: {resp}");
}

#[test]
fn status_missing_node_is_invalid_path() {
    let server = Server::start();
    server.load(&echo_config());
    for path in [
        "/status/nope",
        "/status/connections/nope",
        "/status/connections/accepted/deeper",
        "/status/applications/nope",
        "/status/applications/echo/nope",
        "/status/applications/ECHO",
    ] {
        let resp = server.get(path);
        assert_error(&resp, 404, "Invalid path.");
    }
}

#[test]
fn restart_of_a_configured_application_is_ok() {
    let server = Server::start();
    server.load(&echo_config());
    let before = server.snapshot();
    let resp = server.get("/control/applications/echo/restart");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), json!({"success": "Ok"}));
    // Twice in a row is fine too.
    let resp = server.get("/control/applications/echo/restart/");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), json!({"success": "Ok"}));
    assert_eq!(
        server.config(),
        before.0,
        "a restart does not change the tree"
    );
}

#[test]
fn restart_of_an_unknown_application_is_404() {
    let server = Server::start();
    server.load(&echo_config());
    let before = server.snapshot();
    for path in [
        "/control/applications/nope/restart",
        "/control/applications/Echo/restart",
        "/control/applications/echo%2Fx/restart",
    ] {
        let resp = server.get(path);
        assert_eq!(resp.status, 404, "GET {path}: {resp}");
        assert!(resp.json()["error"].is_string(), "{resp}");
    }
    server.assert_unchanged(&before, "restarts of unknown apps");
}

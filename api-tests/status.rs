//! `/status` (shape, sub-paths, errors) and `/control/applications/<name>/restart`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, assert_done, assert_error, echo_config, guest_app, wait_until};

/// Whether an app's status is that of an app serving nothing: exactly the documented
/// members, nothing busy (every running instance idle), starting or active. `idle` is
/// any count: applying a config starts each app, and whether its first instance stays
/// pooled is the server's choice.
fn is_quiet_app(app: &Value) -> bool {
    let processes = &app["processes"];
    app.as_object().map(|o| o.len()) == Some(2)
        && processes.as_object().map(|o| o.len()) == Some(3)
        && processes["running"] == processes["idle"]
        && processes["starting"] == json!(0)
        && processes["idle"].is_u64()
        && app["requests"] == json!({"active": 0})
}

/// `/status` without `modules` (which [`status_lists_the_application_types_served`]
/// checks).
fn without_modules(mut status: Value) -> Value {
    if let Some(status) = status.as_object_mut() {
        status.shift_remove("modules");
    }
    status
}

/// Waits (bounded) until `/status/applications` lists exactly `names`, all quiet.
#[track_caller]
fn assert_quiet_apps(server: &Server, names: &[&str]) {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = server.get("/status/applications").json();
        last.as_object().is_some_and(|apps| {
            apps.len() == names.len()
                && names.iter().all(|n| apps.get(*n).is_some_and(is_quiet_app))
        })
    });
    assert!(
        ok,
        "/status/applications should list exactly {names:?}, each with nothing running, \
         starting or active; got {last}"
    );
}

#[test]
fn status_of_a_fresh_server_is_all_zero() {
    let server = Server::start();
    let resp = server.get("/status");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(
        without_modules(resp.json()),
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
    let mut config = echo_config(server.dir());
    config["applications"]["second"] = guest_app(server.dir(), "second.wasm");
    server.load(&config);
    assert_quiet_apps(&server, &["echo", "second"]);

    // Removing an app removes it from /status; adding one adds it.
    assert_done(&server.delete("/config/applications/second"));
    assert_done(&server.put_json(
        "/config/applications/third",
        &guest_app(server.dir(), "third.wasm"),
    ));
    assert_quiet_apps(&server, &["echo", "third"]);
}

#[test]
fn status_sub_paths_work_like_config() {
    let server = Server::start();
    server.load(&echo_config(server.dir()));
    assert_quiet_apps(&server, &["echo"]);
    let echo = server.get("/status/applications/echo").json();
    assert!(is_quiet_app(&echo), "{echo}");
    let idle = echo["processes"]["idle"].clone();
    for (path, want) in [
        (
            "/status/connections",
            json!({"accepted": 0, "active": 0, "idle": 0, "closed": 0}),
        ),
        ("/status/connections/accepted", json!(0)),
        ("/status/requests", json!({"total": 0})),
        ("/status/requests/total", json!(0)),
        ("/status/applications/echo", echo.clone()),
        (
            "/status/applications/echo/processes",
            echo["processes"].clone(),
        ),
        ("/status/applications/echo/processes/idle", idle.clone()),
        ("/status/applications/echo/processes/running", idle),
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
    server.load(&echo_config(server.dir()));
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
    server.load(&echo_config(server.dir()));
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
    server.load(&echo_config(server.dir()));
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

#[test]
fn status_lists_the_application_types_served() {
    let server = Server::start();
    let status = server.get("/status").json();
    let names: Vec<&String> = status.as_object().expect("an object").keys().collect();
    assert_eq!(
        names,
        ["modules", "connections", "requests", "applications"],
        "Unit's order: {status}"
    );
    let modules = server.get("/status/modules").json();
    let types: Vec<&String> = modules.as_object().expect("an object").keys().collect();
    assert_eq!(types, ["wasm", "wasm-wasi-component"], "{modules}");
    for (name, module) in modules.as_object().expect("an object") {
        let members: Vec<&String> = module.as_object().expect("an object").keys().collect();
        assert_eq!(members, ["version", "lib"], "{name}: {module}");
        let version = module["version"].as_str().unwrap_or_default();
        assert!(
            !version.is_empty() && version.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{name}: a dotted version: {module}"
        );
        let lib = module["lib"].as_str().unwrap_or_default();
        assert!(std::path::Path::new(lib).is_file(), "{name}: {module}");
    }
    let version = server.get("/status/modules/wasm/version");
    assert_eq!(version.status, 200, "{version}");
    assert_error(&server.get("/status/modules/php"), 404, "Invalid path.");
}

#[test]
fn running_counts_every_started_instance_idle_ones_included() {
    let server = Server::start();
    let mut config = echo_config(server.dir());
    config["applications"]["echo"]["processes"] = json!(3);
    server.load(&config);
    // `processes: 3` starts three instances, all idle until a request comes.
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = server.get("/status/applications/echo/processes").json();
        last == json!({"running": 3, "starting": 0, "idle": 3})
    });
    assert!(ok, "three idle instances are three running ones: {last}");
}

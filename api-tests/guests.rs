//! Modules that cannot serve are refused before anything is swapped: applying a config
//! compiles and starts every app, so a file that is not a module, a missing file, a
//! missing or mistyped handler export, an unknown import, or a trap while an instance
//! starts (`_initialize`, the malloc handler, `module_init_handler`) fails the change
//! with 500 `Failed to apply new configuration.` and a detail naming the app and the
//! file, and leaves the committed tree and the running apps as they were. Plus what a
//! guest sees of its app's `environment` (a WAT guest that prints its WASI environment),
//! and where what it prints on stdout and stderr goes: to the log, tagged with the app.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::{
    Response, Server, WAT_BODY, Wat, assert_done, echo_config, get_from, guest_app, listener_key,
    path_str, wasm_app, write_file,
};

const APPLY_FAILED: &str = "Failed to apply new configuration.";

/// What a detail says about a file that does not compile.
const COMPILE: &str = "compile|invalid|parse";

/// What a detail says about a trap.
const TRAP: &str = "trap|unreachable";

/// A server serving the minimal guest as `echo` on a listener; returns the listener.
fn healthy_server() -> (Server, String) {
    let server = Server::start();
    let config = echo_config(server.dir());
    let key = config["listeners"]
        .as_object()
        .and_then(|l| l.keys().next().cloned())
        .expect("a listener");
    server.load(&config);
    assert_serves(&key, "before any bad change");
    (server, key)
}

#[track_caller]
fn assert_serves(key: &str, when: &str) {
    let resp = get_from(key, "/");
    assert_eq!(
        resp.status, 200,
        "{when}: the healthy app must serve: {resp}"
    );
    assert_eq!(resp.body, WAT_BODY, "{when}: {resp}");
}

/// Asserts a 500 `Failed to apply new configuration.` whose detail names the app and the
/// module file, and gives the reason: every entry of `reason` must appear in it
/// (case-insensitive; an entry `a|b` is satisfied by either).
#[track_caller]
fn assert_apply_failed(resp: &Response, app: &str, file: &str, reason: &[&str], what: &str) {
    assert_eq!(
        resp.status, 500,
        "{what}: expected 500 {APPLY_FAILED:?}, got\n{resp}"
    );
    let body = resp.json();
    assert_eq!(body["error"], json!(APPLY_FAILED), "{what}: {resp}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(app),
        "{what}: the detail must name the app {app:?}: {detail:?}"
    );
    assert!(
        detail.contains(file),
        "{what}: the detail must name the file {file:?}: {detail:?}"
    );
    let lower = detail.to_lowercase();
    for entry in reason {
        assert!(
            entry.split('|').any(|r| lower.contains(&r.to_lowercase())),
            "{what}: the detail must give the reason ({entry:?}): {detail:?}"
        );
    }
}

/// Tries the bad app every way a change can bring it in: as a new app, as the running
/// app's new module, and in a whole new tree with a new listener passing to it. Each
/// must fail, change nothing, and leave the healthy app serving (and the new listener
/// unbound).
fn check_refused(app: Value, reason: &[&str], what: &str) {
    let (server, key) = healthy_server();
    let before = server.snapshot();
    let file = app["module"].as_str().expect("module").to_string();
    let name = "broken-app";

    let resp = server.put_json(&format!("/config/applications/{name}"), &app);
    assert_apply_failed(&resp, name, &file, reason, &format!("{what}, as a new app"));
    server.assert_unchanged(&before, what);
    assert_serves(&key, &format!("after {what} as a new app"));

    // The running app's module (and handlers) replaced by the bad ones.
    let resp = server.put_json("/config/applications/echo", &app);
    assert_apply_failed(
        &resp,
        "echo",
        &file,
        reason,
        &format!("{what}, replacing echo"),
    );
    server.assert_unchanged(&before, what);
    assert_serves(&key, &format!("after {what} replacing echo"));

    // A whole tree with a new listener for it.
    let new_key = listener_key();
    let mut tree = before.0.clone();
    tree["applications"][name] = app.clone();
    tree["listeners"][&new_key] = json!({"pass": format!("applications/{name}")});
    let resp = server.put_json("/config", &tree);
    assert_apply_failed(
        &resp,
        name,
        &file,
        reason,
        &format!("{what}, in a whole tree"),
    );
    server.assert_unchanged(&before, what);
    assert_serves(&key, &format!("after {what} in a whole tree"));
    assert!(
        crate::harness::connect_listener(&new_key).is_err(),
        "{what}: the refused tree's listener {new_key} must not be bound"
    );
}

/// A `wasm` app on a file holding `text`, written in a fresh dir kept for the test.
fn app_on(dir: &Path, name: &str, text: &[u8]) -> Value {
    wasm_app(&path_str(&write_file(dir, name, text)))
}

#[test]
fn a_file_that_is_not_a_module_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    check_refused(
        app_on(
            dir.path(),
            "not-wasm.wasm",
            b"this is not a WebAssembly module\n",
        ),
        &[COMPILE],
        "a text file",
    );
    check_refused(
        app_on(dir.path(), "garbage.wasm", b"\0asm\x01\0\0\0\xff\xff\xff"),
        &[COMPILE],
        "a truncated binary",
    );
    check_refused(
        app_on(dir.path(), "empty.wasm", b""),
        &[COMPILE],
        "an empty file",
    );
}

#[test]
fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = path_str(&dir.path().join("no-such-module.wasm"));
    check_refused(
        wasm_app(&missing),
        &["no such file|not found|does not exist"],
        "a missing file",
    );
    // A directory is not a module either.
    check_refused(
        wasm_app(&path_str(dir.path())),
        &["directory"],
        "a directory",
    );
}

#[test]
fn a_missing_request_handler_export_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = guest_app(dir.path(), "guest.wasm");
    app["request_handler"] = json!("luw_no_such_handler");
    check_refused(
        app,
        &["luw_no_such_handler"],
        "a missing request_handler export",
    );

    let mut app = guest_app(dir.path(), "guest.wasm");
    app["malloc_handler"] = json!("luw_no_such_malloc");
    check_refused(
        app,
        &["luw_no_such_malloc"],
        "a missing malloc_handler export",
    );

    let mut app = guest_app(dir.path(), "guest.wasm");
    app["module_init_handler"] = json!("luw_no_such_hook");
    check_refused(
        app,
        &["luw_no_such_hook"],
        "a missing module_init_handler export",
    );
}

#[test]
fn a_handler_export_of_the_wrong_type_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // luw_free_handler is (i32) -> (), not (i32) -> i32.
    let mut app = guest_app(dir.path(), "guest.wasm");
    app["request_handler"] = json!("luw_free_handler");
    check_refused(
        app,
        &["luw_free_handler"],
        "a request_handler of the wrong type",
    );
    // `memory` is not a function at all.
    let mut app = guest_app(dir.path(), "guest.wasm");
    app["free_handler"] = json!("memory");
    check_refused(app, &["memory"], "a free_handler that is a memory");
}

#[test]
fn an_unknown_import_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wat = Wat {
        imports: r#"(import "env" "nope" (func $nope))"#.to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "imports-nope.wasm", wat.render().as_bytes()),
        &["nope"],
        "a module importing env.nope",
    );
    let wat = Wat {
        imports: r#"(import "elsewhere" "thing" (func $thing (param i32)))"#.to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(
            dir.path(),
            "imports-elsewhere.wasm",
            wat.render().as_bytes(),
        ),
        &["elsewhere"],
        "a module importing elsewhere.thing",
    );
    // A known name with the wrong signature.
    let wat = Wat {
        imports:
            r#"(import "env" "nxt_wasm_response_end" (func $bad_end (param i64) (result i64)))"#
                .to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "imports-mistyped.wasm", wat.render().as_bytes()),
        &["nxt_wasm_response_end"],
        "a module importing env.nxt_wasm_response_end with the wrong type",
    );
}

#[test]
fn a_trap_in_initialize_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wat = Wat {
        extra: r#"(func (export "_initialize") unreachable)"#.to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "init-traps.wasm", wat.render().as_bytes()),
        &["_initialize", TRAP],
        "a module whose _initialize traps",
    );
}

#[test]
fn a_trap_in_malloc_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wat = Wat {
        malloc: "unreachable".to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "malloc-traps.wasm", wat.render().as_bytes()),
        &["luw_malloc_handler", TRAP],
        "a module whose malloc handler traps",
    );
}

#[test]
fn a_buffer_outside_memory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 37 MiB into a 37.5 MiB memory: the 32 MiB + 64 KiB buffer runs past the end.
    let wat = Wat {
        malloc: "(i32.const 38797312)".to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "malloc-outside.wasm", wat.render().as_bytes()),
        &["luw_malloc_handler|buffer"],
        "a malloc handler returning a buffer that runs past the end of memory",
    );
    // Past the end of the 32-bit space.
    let wat = Wat {
        malloc: "(i32.const -16)".to_string(),
        ..Wat::default()
    };
    check_refused(
        app_on(dir.path(), "malloc-wraps.wasm", wat.render().as_bytes()),
        &["luw_malloc_handler|buffer"],
        "a malloc handler returning 0xFFFFFFF0",
    );
}

#[test]
fn a_trap_in_module_init_handler_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wat = Wat {
        extra: r#"(func (export "luw_module_init_handler") unreachable)"#.to_string(),
        ..Wat::default()
    };
    let mut app = app_on(
        dir.path(),
        "module-init-traps.wasm",
        wat.render().as_bytes(),
    );
    app["module_init_handler"] = json!("luw_module_init_handler");
    check_refused(
        app,
        &["luw_module_init_handler", TRAP],
        "a module whose module_init_handler traps",
    );
}

#[test]
fn a_module_without_memory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"(module
  (func (export "luw_request_handler") (param i32) (result i32) (i32.const 0))
  (func (export "luw_malloc_handler") (param i32) (result i32) (i32.const 1024))
  (func (export "luw_free_handler") (param i32)))"#;
    check_refused(
        app_on(dir.path(), "no-memory.wasm", text.as_bytes()),
        &["memory"],
        "a module exporting no memory",
    );
}

#[test]
fn a_refused_module_fixed_on_disk_is_accepted_by_the_next_change() {
    let (server, key) = healthy_server();
    let dir = server.dir().to_path_buf();
    let file = path_str(&write_file(&dir, "later.wasm", b"not yet a module"));
    let before = server.snapshot();
    let resp = server.put_json("/config/applications/later", &wasm_app(&file));
    assert_apply_failed(
        &resp,
        "later",
        &file,
        &[COMPILE],
        "a module not written yet",
    );
    server.assert_unchanged(&before, "the refused change");
    // The file becomes a module: the same change now works (no stale negative cache).
    crate::harness::guest_file(&dir, "later.wasm");
    assert_done(&server.put_json("/config/applications/later", &wasm_app(&file)));
    let new_key = listener_key();
    assert_done(&server.put_json(
        &format!("/config/listeners/{new_key}"),
        &json!({"pass": "applications/later"}),
    ));
    assert_serves(&new_key, "the module fixed on disk");
    assert_serves(&key, "the first app after all that");
}

/// A guest that answers with its WASI environment: the `environ_get` buffer as it is
/// (`NAME=value` strings, each NUL-terminated), sent as the body without headers.
fn environment_guest() -> Wat {
    Wat {
        imports: r#"(import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))"#
            .to_string(),
        handler: "
    (if (i32.eqz (call $first_call (local.get $addr)))
      (then (return (i32.const 0))))
    ;; count at 37000000, buffer size at 37000004; pointers from 37000016, strings from
    ;; 37100000 (all above the shared buffer, inside the 39.3 MB memory).
    (if (call $environ_sizes_get (i32.const 37000000) (i32.const 37000004))
      (then (return (i32.const 1))))
    (if (i32.gt_u (i32.load (i32.const 37000004)) (i32.const 2000000))
      (then (return (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 37000000)) (i32.const 20000))
      (then (return (i32.const 3))))
    (if (call $environ_get (i32.const 37000016) (i32.const 37100000))
      (then (return (i32.const 4))))
    (i32.store (i32.add (local.get $addr) (i32.const 4096)) (i32.load (i32.const 37000004)))
    (memory.copy (i32.add (local.get $addr) (i32.const 4100)) (i32.const 37100000)
                 (i32.load (i32.const 37000004)))
    (call $send_response (i32.const 4096))
    (call $response_end)
    (i32.const 0)"
            .to_string(),
        ..Wat::default()
    }
}

/// The guest's environment, from its answer.
fn parse_environ(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let text = String::from_utf8_lossy(entry);
            match text.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (text.into_owned(), String::new()),
            }
        })
        .collect()
}

#[test]
fn the_guest_sees_its_apps_environment() {
    let server = Server::start();
    let file = path_str(&write_file(
        server.dir(),
        "environ.wasm",
        environment_guest().render().as_bytes(),
    ));
    let vars = json!({
        "GREETING": "hello world",
        "UNICODE": "caf\u{e9} \u{20ac} \u{1F600}",
        "EMPTY": "",
        "EQUALS": "a=b=c",
        "SPACES IN NAME": "ok"
    });
    let mut app = wasm_app(&file);
    app["environment"] = vars.clone();
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/env"}},
        "routes": [],
        "applications": {"env": app}
    }));
    let check = |vars: &Value, what: &str| {
        let resp = get_from(&key, "/");
        assert_eq!(resp.status, 200, "{what}: {resp}");
        let env = parse_environ(&resp.bytes);
        for (k, v) in vars.as_object().expect("object") {
            let v = v.as_str().expect("string");
            let seen: Vec<&String> = env.iter().filter(|(n, _)| n == k).map(|(_, v)| v).collect();
            assert_eq!(
                seen,
                vec![v],
                "{what}: the guest must see {k}={v:?} once; its environment: {env:?}"
            );
        }
        env
    };
    check(&vars, "the configured environment");

    // A change of the environment reaches the guest (a new instance).
    let vars = json!({"GREETING": "changed", "NEW": "1"});
    assert_done(&server.put_json("/config/applications/env/environment", &vars));
    let env = check(&vars, "the changed environment");
    assert!(
        !env.iter().any(|(k, _)| k == "UNICODE"),
        "a removed variable is gone: {env:?}"
    );
}

/// A guest that prints a line on stdout and one on stderr (WASI `fd_write`) at each
/// request, then answers.
fn printing_guest() -> Wat {
    Wat {
        imports: "(import \"wasi_snapshot_preview1\" \"fd_write\"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))"
            .to_string(),
        // Two iovecs (address, length) at 100 and 108, the texts at 200 and 240.
        extra: "(data (i32.const 100) \"\\c8\\00\\00\\00\\12\\00\\00\\00\\f0\\00\\00\\00\\12\\00\\00\\00\")
  (data (i32.const 200) \"printed on stdout\\n\")
  (data (i32.const 240) \"printed on stderr\\n\")"
            .to_string(),
        handler: "
    (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 120)))
    (drop (call $fd_write (i32.const 2) (i32.const 108) (i32.const 1) (i32.const 120)))
    (call $respond (local.get $addr))
    (i32.const 0)"
            .to_string(),
        ..Wat::default()
    }
}

#[test]
fn the_guests_stdout_and_stderr_go_to_the_log_tagged_with_the_app() {
    let builder = Server::builder();
    let log = builder.dir().join("wharf.log");
    let server = builder.arg("--log").arg(&log).start();
    let key = listener_key();
    let module = write_file(
        server.dir(),
        "printer.wasm",
        printing_guest().render().as_bytes(),
    );
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/printer"}},
        "applications": {"printer": wasm_app(&path_str(&module))}
    }));
    assert_serves(&key, "a guest that prints");
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let logged = |stream: &str| {
        let text = format!("printed on {stream}");
        let tag = format!("stream=\"{stream}\"");
        lines()
            .lines()
            .any(|l| l.ends_with(&text) && l.contains("app=printer") && l.contains(&tag))
    };
    assert!(
        crate::harness::wait_until(std::time::Duration::from_secs(30), || logged("stdout")
            && logged("stderr")),
        "the guest's lines are not in the --log file, tagged with the app:\n{}\n\
         ----- the server's own output -----\n{}",
        lines(),
        server.log()
    );
    assert!(
        !server.log().contains("printed on"),
        "the guest's output bypassed --log:\n{}",
        server.log()
    );
}

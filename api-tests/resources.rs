//! No resource grows with each deployed build: successive builds of one app (each a new
//! module, swapped in by a restart or by a change; or components, by a restart) leave
//! the server with as many open file descriptors as the first build did. Each compiled
//! module with data owns a memory image (a `memfd`), so a module kept alive after no app
//! uses it shows up here.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Server, WAT_BODY, Wat, example_guest, get_from, listener_key, path_str, wait_until, wasm_app,
    write_file,
};

/// Builds after the warm-up one.
const BUILDS: usize = 12;

/// Descriptors the count may differ by (a control connection still closing, say).
const SLACK: usize = 2;

/// What is deployed: the file of build `n`, and the app on a file.
struct Builds {
    file: fn(usize) -> Vec<u8>,
    app: fn(&str) -> Value,
}

const MODULES: Builds = Builds {
    file: build,
    app: wasm_app,
};

/// Two components in turn: each is dropped while the other runs, and loaded again (from
/// the compiled cache on disk) when it comes back.
const COMPONENTS: Builds = Builds {
    file: |n| {
        let name = if n % 2 == 0 {
            "hello-component"
        } else {
            "echo-component"
        };
        std::fs::read(example_guest(name)).expect("read an example component")
    },
    app: |file| json!({"type": "wasm-wasi-component", "component": file}),
};

/// A guest that differs from every other build only by an exported constant, so that
/// each build is a new module (new content hash) with the same behaviour.
fn build(n: usize) -> Vec<u8> {
    Wat {
        extra: format!("(global (export \"build\") i32 (i32.const {n}))"),
        ..Wat::default()
    }
    .render()
    .into_bytes()
}

/// The server's open descriptors, and how many of them are memory images.
fn descriptors(pid: u32) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let targets: Vec<String> = entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    let images = targets
        .iter()
        .filter(|t| t.contains("wasm-memory-image"))
        .count();
    (targets.len(), images)
}

/// Waits (bounded) for the count to settle at or below `most`; returns the last one.
fn settled(pid: u32, most: usize) -> (usize, usize) {
    let mut last = descriptors(pid);
    wait_until(Duration::from_secs(10), || {
        last = descriptors(pid);
        last.0 <= most
    });
    last
}

#[track_caller]
fn assert_serves(key: &str, what: &str) {
    let resp = get_from(key, "/");
    assert_eq!(resp.status, 200, "{what}: {resp}");
    assert!(
        [WAT_BODY, "Hello", ""].contains(&resp.body.as_str()),
        "{what}: {resp}"
    );
}

/// Deploys `BUILDS` builds with `deploy` after a warm-up build; the descriptor count
/// must not grow with them.
fn assert_builds_leave_nothing(builds: &Builds, deploy: impl Fn(&Server, usize)) {
    let server = Server::start();
    let key = listener_key();
    let module = write_file(server.dir(), "app.wasm", &(builds.file)(0));
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/app"}},
        "applications": {"app": (builds.app)(&path_str(&module))}
    }));
    assert_serves(&key, "the first build");
    // A second build first: whatever is made once, on the first swap, is made by now.
    deploy(&server, 1);
    assert_serves(&key, "the warm-up build");
    let pid = server.pid();
    // Let the previous build's instances retire.
    std::thread::sleep(Duration::from_millis(500));
    let (before, images_before) = descriptors(pid);
    for n in 2..2 + BUILDS {
        deploy(&server, n);
        assert_serves(&key, &format!("build {n}"));
    }
    let (after, images_after) = settled(pid, before + SLACK);
    eprintln!(
        "open descriptors: {before} ({images_before} memory images) after the warm-up \
         build, {after} ({images_after}) after {BUILDS} more"
    );
    assert!(
        after <= before + SLACK,
        "{BUILDS} builds left the server with {after} open descriptors ({images_after} \
         memory images), up from {before} ({images_before})\n{}",
        server.log()
    );
}

fn restart_on(builds: &Builds) -> impl Fn(&Server, usize) + '_ {
    move |server, n| {
        write_file(server.dir(), "app.wasm", &(builds.file)(n));
        let resp = server.get("/control/applications/app/restart");
        assert_eq!(resp.status, 200, "restart {n}: {resp}");
    }
}

#[test]
fn restarting_an_app_on_new_builds_leaves_no_descriptor_behind() {
    assert_builds_leave_nothing(&MODULES, restart_on(&MODULES));
}

#[test]
fn restarting_a_component_app_on_new_builds_leaves_no_descriptor_behind() {
    assert_builds_leave_nothing(&COMPONENTS, restart_on(&COMPONENTS));
}

#[test]
fn changing_an_app_on_new_builds_leaves_no_descriptor_behind() {
    assert_builds_leave_nothing(&MODULES, |server, n| {
        // A new file name each time: a change, not a restart, swaps the module in.
        let file = write_file(server.dir(), &format!("app-{n}.wasm"), &build(n));
        let resp = server.put_json("/config/applications/app/module", &json!(path_str(&file)));
        assert_eq!(resp.status, 200, "change {n}: {resp}");
    });
}

//! Zero-downtime hot swap: `GET /control/applications/<name>/restart`, `"watch": true`,
//! apps kept warm across changes that do not touch them, the compiled-module cache on
//! disk (and what it does with an entry it did not write), and the swap storm: 32 busy
//! keep-alive connections on two apps through 100 reconfigurations and 20 module swaps,
//! with no request failed, reset, truncated or mixed, and `module_end` run once per
//! retired instance.
//!
//! The guests here are versioned WAT guests: version `n` answers `X-Version: v<n>` and a
//! body sent in three pieces, `v<n>;v<n>;v<n>;`, so a response that mixed two modules
//! would show it. Their `module_init_handler` draws a random instance id (WASI
//! `random_get`) and prints `swap-init <tag> <id>`; their `module_end_handler` prints
//! `swap-end <tag> <id>`, so the log tells which instance retired how often.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Response, Server, Wat, assert_done, assert_error, connect_listener, get_from, guest_app,
    listener_key, path_str, wait_until, wasm_app, wat_bytes, write_file,
};

/// Where a versioned guest keeps its canned response (above the shared buffer and the
/// harness's own canned response).
const VERSIONED: u32 = 36_100_000;
/// Offset of the body struct inside the versioned canned response.
const VERSIONED_BODY: u32 = 128;
/// Where the hooks keep their instance id, iovec and log lines.
const LINES: u32 = 36_200_000;
const INIT_LINE: u32 = LINES + 64;
const END_LINE: u32 = LINES + 192;

/// How long a swap may take to show on a busy machine (the watch settles in 0.5 s).
const SWAP_LIMIT: Duration = Duration::from_secs(30);

/// The canned response of version `version`: a headers struct with `Content-Type` and
/// `X-Version`, padded to [`VERSIONED_BODY`], then the body struct.
fn versioned_canned(version: u32) -> Vec<u8> {
    let tag = format!("v{version}");
    let fields: [(&[u8], &[u8]); 2] = [
        (b"Content-Type", b"text/plain"),
        (b"X-Version", tag.as_bytes()),
    ];
    let mut strings = Vec::new();
    let mut words = vec![fields.len() as u32];
    let mut at = 4 + 16 * fields.len() as u32;
    for (name, value) in fields {
        words.extend([
            at,
            name.len() as u32,
            at + name.len() as u32,
            value.len() as u32,
        ]);
        at += (name.len() + value.len()) as u32;
        strings.extend_from_slice(name);
        strings.extend_from_slice(value);
    }
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    out.extend(strings);
    out.resize(VERSIONED_BODY as usize, 0);
    let piece = format!("{tag};");
    out.extend((piece.len() as u32).to_le_bytes());
    out.extend_from_slice(piece.as_bytes());
    out
}

/// The body every response of version `version` must have.
fn versioned_body(version: u32) -> String {
    format!("v{version};").repeat(3)
}

/// A guest answering as version `version`, whose hooks print lines tagged `tag`.
fn versioned_guest(tag: &str, version: u32) -> String {
    let canned = versioned_canned(version);
    let init = format!("swap-init {tag} ................\n");
    let end = format!("swap-end {tag} ................\n");
    let id_at = |line: &str, base: u32| base + line.len() as u32 - 17;
    Wat {
        handler: format!(
            "
    (if (call $first_call (local.get $addr))
      (then
        (memory.copy (local.get $addr) (i32.const {VERSIONED}) (i32.const {len}))
        (call $send_headers (i32.const 0))
        (call $send_response (i32.const {VERSIONED_BODY}))
        (call $send_response (i32.const {VERSIONED_BODY}))
        (call $send_response (i32.const {VERSIONED_BODY}))
        (call $response_end)))
    (i32.const 0)",
            len = canned.len()
        ),
        imports: "(import \"wasi_snapshot_preview1\" \"fd_write\"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import \"wasi_snapshot_preview1\" \"random_get\"
    (func $random_get (param i32 i32) (result i32)))"
            .to_string(),
        extra: format!(
            "(data (i32.const {VERSIONED}) {canned})
  (data (i32.const {INIT_LINE}) {init_text})
  (data (i32.const {END_LINE}) {end_text})
  (func $nibble (param $n i32) (result i32)
    (select (i32.add (local.get $n) (i32.const 48))
            (i32.add (local.get $n) (i32.const 87))
            (i32.lt_u (local.get $n) (i32.const 10))))
  (func $write_id (param $dst i32) (local $i i32) (local $b i32)
    (loop $next
      (local.set $b (i32.load8_u (i32.add (i32.const {LINES}) (local.get $i))))
      (i32.store8 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
        (call $nibble (i32.shr_u (local.get $b) (i32.const 4))))
      (i32.store8 (i32.add (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1))) (i32.const 1))
        (call $nibble (i32.and (local.get $b) (i32.const 15))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 8)))))
  (func $say (param $line i32) (param $len i32)
    (i32.store (i32.const {iov}) (local.get $line))
    (i32.store (i32.const {iov_len}) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const {iov}) (i32.const 1) (i32.const {written}))))
  (func (export \"luw_module_init_handler\")
    (drop (call $random_get (i32.const {LINES}) (i32.const 8)))
    (call $write_id (i32.const {init_id}))
    (call $say (i32.const {INIT_LINE}) (i32.const {init_len})))
  (func (export \"luw_module_end_handler\")
    (call $write_id (i32.const {end_id}))
    (call $say (i32.const {END_LINE}) (i32.const {end_len})))",
            canned = wat_bytes(&canned),
            init_text = wat_bytes(init.as_bytes()),
            end_text = wat_bytes(end.as_bytes()),
            iov = LINES + 16,
            iov_len = LINES + 20,
            written = LINES + 24,
            init_id = id_at(&init, INIT_LINE),
            end_id = id_at(&end, END_LINE),
            init_len = init.len(),
            end_len = end.len(),
        ),
        ..Wat::default()
    }
    .render()
}

/// Writes version `version` of the guest tagged `tag` to `<dir>/<tag>.wasm`.
fn write_version(dir: &Path, tag: &str, version: u32) -> PathBuf {
    write_file(
        dir,
        &format!("{tag}.wasm"),
        versioned_guest(tag, version).as_bytes(),
    )
}

/// A `wasm` app on `<dir>/<tag>.wasm` with the hooks, `extra` merged in.
fn versioned_app(dir: &Path, tag: &str, version: u32, extra: Value) -> Value {
    let mut app = wasm_app(&path_str(&write_version(dir, tag, version)));
    let members = app.as_object_mut().expect("an app is an object");
    members.insert(
        "module_init_handler".into(),
        "luw_module_init_handler".into(),
    );
    members.insert("module_end_handler".into(), "luw_module_end_handler".into());
    if let Value::Object(extra) = extra {
        members.extend(extra);
    }
    app
}

/// The version a response came from; fails on anything but a whole, consistent answer.
#[track_caller]
fn version_of(resp: &Response) -> Result<u32, String> {
    if resp.status != 200 {
        return Err(format!("status {}:\n{resp}", resp.status));
    }
    let version = resp
        .header("x-version")
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no X-Version:\n{resp}"))?;
    if resp.body != versioned_body(version) {
        return Err(format!("the body is not all v{version}:\n{resp}"));
    }
    Ok(version)
}

/// `GET /` on a fresh connection, as a version.
#[track_caller]
fn served_version(key: &str, server: &Server) -> u32 {
    version_of(&get_from(key, "/")).unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
}

/// Waits until the listener serves `version`.
#[track_caller]
fn wait_for_version(key: &str, server: &Server, version: u32, what: &str) {
    assert!(
        wait_until(SWAP_LIMIT, || served_version(key, server) == version),
        "{what}: v{version} was never served; still v{}\n{}",
        served_version(key, server),
        server.log()
    );
}

/// Instance ids per hook line (`swap-init` or `swap-end`) and tag, from the log.
fn hook_lines(log: &str, hook: &str, tag: &str) -> HashMap<String, usize> {
    let prefix = format!("{hook} {tag} ");
    let mut ids = HashMap::new();
    for line in log.lines() {
        if let Some(at) = line.find(&prefix) {
            let id = &line[at + prefix.len()..];
            *ids.entry(id.trim().to_owned()).or_insert(0) += 1;
        }
    }
    ids
}

fn restart(server: &Server, app: &str) -> Response {
    server.get(&format!("/control/applications/{app}/restart"))
}

/// A server with one app, `a`, at version 1 on its own listener.
fn one_app(extra: Value) -> (Server, String) {
    let server = Server::start();
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/a"}},
        "applications": {"a": versioned_app(server.dir(), "a", 1, extra)}
    }));
    (server, key)
}

#[test]
fn restart_swaps_in_fresh_instances_of_the_file_as_it_is_now() {
    let (server, key) = one_app(json!({"processes": 1}));
    let before = server.snapshot();
    assert_eq!(served_version(&key, &server), 1);
    write_version(server.dir(), "a", 2);
    assert_eq!(
        served_version(&key, &server),
        1,
        "without watch, a changed file waits for a restart"
    );

    let resp = restart(&server, "a");
    assert_eq!(resp.status, 200, "{resp}\n{}", server.log());
    assert_eq!(resp.json(), json!({"success": "Ok"}));
    assert_eq!(served_version(&key, &server), 2, "answered only once ready");
    server.assert_unchanged(&before, "a restart");

    // Restarting an unchanged file still replaces the instances.
    let inits = || hook_lines(&server.log(), "swap-init", "a").len();
    let started = inits();
    assert_eq!(restart(&server, "a").status, 200);
    assert!(
        wait_until(SWAP_LIMIT, || inits() == started + 1),
        "{}",
        server.log()
    );
    assert_eq!(served_version(&key, &server), 2);

    // Each replaced instance ran its end hook.
    assert!(
        wait_until(SWAP_LIMIT, || hook_lines(&server.log(), "swap-end", "a")
            .len()
            == 2),
        "{}",
        server.log()
    );
}

#[test]
fn a_restart_that_cannot_load_keeps_the_old_instances_serving() {
    let (server, key) = one_app(json!({}));
    let module = write_file(server.dir(), "a.wasm", b"(module (func $broken");
    let resp = restart(&server, "a");
    assert_error(&resp, 500, "Failed to restart application.");
    let detail = resp.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("application \"a\"") && detail.contains(&path_str(&module)),
        "the detail names the app and the file: {detail}"
    );
    assert_eq!(served_version(&key, &server), 1);

    // A module that compiles but lacks a configured export fails the same way.
    write_file(
        server.dir(),
        "a.wasm",
        b"(module (memory (export \"memory\") 1))",
    );
    let resp = restart(&server, "a");
    assert_error(&resp, 500, "Failed to restart application.");
    assert_eq!(served_version(&key, &server), 1);

    let resp = restart(&server, "nope");
    assert_error(&resp, 404, "Value doesn't exist.");
    let resp = server.request("POST", "/control/applications/a/restart", &[], None);
    assert_eq!(resp.status, 405, "{resp}");
}

#[test]
fn watch_swaps_the_module_once_the_file_settles() {
    let (server, key) = one_app(json!({"watch": true}));
    let swaps = || {
        server
            .log()
            .matches("module file changed: swapped in")
            .count()
    };
    assert_eq!(served_version(&key, &server), 1);

    write_version(server.dir(), "a", 2);
    wait_for_version(&key, &server, 2, "a changed file");
    assert_eq!(swaps(), 1);

    // A file left half-written is not a module: logged, and v2 keeps serving.
    let full = versioned_guest("a", 3);
    write_file(server.dir(), "a.wasm", &full.as_bytes()[..full.len() / 2]);
    assert!(
        wait_until(SWAP_LIMIT, || server.log().contains("was not swapped in")),
        "{}",
        server.log()
    );
    assert_eq!(served_version(&key, &server), 2);

    // Finishing the write swaps it in.
    write_file(server.dir(), "a.wasm", full.as_bytes());
    wait_for_version(&key, &server, 3, "the finished file");

    // Touching the file (same bytes) swaps nothing.
    let path = server.dir().join("a.wasm");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_modified(std::time::SystemTime::now())
        .expect("touch");
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(swaps(), 2, "{}", server.log());
    assert_eq!(served_version(&key, &server), 3);

    // Without watch, nothing is swapped.
    let resp = server.delete("/config/applications/a/watch");
    assert_done(&resp);
    write_version(server.dir(), "a", 4);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(served_version(&key, &server), 3);
}

#[test]
fn changing_one_app_keeps_the_others_warm() {
    let server = Server::start();
    let (a, b) = (listener_key(), listener_key());
    server.load(&json!({
        "listeners": {
            a.clone(): {"pass": "applications/a"},
            b.clone(): {"pass": "applications/b"}
        },
        "applications": {
            "a": versioned_app(server.dir(), "a", 1, json!({"processes": 1})),
            "b": versioned_app(server.dir(), "b", 1, json!({"processes": 1}))
        }
    }));
    let inits = |tag| hook_lines(&server.log(), "swap-init", tag).len();
    // Guest output reaches the log as the guest writes it; allow for a slow machine.
    let wait_for_inits = |a, b| wait_until(SWAP_LIMIT, || (inits("a"), inits("b")) == (a, b));
    assert!(wait_for_inits(1, 1), "{}", server.log());
    for n in 0..3 {
        let resp = server.put_json(
            "/config/applications/b/environment",
            &json!({"N": n.to_string()}),
        );
        assert_done(&resp);
        let resp = server.put_json("/config/routes", &json!([]));
        assert_done(&resp);
    }
    assert_eq!(served_version(&a, &server), 1);
    assert_eq!(served_version(&b, &server), 1);
    assert!(
        wait_for_inits(1, 4),
        "a started again, or b not:\n{}",
        server.log()
    );

    // A new file under an unchanged config is picked up by the next change.
    write_version(server.dir(), "a", 2);
    assert_done(&server.put_json("/config/routes", &json!([])));
    assert_eq!(served_version(&a, &server), 2);
}

#[test]
fn a_restarted_server_loads_compiled_modules_from_its_cache() {
    let (mut server, key) = one_app(json!({}));
    let compiled = server.dir().join("state/compiled");
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(&compiled)
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(entries().len(), 1, "one module, one entry");
    assert!(server.current_log().contains("module compiled"));

    server.sigterm();
    server.start_again();
    assert_eq!(served_version(&key, &server), 1);
    assert!(
        !server.current_log().contains("module compiled"),
        "the cached module was compiled again:\n{}",
        server.log()
    );

    // An entry altered on disk is detected, removed and compiled again, not loaded.
    server.sigterm();
    let entry = entries().pop().expect("entry");
    let mut bytes = std::fs::read(&entry).expect("read entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&entry, &bytes).expect("tamper");
    server.start_again();
    let log = server.current_log();
    assert!(log.contains("failed its integrity check"), "{log}");
    assert!(log.contains("module compiled"), "{log}");
    assert_eq!(served_version(&key, &server), 1);
    assert_ne!(
        std::fs::read(&entry).expect("rewritten"),
        bytes,
        "the entry was written afresh"
    );
}

#[test]
fn the_module_cache_can_be_turned_off() {
    let server = Server::builder()
        .arg("--module-cache-size")
        .arg("0")
        .start();
    server.load(&json!({
        "listeners": {},
        "applications": {"a": guest_app(server.dir(), "a.wasm")}
    }));
    assert!(!server.dir().join("state/compiled").exists());
}

/// What the clients of the storm saw.
#[derive(Default)]
struct Observed {
    failures: Mutex<Vec<String>>,
    requests: AtomicU64,
}

impl Observed {
    fn fail(&self, what: String) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.push(what);
        }
    }
}

/// One client: a keep-alive connection sending `GET /a` and `GET /b` in turn until
/// `stop`; every response must be whole and consistent, and per app the version never
/// goes back (each request starts after the previous one ended, so it runs on the same
/// or a newer generation).
fn storm_client(key: String, stop: Arc<AtomicBool>, seen: Arc<Observed>) {
    let mut latest = [0u32; 2];
    let mut conn = None;
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let app = turn % 2;
        turn += 1;
        let target = ["/a", "/b"][app];
        if conn.is_none() {
            match connect_listener(&key) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    seen.fail(format!("connect: {e}"));
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.request("GET", target, &[], None) {
            Ok(resp) => match version_of(&resp) {
                Ok(version) if version >= latest[app] => latest[app] = version,
                Ok(version) => seen.fail(format!(
                    "{target}: v{version} after v{} on one connection",
                    latest[app]
                )),
                Err(e) => seen.fail(format!("{target}: {e}")),
            },
            Err(e) => {
                seen.fail(format!("{target}: {e}"));
                conn = None;
            }
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// One reconfiguration of the storm, chosen by its number: routes and apps added and
/// removed, and the other app (`b`) changed.
fn storm_change(server: &Server, n: u32) -> Response {
    match n % 5 {
        0 => server.post_json(
            "/config/routes",
            &json!({"match": {"uri": format!("/extra{n}")}, "action": {"return": 204}}),
        ),
        1 => server.delete("/config/routes/2"),
        2 => server.put_json("/config/applications/c", &guest_app(server.dir(), "c.wasm")),
        3 => server.delete("/config/applications/c"),
        _ => server.put_json(
            "/config/applications/b/environment",
            &json!({"N": n.to_string()}),
        ),
    }
}

#[test]
fn a_swap_storm_under_load_drops_nothing_and_mixes_nothing() {
    let server = Server::start();
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "routes"}},
        "routes": [
            {"match": {"uri": "/a"}, "action": {"pass": "applications/a"}},
            {"match": {"uri": "/b"}, "action": {"pass": "applications/b"}}
        ],
        "applications": {
            "a": versioned_app(server.dir(), "a", 1, json!({"watch": true, "processes": 4})),
            "b": versioned_app(server.dir(), "b", 1, json!({"processes": 4}))
        }
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Observed::default());
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (key, stop, seen) = (key.clone(), Arc::clone(&stop), Arc::clone(&seen));
            thread::spawn(move || storm_client(key, stop, seen))
        })
        .collect();

    let mut versions = [1u32, 1u32];
    for n in 0..100u32 {
        let resp = storm_change(&server, n);
        assert_eq!(resp.status, 200, "change {n}: {resp}\n{}", server.log());
        if n % 5 != 4 {
            continue;
        }
        // After every fifth change, a module swap: `a` by its file (watch), `b` by a
        // restart, in turn: 20 in all.
        let swap = n / 5;
        let app = (swap % 2) as usize;
        versions[app] += 1;
        let tag = ["a", "b"][app];
        write_version(server.dir(), tag, versions[app]);
        if app == 1 {
            let resp = restart(&server, "b");
            assert_eq!(resp.status, 200, "restart: {resp}\n{}", server.log());
        }
        let target = format!("/{tag}");
        let shows = || {
            connect_listener(&key)
                .and_then(|mut c| c.request("GET", &target, &[], None))
                .is_ok_and(|resp| version_of(&resp) == Ok(versions[app]))
        };
        assert!(
            wait_until(SWAP_LIMIT, shows),
            "swap {swap} of {tag} to v{} never showed\n{}",
            versions[app],
            server.log()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let failures = seen.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let requests = seen.requests.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed; the first: {:#?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        server.log()
    );
    assert!(requests > 1000, "only {requests} requests were made");
    eprintln!("swap storm: {requests} requests, none failed");

    // Retire everything; then every instance that started has ended exactly once.
    server.load(&json!({"listeners": {}, "applications": {}}));
    for tag in ["a", "b"] {
        let balanced = || {
            let log = server.log();
            hook_lines(&log, "swap-init", tag) == hook_lines(&log, "swap-end", tag)
        };
        assert!(
            wait_until(SWAP_LIMIT, balanced),
            "{tag}: instances started and ended differ\n{}",
            server.log()
        );
        let log = server.log();
        let inits = hook_lines(&log, "swap-init", tag);
        assert!(
            inits.values().all(|&n| n == 1),
            "{tag}: an instance id started twice (not random?)"
        );
        assert!(inits.len() >= 12, "{tag}: only {} instances", inits.len());
    }
}

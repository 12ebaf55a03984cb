//! The command line: flags, `--config` at startup, signals, the socket's mode, the pid
//! and log files, and a TCP control address.

use std::ffi::OsString;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{
    BIN, Conn, Server, assert_done, default_config, echo_config, example_app, free_port,
    listener_key, run_bin, send_signal, wait_until,
};

#[test]
fn version_prints_the_version_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_bin(&["--version".into()], dir.path());
    assert!(
        out.status.success(),
        "--version exited with {}: {out:?}",
        out.status
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "--version must print {}: {out:?}",
        env!("CARGO_PKG_VERSION")
    );
}

/// What unitctl reads from a process title (`unitd_cmd.rs`): the version between
/// `unit: main v` and ` [`, and the words inside the brackets.
fn parse_unit_title(title: &str) -> Option<(String, Vec<String>)> {
    let inner = title.strip_prefix("unit: main v")?.strip_suffix(']')?;
    let (version, cmd) = inner.split_once(" [")?;
    Some((
        version.to_owned(),
        cmd.split_ascii_whitespace().map(str::to_owned).collect(),
    ))
}

/// unitctl's `get_flag_value`: the word after `--name`, unless it is a flag itself.
fn unit_flag_value(words: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let at = words.iter().position(|word| *word == flag)?;
    words.get(at + 1).filter(|v| !v.starts_with("--")).cloned()
}

#[test]
fn unit_tools_find_the_server_and_its_socket_by_the_process_title_and_version() {
    let server = Server::builder().arg("--log").arg("wharf.log").start();
    let pid = server.pid();
    // unitctl keeps processes whose name (the kernel's `comm`) is `unitd`.
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).expect("read comm");
    assert_eq!(
        comm.trim_end(),
        "unitd",
        "the process name Unit's tools look for"
    );
    // ... and parses the first word of the command line as Unit's main process title.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    let title = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find(|word| !word.is_empty())
        .map(str::to_owned)
        .expect("a title");
    let (version, words) =
        parse_unit_title(&title).unwrap_or_else(|| panic!("not a Unit title: {title:?}"));
    assert_eq!(version, "1.35.0", "{title}");
    let control = unit_flag_value(&words, "control").expect("the title names --control");
    let socket = control
        .strip_prefix("unix:")
        .unwrap_or_else(|| panic!("a unix socket: {control}"));
    assert!(
        Path::new(socket).is_absolute(),
        "a tool in another directory must reach the socket: {title}"
    );
    assert_eq!(Path::new(socket), server.sock(), "{title}");
    assert_eq!(
        unit_flag_value(&words, "log").as_deref(),
        Some("wharf.log"),
        "the rest of the command line is kept: {title}"
    );
    let state = unit_flag_value(&words, "state").expect("the title names --state");
    assert!(Path::new(&state).is_absolute(), "{title}");
    // The socket the title names is the control API.
    let mut conn = Conn::open(Path::new(socket)).expect("connect to the title's socket");
    let status = conn
        .request("GET", "/status", &[], None)
        .expect("GET /status");
    assert_eq!(status.status, 200, "{status}");

    // `--version` on stderr, as unitctl reads `unitd --version`.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_bin(&["--version".into()], dir.path());
    assert!(out.status.success(), "{out:?}");
    let version_line = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("unit version: "));
    assert_eq!(version_line, Some("1.35.0"), "{out:?}");
    let configure = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("configured as ./configure "))
        .unwrap_or_else(|| panic!("no `configured as ./configure` line: {out:?}"));
    assert!(
        configure
            .split_ascii_whitespace()
            .any(|option| option.starts_with("--control=unix:")),
        "the default control socket is among the configure options: {configure}"
    );
}

#[test]
fn an_unknown_flag_exits_nonzero_with_a_message_before_listening() {
    let builder = Server::builder().arg("--no-such-flag");
    let sock = builder.dir().join("control.sock");
    let (out, _dir) = builder.run_to_exit();
    assert!(!out.status.success(), "an unknown flag must fail: {out:?}");
    assert!(
        out.stderr.contains("no-such-flag"),
        "stderr must name the flag: {out:?}"
    );
    assert!(
        !sock.exists(),
        "a bad command line must fail before the socket is bound"
    );
}

#[test]
fn the_log_says_controller_started() {
    let server = Server::start();
    assert!(
        wait_until(Duration::from_secs(30), || server
            .current_log()
            .contains("controller started")),
        "stderr never said `controller started`:\n{}",
        server.log()
    );
}

#[test]
fn a_config_file_is_applied_and_committed_at_startup() {
    let builder = Server::builder();
    let file = builder.dir().join("wharf.json");
    let config = echo_config(builder.dir());
    fs::write(&file, serde_json::to_vec_pretty(&config).expect("json")).expect("write config");
    let fresh_generation = Server::start().generation();
    let mut server = builder.arg("--config").arg(&file).start();
    let (tree, g) = server.snapshot();
    assert_eq!(tree, config);
    assert!(
        g > fresh_generation,
        "applying --config is a commit: generation {g}"
    );
    let resp = server.get(&format!("/history/{g}"));
    assert_eq!(
        resp.status, 200,
        "the startup commit is in the history: {resp}"
    );
    assert_eq!(resp.json()["config"], config);

    // Committed: it survives a restart without --config.
    let args = vec!["--config".into(), file.clone().into_os_string()];
    server.set_args(Vec::new());
    server.restart();
    assert_eq!(server.config(), config);

    // And given again, it replaces whatever was committed since.
    assert_done(&server.put("/config/applications/echo/processes", "2"));
    server.set_args(args);
    server.restart();
    assert_eq!(server.config(), config);
}

#[test]
fn a_config_file_in_unit_dialect_is_accepted() {
    let builder = Server::builder();
    let file = builder.dir().join("wharf.json");
    let text = "\u{FEFF}// Unit-style config\n{\n  \"listeners\": {}, /* none yet */\n  \"routes\": [{\"action\": {\"return\": 204},},],\n  \"applications\": {},\n}\n";
    fs::write(&file, text).expect("write config");
    let server = builder.arg("--config").arg(&file).start();
    assert_eq!(
        server.config(),
        json!({"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}})
    );
}

#[test]
fn a_bad_config_file_exits_nonzero_names_the_problem_and_commits_nothing() {
    let mut server = Server::start();
    server.load(&echo_config(server.dir()));
    let before = server.snapshot();
    server.sigterm();

    let dir = server.dir().to_path_buf();
    let cases: [(&str, String, &str); 4] = [
        ("broken-syntax.conf", r#"{"listeners": "#.to_string(), "json"),
        (
            "unknown-member.json",
            json!({"listeners": {}, "routes": [], "applications": {}, "bogus_member": 1}).to_string(),
            "bogus_member",
        ),
        (
            "missing-app.json",
            json!({"listeners": {"127.0.0.1:1": {"pass": "applications/nowhere"}}, "routes": [], "applications": {}})
                .to_string(),
            "nowhere",
        ),
        ("does-not-exist.json", String::new(), "does-not-exist.json"),
    ];
    for (name, text, needle) in cases {
        let file = dir.join(name);
        if !text.is_empty() {
            fs::write(&file, text).expect("write config");
        }
        let out = server.run_to_exit(&["--config".into(), file.into()]);
        assert!(
            !out.status.success(),
            "{name}: a bad --config must fail: {out:?}"
        );
        assert!(
            out.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: stderr must name the problem ({needle:?}): {out:?}"
        );
        assert!(
            !server.sock().exists(),
            "{name}: the control socket must not be left behind"
        );
    }

    // Nothing was committed: a normal start serves the old tree.
    server.start_again();
    server.assert_unchanged(&before, "bad --config files");
}

#[test]
fn sigterm_sigint_and_sigquit_exit_0_and_remove_the_socket() {
    for signal in ["TERM", "INT", "QUIT"] {
        let mut server = Server::start();
        assert!(server.sock().exists());
        let status = server.stop_with(signal);
        assert!(
            status.success(),
            "SIG{signal}: exit status {status}\n{}",
            server.log()
        );
        assert!(
            !server.sock().exists(),
            "SIG{signal}: the socket file must be removed"
        );
    }
}

/// Serves the upload reflector on a new listener and leaves a request in flight on it:
/// its head and half its body sent (and the head read by the server), the rest held
/// back. Returns the listener's address and the client's connection.
fn request_in_flight(server: &Server) -> (String, Conn) {
    let key = listener_key();
    server.load(&json!({
        "listeners": {key.clone(): {"pass": "applications/reflector"}},
        "routes": [],
        "applications": {"reflector": example_app("upload-reflector")}
    }));
    let mut conn = Conn::open_tcp(&key).expect("connect");
    conn.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhello")
        .expect("send the first half");
    assert!(
        wait_until(
            Duration::from_secs(10),
            || server.get("/status").json()["requests"]["total"] == 1
        ),
        "the server never read the request's head\n{}",
        server.log()
    );
    (key, conn)
}

#[test]
fn sigquit_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let mut server = Server::start();
    let (key, mut in_flight) = request_in_flight(&server);

    let pid = server.pid();
    send_signal(pid, "QUIT");
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(&key)
            .is_err()),
        "the listener must close at SIGQUIT\n{}",
        server.log()
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "wharf must wait for the request in flight\n{}",
        server.log()
    );

    in_flight.send(b"world").expect("send the second half");
    let resp = in_flight.read_response().expect("the response");
    assert_eq!(resp.status, 200, "{resp}\n{}", server.log());
    assert_eq!(resp.body, "helloworld", "{resp}");
    let status = server.wait_for_exit();
    assert!(status.success(), "exit status {status}\n{}", server.log());
}

#[test]
fn sigquit_exits_at_the_drain_timeout_when_a_request_never_finishes() {
    let mut server = Server::builder().arg("--drain-timeout").arg("1").start();
    let (_key, _stuck) = request_in_flight(&server);
    let status = server.stop_with("QUIT");
    assert!(status.success(), "exit status {status}\n{}", server.log());
    assert!(
        server.log().contains("drain timeout reached"),
        "the log must say requests were cut\n{}",
        server.log()
    );
}

#[test]
fn sigterm_exits_even_with_a_client_connection_open() {
    let mut server = Server::start();
    let mut idle = server.conn();
    let resp = idle.request("GET", "/config", &[], None).expect("GET");
    assert_eq!(resp.status, 200, "{resp}");
    let mut half = server.conn();
    half.send(b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .expect("send half a request");
    // `stop_with` allows a generous bound; the server must not wait on these clients
    // forever.
    let status = server.stop_with("TERM");
    assert!(status.success(), "exit status {status}\n{}", server.log());
    assert!(!server.sock().exists(), "the socket file must be removed");
}

#[test]
fn the_control_socket_is_0600_by_default() {
    let server = Server::start();
    let mode = fs::metadata(server.sock())
        .expect("socket metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode is {mode:o}");
}

#[test]
fn control_mode_sets_the_socket_mode() {
    let server = Server::builder().arg("--control-mode").arg("0660").start();
    let mode = fs::metadata(server.sock())
        .expect("socket metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "socket mode is {mode:o}");
}

#[test]
fn the_pid_file_holds_the_pid() {
    let builder = Server::builder();
    let pid_file = builder.dir().join("wharf.pid");
    let server = builder.arg("--pid").arg(&pid_file).start();
    let want = server.pid().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || {
            fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == want)
        }),
        "pid file {} does not hold {want}: {:?}",
        pid_file.display(),
        fs::read_to_string(&pid_file)
    );
}

#[test]
fn the_log_file_receives_the_log() {
    let builder = Server::builder();
    let log = builder.dir().join("wharf.log");
    let server = builder.arg("--log").arg(&log).start();
    assert!(
        wait_until(Duration::from_secs(30), || {
            fs::read_to_string(&log).is_ok_and(|s| s.contains("controller started"))
        }),
        "--log file never said `controller started`: {:?}",
        fs::read_to_string(&log)
    );
    assert_eq!(server.config(), default_config());
}

#[test]
fn sigusr1_reopens_the_log_file_after_rotation() {
    let builder = Server::builder();
    let log = builder.dir().join("wharf.log");
    let rotated = builder.dir().join("wharf.log.1");
    let server = builder.arg("--log").arg(&log).start();
    assert!(
        wait_until(Duration::from_secs(30), || {
            fs::read_to_string(&log).is_ok_and(|s| s.contains("controller started"))
        }),
        "--log file never said `controller started`: {:?}",
        fs::read_to_string(&log)
    );
    fs::rename(&log, &rotated).expect("rotate the log");
    send_signal(server.pid(), "USR1");
    assert!(
        wait_until(Duration::from_secs(30), || log.exists()),
        "SIGUSR1 did not reopen the log at its path; the old file has:\n{:?}",
        fs::read_to_string(&rotated)
    );
    server.load(
        &json!({"listeners": {}, "routes": [{"action": {"return": 204}}], "applications": {}}),
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            fs::read_to_string(&log).is_ok_and(|s| s.contains("reconfiguration done"))
        }),
        "a line logged after SIGUSR1 must go to the new file: {:?}",
        fs::read_to_string(&log)
    );
    let old = fs::read_to_string(&rotated).expect("the rotated log");
    assert!(old.contains("controller started"), "{old}");
    assert!(!old.contains("reconfiguration done"), "{old}");
}

/// Whether this test process runs as root (CI does); the privilege tests need it.
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
    })
}

/// The effective uid of a process, from `/proc`.
fn effective_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A port below 1024 that is free now.
fn free_privileged_port() -> u16 {
    (900..1024)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below 1024")
}

const NOBODY: u32 = 65534;

#[test]
fn user_nobody_serves_as_nobody_and_still_binds_a_port_below_1024() {
    if !running_as_root() {
        eprintln!("skipped: --user needs the tests to run as root");
        return;
    }
    let builder = Server::builder().arg("--user").arg("nobody");
    let statedir = builder.dir().join("state");
    fs::create_dir_all(&statedir).expect("create the state dir");
    std::os::unix::fs::chown(builder.dir(), Some(NOBODY), Some(NOBODY)).expect("chown dir");
    std::os::unix::fs::chown(&statedir, Some(NOBODY), Some(NOBODY)).expect("chown statedir");
    let server = builder.start();
    assert_eq!(
        effective_uid(server.pid()),
        Some(NOBODY),
        "wharf must run as nobody\n{}",
        server.log()
    );
    let low = format!("127.0.0.1:{}", free_privileged_port());
    server.load(&json!({
        "listeners": {low.clone(): {"pass": "routes"}},
        "routes": [{"action": {"return": 204}}],
        "applications": {}
    }));
    let resp = Conn::open_tcp(&low)
        .expect("connect to the low port")
        .request("GET", "/", &[], None)
        .expect("GET");
    assert_eq!(resp.status, 204, "{resp}");
    // The state dir stayed usable: the change was committed there.
    assert!(
        server.log().contains("reconfiguration done"),
        "{}",
        server.log()
    );
}

#[test]
fn user_needs_root_or_names_the_running_user_and_unknown_users_are_errors() {
    let (out, _dir) = Server::builder()
        .arg("--user")
        .arg("no-such-user-wharf")
        .run_to_exit();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("there is no user `no-such-user-wharf`"),
        "{out:?}"
    );
    let (out, _dir) = Server::builder()
        .arg("--user")
        .arg("root")
        .arg("--group")
        .arg("no-such-group-wharf")
        .run_to_exit();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("there is no group `no-such-group-wharf`"),
        "{out:?}"
    );
}

#[test]
fn control_user_and_group_own_the_socket_file() {
    if !running_as_root() {
        eprintln!("skipped: giving a file to another user needs the tests to run as root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let server = Server::builder()
        .arg("--control-user")
        .arg("nobody")
        .arg("--control-group")
        .arg("nogroup")
        .start();
    let meta = fs::metadata(server.sock()).expect("the socket file");
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn unitd_legacy_state_and_modules_flags_are_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("legacy-state");
    let sock = dir.path().join("control.sock");
    let log = dir.path().join("stderr.log");
    let mut control = OsString::from("unix:");
    control.push(&sock);
    let child = Command::new(BIN)
        .args([
            OsString::from("--control"),
            control,
            "--state".into(),
            state.clone().into(),
        ])
        .args(["--modules", "/nonexistent", "--no-daemon"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn wharf");
    let _guard = KillOnDrop(child);
    assert!(
        wait_until(Duration::from_secs(60), || Conn::open(&sock).is_ok()),
        "wharf never accepted on {}:\n{}",
        sock.display(),
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        state.join("config.sled").exists(),
        "--state must be the state dir"
    );
}

/// Kills a child started by hand when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_tcp_control_address_works_and_warns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let statedir = dir.path().join("state");
    fs::create_dir_all(&statedir).expect("statedir");
    let log = dir.path().join("stderr.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let args: Vec<OsString> = vec![
        "--control".into(),
        addr.clone().into(),
        "--statedir".into(),
        statedir.into(),
        "--no-daemon".into(),
    ];
    let child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn wharf");
    let _guard = KillOnDrop(child);
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(60), || Conn::open_tcp(&addr).is_ok()),
        "wharf never accepted on {addr}:\n{}",
        read_log()
    );
    let mut conn = Conn::open_tcp(&addr).expect("connect");
    let resp = conn
        .request("GET", "/config", &[], None)
        .expect("GET over TCP");
    assert_eq!(resp.status, 200, "{resp}");
    assert_eq!(resp.json(), default_config());
    let resp = conn
        .request(
            "PUT",
            "/config/routes",
            &[],
            Some(br#"[{"action": {"return": 204}}]"#),
        )
        .expect("PUT over TCP");
    assert_done(&resp);
    assert!(
        read_log().to_lowercase().contains("warn"),
        "a TCP control socket has no authentication: the log must warn:\n{}",
        read_log()
    );
}

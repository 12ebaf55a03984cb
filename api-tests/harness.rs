//! The test harness: starts the real `wharf` binary in a private temp dir and talks
//! raw HTTP/1.1 to its control socket.
//!
//! Every [`Server`] owns its own temp dir (state dir, control socket, log files), so
//! tests run in parallel without sharing anything. The child is killed in `Drop`; if
//! the test is failing, its log is printed to stderr first. All waits are bounded and
//! generous: nothing here asserts that the server was fast.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// How long the server may take to start accepting on its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server may take to exit after a signal.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long any single socket read or write may block before the test gives up.
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The success body of every change.
pub fn reconfiguration_done() -> Value {
    json!({"success": "Reconfiguration done."})
}

/// The tree of a fresh state dir.
pub fn default_config() -> Value {
    json!({"listeners": {}, "routes": [], "applications": {}})
}

/// A `wasm` application on this module file, with the `luw_*` handler names every test
/// guest (and every example guest) exports. Applying a config compiles and starts every
/// app, so the file must exist and be a valid guest: see [`guest_file`].
pub fn wasm_app(module: &str) -> Value {
    json!({
        "type": "wasm",
        "module": module,
        "request_handler": "luw_request_handler",
        "malloc_handler": "luw_malloc_handler",
        "free_handler": "luw_free_handler"
    })
}

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released before returning,
/// so a listener built on it does not collide with other tests in practice).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A valid config: one listener (on a new free port at each call, so keep the value
/// rather than calling this twice to compare) passing to the `echo` app, whose module is
/// the minimal WAT guest written to `<dir>/echo.wasm` (see [`echo_module`]).
pub fn echo_config(dir: &Path) -> Value {
    json!({
        "listeners": {listener_key(): {"pass": "applications/echo"}},
        "routes": [],
        "applications": {"echo": wasm_app(&echo_module(dir))}
    })
}

/// Writes the minimal guest to `<dir>/echo.wasm` and returns that path: the module of
/// [`echo_config`]'s app.
pub fn echo_module(dir: &Path) -> String {
    path_str(&guest_file(dir, "echo.wasm"))
}

/// Writes the minimal guest to `<dir>/<name>` and returns a `wasm` app on it.
pub fn guest_app(dir: &Path, name: &str) -> Value {
    wasm_app(&path_str(&guest_file(dir, name)))
}

/// A path as the `&str` a config holds (temp dirs are always UTF-8 here).
pub fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_string()
}

/// A listener key on a free local port.
pub fn listener_key() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Percent-encodes one path segment (everything but unreserved characters and `:`).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One parsed HTTP response.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded lossily as UTF-8 (see `bytes` for the raw body).
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; checks the Content-Type first.
    #[track_caller]
    pub fn json(&self) -> Value {
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "expected Content-Type application/json, got {ct:?} in\n{self}"
        );
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{self}"))
    }

    /// The generation named by the `ETag: "<n>"` header.
    #[track_caller]
    pub fn etag(&self) -> u64 {
        let raw = self
            .header("etag")
            .unwrap_or_else(|| panic!("no ETag header in\n{self}"));
        let inner = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_else(|| panic!("ETag {raw:?} is not a quoted string"));
        inner
            .parse()
            .unwrap_or_else(|_| panic!("ETag {raw:?} is not a quoted generation number"))
    }

    /// The `error` member of a JSON error body.
    #[track_caller]
    pub fn error_title(&self) -> String {
        match self.json().get("error") {
            Some(Value::String(s)) => s.clone(),
            _ => panic!("no string `error` member in\n{self}"),
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {} {}", self.status, self.reason)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        writeln!(f)?;
        if self.body.len() > 4000 {
            write!(
                f,
                "{}... ({} bytes)",
                &self.body[..self.body.floor_char_boundary(4000)],
                self.body.len()
            )
        } else {
            write!(f, "{}", self.body)
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Asserts a 200 `{"success": "Reconfiguration done."}`.
#[track_caller]
pub fn assert_done(resp: &Response) {
    assert_eq!(
        resp.status, 200,
        "expected 200 Reconfiguration done, got\n{resp}"
    );
    assert_eq!(resp.json(), reconfiguration_done(), "in\n{resp}");
}

/// Asserts an error response with this status and `error` title.
#[track_caller]
pub fn assert_error(resp: &Response, status: u16, title: &str) {
    assert_eq!(
        resp.status, status,
        "expected {status} {title:?}, got\n{resp}"
    );
    assert_eq!(resp.error_title(), title, "in\n{resp}");
}

/// Builds the bytes of one request. `Content-Length` is added when there is a body.
pub fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// A Unix or TCP stream.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tcp(s) => s.set_write_timeout(timeout),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// One client connection to the control socket (keep-alive capable).
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(sock: &Path) -> io::Result<Conn> {
        Conn::with(Stream::Unix(UnixStream::connect(sock)?))
    }

    /// A connection to a TCP control address.
    pub fn open_tcp(addr: &str) -> io::Result<Conn> {
        Conn::with(Stream::Tcp(TcpStream::connect(addr)?))
    }

    /// A connection over an existing TCP stream, with bytes already read from it.
    pub fn from_tcp(stream: TcpStream, buffered: Vec<u8>) -> io::Result<Conn> {
        let mut conn = Conn::with(Stream::Tcp(stream))?;
        conn.buf = buffered;
        Ok(conn)
    }

    fn with(stream: Stream) -> io::Result<Conn> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes the connection: the server sees EOF on its read side.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.send(&request_bytes(method, path, headers, body))?;
        self.read_response()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn eof() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        )
    }

    /// Reads one whole response: status line, headers, then the body by
    /// `Transfer-Encoding: chunked`, `Content-Length`, or until the connection closes.
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            let resp = self.read_one()?;
            if (100..200).contains(&resp.status) {
                continue; // 100 Continue and friends
            }
            return Ok(resp);
        }
    }

    fn read_one(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        }
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for line in lines {
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let bytes = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked()?
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad Content-Length {len:?}"),
                )
            })?;
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(Self::eof());
                }
            }
            self.buf.drain(..len).collect()
        } else {
            while self.fill()? != 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            reason,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        })
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(Self::eof());
            }
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill()? == 0 {
                    return Err(Self::eof());
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads until the server closes the connection (or `limit` passes); returns
    /// what was read, including anything still buffered. A reset counts as a close.
    pub fn read_to_close(&mut self, limit: Duration) -> ReadToClose {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ReadToClose {
                    bytes: std::mem::take(&mut self.buf),
                    closed: false,
                };
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.min(Duration::from_secs(5))));
            match self.fill() {
                Ok(0) => {
                    return ReadToClose {
                        bytes: std::mem::take(&mut self.buf),
                        closed: true,
                    };
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    return ReadToClose {
                        bytes: std::mem::take(&mut self.buf),
                        closed: true,
                    };
                }
            }
        }
    }
}

/// What [`Conn::read_to_close`] saw.
pub struct ReadToClose {
    pub bytes: Vec<u8>,
    /// Whether the server closed (or reset) the connection before the limit.
    pub closed: bool,
}

impl ReadToClose {
    /// The status code of the first response in the bytes, if there is one.
    pub fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next()?;
        let mut parts = line.split(' ');
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        parts.next()?.parse().ok()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs the binary with exactly these arguments until it exits (bounded).
pub fn run_bin(args: &[OsString], cwd: &Path) -> Output {
    let out_path = cwd.join("run.stdout");
    let err_path = cwd.join("run.stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("spawn wharf");
    let status = wait_bounded(&mut child, START_TIMEOUT);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wharf {args:?} did not exit within {START_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
    }
}

/// The result of a run to completion.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for wharf: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal with `kill(1)` (the crate forbids `unsafe`, so no `libc::kill`).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Configures a server before starting it.
pub struct Builder {
    dir: tempfile::TempDir,
    args: Vec<OsString>,
}

impl Builder {
    /// The temp dir the server will live in (write `--config` files here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An extra argument passed on every start.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Builder {
        self.args.push(arg.into());
        self
    }

    /// Starts the server and waits until its control socket accepts connections.
    #[track_caller]
    pub fn start(self) -> Server {
        let dir = self.dir;
        let mut server = Server {
            sock: dir.path().join("control.sock"),
            statedir: dir.path().join("state"),
            dir,
            args: self.args,
            child: None,
            starts: 0,
        };
        server.start_again();
        server
    }

    /// Runs the server with the standard arguments plus the extra ones, expecting it
    /// to exit by itself (e.g. on a bad `--config`); returns its output.
    pub fn run_to_exit(self) -> (Output, tempfile::TempDir) {
        let statedir = self.dir.path().join("state");
        fs::create_dir_all(&statedir).expect("create statedir");
        let mut args = base_args(&self.dir.path().join("control.sock"), &statedir);
        args.extend(self.args);
        let out = run_bin(&args, self.dir.path());
        (out, self.dir)
    }
}

fn base_args(sock: &Path, statedir: &Path) -> Vec<OsString> {
    let mut control = OsString::from("unix:");
    control.push(sock);
    vec![
        "--control".into(),
        control,
        "--statedir".into(),
        statedir.into(),
        "--no-daemon".into(),
    ]
}

/// A running `wharf` in its own temp dir.
pub struct Server {
    dir: tempfile::TempDir,
    sock: PathBuf,
    statedir: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    starts: u32,
}

impl Server {
    /// Starts a server on a fresh state dir.
    #[track_caller]
    pub fn start() -> Server {
        Server::builder().start()
    }

    pub fn builder() -> Builder {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir()
            .expect("create temp dir");
        Builder {
            dir,
            args: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// The pid of the running child.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// Changes the extra arguments used from the next start on.
    pub fn set_args(&mut self, args: Vec<OsString>) {
        self.args = args;
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("wharf-{n}.log"))
    }

    /// Everything the server printed, over all its starts.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text = fs::read(self.log_path(n)).unwrap_or_default();
            out.push_str(&format!("----- wharf start #{n} -----\n"));
            out.push_str(&String::from_utf8_lossy(&text));
        }
        out
    }

    /// What the current (or last) start printed.
    pub fn current_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path(self.starts)).unwrap_or_default())
            .into_owned()
    }

    /// (Re)starts the child on the same state dir and waits until it is ready.
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is already running");
        fs::create_dir_all(&self.statedir).expect("create statedir");
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("create log file");
        let mut args = base_args(&self.sock, &self.statedir);
        args.extend(self.args.iter().cloned());
        let child = Command::new(BIN)
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .expect("spawn wharf");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "wharf exited with {status} before its control socket was ready\n{}",
                    self.log()
                );
            }
            if UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "wharf did not accept on {} within {START_TIMEOUT:?}\n{}",
                    self.sock.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the binary on this (stopped) server's socket and state dir with extra
    /// arguments, expecting it to exit by itself; returns its output.
    pub fn run_to_exit(&self, extra: &[OsString]) -> Output {
        assert!(self.child.is_none(), "stop the server first");
        let mut args = base_args(&self.sock, &self.statedir);
        args.extend(extra.iter().cloned());
        run_bin(&args, self.dir.path())
    }

    /// Sends `signal` and waits (bounded) for the exit.
    #[track_caller]
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        send_signal(child.id(), signal);
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wharf did not exit within {STOP_TIMEOUT:?} of SIG{signal}\n{}",
                    self.log()
                );
            }
        }
    }

    /// Waits (bounded) for an exit caused by a signal already sent.
    #[track_caller]
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        match wait_bounded(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wharf did not exit within {STOP_TIMEOUT:?}\n{}", self.log());
            }
        }
    }

    /// SIGTERM; asserts a clean exit.
    #[track_caller]
    pub fn sigterm(&mut self) {
        let status = self.stop_with("TERM");
        assert!(
            status.success(),
            "wharf exited with {status} on SIGTERM\n{}",
            self.log()
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then start again on the same state dir.
    #[track_caller]
    pub fn restart(&mut self) {
        self.sigterm();
        self.start_again();
    }

    pub fn conn(&self) -> Conn {
        Conn::open(&self.sock)
            .unwrap_or_else(|e| panic!("connect {}: {e}\n{}", self.sock.display(), self.log()))
    }

    /// One request on a fresh connection.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        Conn::open(&self.sock)?.request(method, path, headers, body)
    }

    /// One request on a fresh connection; an I/O error fails the test.
    #[track_caller]
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    #[track_caller]
    pub fn put(&self, path: &str, body: &str) -> Response {
        self.request("PUT", path, &[], Some(body.as_bytes()))
    }

    #[track_caller]
    pub fn put_json(&self, path: &str, body: &Value) -> Response {
        self.put(path, &body.to_string())
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, &[], Some(body.as_bytes()))
    }

    #[track_caller]
    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path, &body.to_string())
    }

    #[track_caller]
    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], None)
    }

    /// Writes raw bytes on a fresh connection, half-closes it, and reads until the
    /// server closes it (bounded).
    pub fn send_raw(&self, bytes: &[u8]) -> ReadToClose {
        let mut conn = self.conn();
        // The server may close early on garbage: a failed write is fine.
        if conn.send(bytes).is_ok() {
            let _ = conn.shutdown_write();
        }
        conn.read_to_close(Duration::from_secs(90))
    }

    /// `GET /config`, which must succeed.
    #[track_caller]
    pub fn config(&self) -> Value {
        let resp = self.get("/config");
        assert_eq!(resp.status, 200, "GET /config failed:\n{resp}");
        resp.json()
    }

    /// The current generation, from the ETag of `GET /config`.
    #[track_caller]
    pub fn generation(&self) -> u64 {
        let resp = self.get("/config");
        assert_eq!(resp.status, 200, "GET /config failed:\n{resp}");
        resp.etag()
    }

    /// `PUT /config` with a tree that must be accepted.
    #[track_caller]
    pub fn load(&self, config: &Value) {
        let resp = self.put_json("/config", config);
        assert_done(&resp);
    }

    /// The committed tree and generation, to compare before and after something.
    #[track_caller]
    pub fn snapshot(&self) -> (Value, u64) {
        let resp = self.get("/config");
        assert_eq!(resp.status, 200, "GET /config failed:\n{resp}");
        (resp.json(), resp.etag())
    }

    /// Asserts the server still answers and the committed tree (and generation) are
    /// what `before` recorded.
    #[track_caller]
    pub fn assert_unchanged(&self, before: &(Value, u64), what: &str) {
        let resp = self
            .try_request("GET", "/config", &[], None)
            .unwrap_or_else(|e| {
                panic!(
                    "after {what}: the server no longer answers: {e}\n{}",
                    self.log()
                )
            });
        assert_eq!(
            resp.status, 200,
            "after {what}: GET /config failed:\n{resp}"
        );
        assert_eq!(
            resp.json(),
            before.0,
            "after {what}: the committed tree changed"
        );
        assert_eq!(
            resp.etag(),
            before.1,
            "after {what}: the generation changed"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "===== wharf log ({}) =====\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Guests
// ---------------------------------------------------------------------------------------

/// Guest address of the shared buffer: what every WAT guest's `luw_malloc_handler` returns.
pub const WAT_BUFFER: u32 = 1024;

/// Where the WAT guests keep their canned response: above the end of the shared buffer
/// (1024 + 32 MiB + 64 KiB), inside their 600-page (37.5 MiB) memory, so that a request
/// written into the buffer never overwrites it.
pub const WAT_CANNED: u32 = 36_000_000;

/// What the minimal WAT guest answers every request with (`text/plain`, status 200).
pub const WAT_BODY: &str = "Hello from the WAT guest\n";

/// Offset, from the buffer, of the canned body struct once `$copy_canned` ran (the
/// canned headers struct is at offset 0).
pub const WAT_BODY_OFFSET: u32 = 64;

/// The canned response: a headers struct (`Content-Type: text/plain`; names and values
/// relative to the struct, as Unit reads them) padded to 64 bytes, then a body struct.
fn wat_canned() -> Vec<u8> {
    let (name, value) = (&b"Content-Type"[..], &b"text/plain"[..]);
    let mut out = Vec::new();
    for word in [
        1,
        20,
        name.len() as u32,
        20 + name.len() as u32,
        value.len() as u32,
    ] {
        out.extend(word.to_le_bytes());
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out.resize(WAT_BODY_OFFSET as usize, 0);
    out.extend((WAT_BODY.len() as u32).to_le_bytes());
    out.extend_from_slice(WAT_BODY.as_bytes());
    out
}

/// Bytes as a WAT string literal (every byte escaped).
pub fn wat_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for b in bytes {
        out.push_str(&format!("\\{b:02x}"));
    }
    out.push('"');
    out
}

/// A Unit-ABI guest in WebAssembly text, built from parts so that tests can make it
/// misbehave in one place. It imports all five `env` functions (`$init_mem_size`,
/// `$set_status`, `$send_headers`, `$send_response`, `$response_end`), exports `memory`
/// (600 pages), `luw_request_handler`, `luw_malloc_handler` and `luw_free_handler`, and
/// has helpers: `$copy_canned (addr)` copies the canned response into the buffer
/// (headers struct at offset 0, body struct at [`WAT_BODY_OFFSET`]), `$respond (addr)`
/// copies and sends it all (headers, body, end), `$first_call (addr) -> i32` tells the
/// first call of a request from later body chunks.
pub struct Wat {
    /// Body of `luw_request_handler (param $addr i32) (result i32)`.
    pub handler: String,
    /// Body of `luw_malloc_handler (param $size i32) (result i32)`.
    pub malloc: String,
    /// More imports (they must come before any definition).
    pub imports: String,
    /// More module fields (functions, exports, ...).
    pub extra: String,
}

impl Default for Wat {
    /// The minimal guest: checks the init mem size, answers [`WAT_BODY`] on the first
    /// call of each request, ignores later body chunks.
    fn default() -> Wat {
        Wat {
            handler: "
    (if (i32.ne (call $init_mem_size) (i32.const 33554432))
      (then (return (i32.const 1))))
    (if (call $first_call (local.get $addr))
      (then (call $respond (local.get $addr))))
    (i32.const 0)"
                .to_string(),
            malloc: format!("(i32.const {WAT_BUFFER})"),
            imports: String::new(),
            extra: String::new(),
        }
    }
}

impl Wat {
    /// The default guest with another request handler body.
    pub fn with_handler(handler: &str) -> Wat {
        Wat {
            handler: handler.to_string(),
            ..Wat::default()
        }
    }

    /// The module's text.
    pub fn render(&self) -> String {
        let canned = wat_canned();
        format!(
            r#"(module
  (import "env" "nxt_wasm_get_init_mem_size" (func $init_mem_size (result i32)))
  (import "env" "nxt_wasm_set_resp_status" (func $set_status (param i32)))
  (import "env" "nxt_wasm_send_headers" (func $send_headers (param i32)))
  (import "env" "nxt_wasm_send_response" (func $send_response (param i32)))
  (import "env" "nxt_wasm_response_end" (func $response_end))
  {imports}
  (memory (export "memory") 600)
  (data (i32.const {WAT_CANNED}) {canned_text})
  (func $copy_canned (param $addr i32)
    (memory.copy (local.get $addr) (i32.const {WAT_CANNED}) (i32.const {canned_len})))
  (func $first_call (param $addr i32) (result i32)
    (i64.eq (i64.load offset=72 (local.get $addr))
            (i64.extend_i32_u (i32.load offset=80 (local.get $addr)))))
  (func $respond (param $addr i32)
    (call $copy_canned (local.get $addr))
    (call $send_headers (i32.const 0))
    (call $send_response (i32.const {WAT_BODY_OFFSET}))
    (call $response_end))
  (func (export "luw_malloc_handler") (param $size i32) (result i32)
    {malloc})
  (func (export "luw_free_handler") (param $ptr i32))
  (func (export "luw_request_handler") (param $addr i32) (result i32)
    {handler})
  {extra}
)
"#,
            imports = self.imports,
            canned_text = wat_bytes(&canned),
            canned_len = canned.len(),
            malloc = self.malloc,
            handler = self.handler,
            extra = self.extra,
        )
    }
}

/// Writes `text` to `<dir>/<name>` (creating parent dirs) and returns the path. A file
/// that already holds exactly `text` is left alone (the server may be reading it).
pub fn write_file(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if fs::read(&path).is_ok_and(|old| old == text) {
        return path;
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Writes the minimal valid guest (WAT, which Wharf accepts as a module) to
/// `<dir>/<name>` and returns its path. See [`Wat`].
pub fn guest_file(dir: &Path, name: &str) -> PathBuf {
    write_file(dir, name, Wat::default().render().as_bytes())
}

/// The path of an example guest built from `examples/guests/<name>` by
/// `scripts/build-examples` (`hello`, `echo`, `upload-reflector`, `large-upload`), or
/// from `examples/c/<name>.c` (`hello-c`).
#[track_caller]
pub fn example_guest(name: &str) -> String {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/wasm/"))
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "the example guest {} is missing: build the examples first with \
         `scripts/build-examples` (`scripts/test` does it before `cargo test`)",
        path.display()
    );
    path_str(&path)
}

/// A `wasm` app on an example guest, with the `luw_*` handler names.
pub fn example_app(name: &str) -> Value {
    wasm_app(&example_guest(name))
}

// ---------------------------------------------------------------------------------------
// The data plane
// ---------------------------------------------------------------------------------------

/// A free TCP port on `[::1]`.
pub fn free_port_v6() -> u16 {
    let listener = std::net::TcpListener::bind("[::1]:0").expect("bind [::1]:0");
    listener.local_addr().expect("local_addr").port()
}

/// Opens a client connection to a listener given by its config key (`127.0.0.1:p`,
/// `[::1]:p`, `*:p` (reached on 127.0.0.1) or `unix:/path`).
pub fn connect_listener(key: &str) -> io::Result<Conn> {
    if let Some(path) = key.strip_prefix("unix:") {
        Conn::open(Path::new(path))
    } else if let Some(port) = key.strip_prefix("*:") {
        Conn::open_tcp(&format!("127.0.0.1:{port}"))
    } else {
        Conn::open_tcp(key)
    }
}

/// Median latency of `count` GETs on one kept-alive connection.
pub fn median_latency(key: &str, count: usize) -> Duration {
    let mut conn = connect_listener(key).expect("connect");
    let mut samples: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            let resp = conn.request("GET", "/", &[], None).expect("a response");
            assert_eq!(resp.status, 200, "{resp}");
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[count / 2]
}

/// One request to a listener on a fresh connection (`Host: localhost` is added).
pub fn fetch(
    key: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    connect_listener(key)?.request(method, target, headers, body)
}

/// `GET target` on a fresh connection to a listener; an I/O error fails the test.
#[track_caller]
pub fn get_from(key: &str, target: &str) -> Response {
    fetch(key, "GET", target, &[], None).unwrap_or_else(|e| panic!("GET {target} on {key}: {e}"))
}

/// The bytes of a request with exactly these header lines (no `Host` added); a body
/// gets a `Content-Length` after them.
pub fn raw_request(
    method: &str,
    target: &[u8],
    headers: &[(&[u8], &[u8])],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = method.as_bytes().to_vec();
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (n, v) in headers {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// Reads a response head from a raw stream: status and headers (names lowercased);
/// leaves the body.
pub fn read_head(stream: &mut impl Read) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed in the head: {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("a response head over 64 KiB"));
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad head {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Sends `head`, then `size` bytes of [`Noise`] (seed `0x5eed`) in 1 MiB pieces on
/// `stream`; returns the [`Fnv1a64`] of the bytes sent. With `limit` (a start and a
/// span), gives up with an error once the span has passed.
pub fn send_noise(
    stream: &mut impl Write,
    head: &str,
    size: u64,
    limit: Option<(Instant, Duration)>,
) -> io::Result<u64> {
    const PIECE: usize = 1 << 20;
    stream.write_all(head.as_bytes())?;
    let mut noise = Noise::new(0x5eed);
    let mut hash = Fnv1a64::default();
    let mut chunk = vec![0u8; PIECE];
    let mut sent = 0u64;
    while sent < size {
        if let Some((started, span)) = limit
            && started.elapsed() > span
        {
            return Err(io::Error::other(format!(
                "sent only {sent} bytes in {span:?}"
            )));
        }
        let piece = &mut chunk[..(size - sent).min(PIECE as u64) as usize];
        noise.fill(piece);
        hash.update(piece);
        stream.write_all(piece)?;
        sent += piece.len() as u64;
    }
    Ok(hash.0)
}

/// The resident set size of a process, from `/proc/<pid>/status` (`VmRSS`), in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// FNV-1a, 64 bits, fed piece by piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a64(pub u64);

impl Default for Fnv1a64 {
    fn default() -> Fnv1a64 {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a64::default();
        h.update(bytes);
        h.0
    }
}

/// A deterministic byte stream (xorshift64*), to send large bodies without holding them.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }

    /// Fills `buf` with the next bytes of the stream (`buf.len()` a multiple of 8).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            word.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
    }

    /// The first `len` bytes of a fresh stream with this seed.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len.next_multiple_of(8)];
        Noise::new(seed).fill(&mut buf);
        buf.truncate(len);
        buf
    }
}

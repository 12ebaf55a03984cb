//! The access log (`access_log`): one line per request, in Unit's default format or the
//! configured one, optionally only when the `if` value is true.
//!
//! Lines are rendered on the connection's task once the response is written, then handed
//! to a dedicated writer thread through a bounded queue, so a slow disk never stalls
//! request handling: when the queue is full the line is dropped and counted. The writer
//! buffers and flushes whenever the queue runs dry. A file is kept open across config
//! changes that keep its path, and `reopen` (on `SIGUSR1`) opens the path again, for
//! log rotation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::http::{Completion, Response, Sent};
use crate::routing::CompileError;
use crate::routing::request::RequestInfo;
use crate::routing::variables::{Template, Values, Var, is_true};

/// Unit's default line.
pub const DEFAULT_FORMAT: &str = "$remote_addr - - [$time_local] \"$request_line\" $status \
                                  $body_bytes_sent \"$header_referer\" \"$header_user_agent\"";

/// Lines that may wait for the writer; more are dropped.
const QUEUE: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    Reopen,
}

/// An open log file and its writer thread. The thread ends, flushing, once the last
/// handle is dropped.
pub struct LogFile {
    path: PathBuf,
    queue: Mutex<Option<SyncSender<Message>>>,
    dropped: AtomicU64,
}

impl LogFile {
    /// Opens (creating, appending) `path` and starts its writer.
    pub fn open(path: &Path) -> std::io::Result<Arc<LogFile>> {
        let file = open_append(path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("wharf-access-log".into())
            .spawn(move || write_lines(&thread_path, file, &rx))?;
        Ok(Arc::new(LogFile {
            path: path.to_owned(),
            queue: Mutex::new(Some(tx)),
            dropped: AtomicU64::new(0),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, message: Message) {
        let Ok(queue) = self.queue.lock() else {
            return;
        };
        let Some(tx) = queue.as_ref() else {
            return;
        };
        match tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        path = %self.path.display(),
                        dropped,
                        "the access log cannot keep up; lines are being dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Opens the path again (after the file was moved away for rotation).
    pub fn reopen(&self) {
        self.send(Message::Reopen);
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(path: &Path, file: File, rx: &Receiver<Message>) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let report = |e: std::io::Error| {
        tracing::error!(path = %path.display(), "writing the access log failed: {e}");
    };
    while let Ok(message) = rx.recv() {
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    if let Err(e) = out.write_all(&line) {
                        report(e);
                    }
                }
                Message::Reopen => {
                    if let Err(e) = out.flush() {
                        report(e);
                    }
                    match open_append(path) {
                        Ok(file) => {
                            out = BufWriter::with_capacity(64 * 1024, file);
                            tracing::info!(path = %path.display(), "access log reopened");
                        }
                        Err(e) => tracing::error!(
                            path = %path.display(),
                            "reopening the access log failed, writing on to the old file: {e}"
                        ),
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            report(e);
        }
    }
}

/// A compiled `access_log`.
pub struct AccessLog {
    file: Arc<LogFile>,
    format: Template,
    condition: Option<(bool, Template)>,
    /// The format or condition reads response header fields.
    reads_response_headers: bool,
}

/// Where an `access_log` writes and what, before any file is opened.
pub struct Spec {
    pub path: PathBuf,
    format: Template,
    condition: Option<(bool, Template)>,
}

impl Spec {
    /// Compiles an `access_log`: the file, the format (Unit's default when `None`) and the
    /// `if` condition (`!` negates it).
    pub fn new(
        path: &str,
        format: Option<&str>,
        condition: Option<&str>,
    ) -> Result<Spec, CompileError> {
        let format = format.unwrap_or(DEFAULT_FORMAT);
        let format = Template::parse(format)
            .map_err(|e| CompileError::new("access_log/format", e.to_string()))?;
        let condition = condition
            .map(|text| {
                let (negate, text) = match text.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, text),
                };
                Template::parse(text)
                    .map(|t| (negate, t))
                    .map_err(|e| CompileError::new("access_log/if", e.to_string()))
            })
            .transpose()?;
        Ok(Spec {
            path: PathBuf::from(path),
            format,
            condition,
        })
    }

    /// Opens the file, or keeps `previous` when it is the same path.
    pub fn open(&self, previous: Option<&AccessLog>) -> std::io::Result<AccessLog> {
        let file = match previous.map(|log| &log.file) {
            Some(file) if file.path() == self.path => Arc::clone(file),
            _ => LogFile::open(&self.path)?,
        };
        let reads_response_headers = self
            .format
            .vars()
            .chain(self.condition.iter().flat_map(|(_, t)| t.vars()))
            .any(|v| matches!(v, Var::ResponseHeader(_)));
        Ok(AccessLog {
            file,
            format: self.format.clone(),
            condition: self.condition.clone(),
            reads_response_headers,
        })
    }
}

impl AccessLog {
    pub fn file(&self) -> &Arc<LogFile> {
        &self.file
    }

    /// What to run once `response` is written, to log the request.
    pub fn completion(self: &Arc<Self>, request: RequestInfo, response: &Response) -> Completion {
        let log = Arc::clone(self);
        let headers = if self.reads_response_headers {
            response.headers.clone()
        } else {
            Vec::new()
        };
        Box::new(move |sent: &Sent| {
            let entry = Entry {
                request: &request,
                sent,
                headers: &headers,
            };
            if let Some((negate, condition)) = &log.condition {
                let value = condition.render(&entry);
                if is_true(&value) == *negate {
                    return;
                }
            }
            let mut line = Vec::with_capacity(256);
            log.format.render_into(&entry, true, &mut line);
            line.push(b'\n');
            log.file.send(Message::Line(line));
        })
    }
}

/// Variables of a finished exchange.
struct Entry<'a> {
    request: &'a RequestInfo,
    sent: &'a Sent,
    headers: &'a [(Bytes, Bytes)],
}

impl Values for Entry<'_> {
    fn write(&self, var: &Var, out: &mut Vec<u8>) -> bool {
        if let Some(found) = self.request.write_var(var, out) {
            return found;
        }
        let push = |out: &mut Vec<u8>, text: &str| out.extend_from_slice(text.as_bytes());
        match var {
            Var::Status => push(out, &format!("{:03}", self.sent.status)),
            Var::BodyBytesSent => push(out, &self.sent.body_bytes.to_string()),
            Var::ResponseContentLength => match self.sent.content_length {
                Some(n) => push(out, &n.to_string()),
                None => return false,
            },
            Var::ResponseTransferEncoding if self.sent.chunked => push(out, "chunked"),
            Var::ResponseConnection => {
                let http11 = self.request.version == crate::http::Version::Http11;
                // Unit names the connection only where it differs from the default.
                match (http11, self.sent.close) {
                    (true, true) => push(out, "close"),
                    (false, false) => push(out, "keep-alive"),
                    _ => return false,
                }
            }
            Var::ResponseHeader(name) => {
                let found = self.headers.iter().find(|(n, _)| {
                    n.len() == name.len()
                        && n.iter().zip(name.iter()).all(|(&a, &b)| {
                            let a = a.to_ascii_lowercase();
                            a == b || (a == b'-' && b == b'_')
                        })
                });
                match found {
                    Some((_, value)) => out.extend_from_slice(value),
                    None => return false,
                }
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Request, RequestBody, ResponseBody, Target, Version};

    fn request() -> RequestInfo {
        let target = Target::parse(Bytes::from_static(b"/a?b=c")).expect("valid");
        RequestInfo::new(Request::new(
            Bytes::from_static(b"GET"),
            target,
            Version::Http11,
            vec![(
                Bytes::from_static(b"User-Agent"),
                Bytes::from_static(b"t/1"),
            )],
            Some("192.0.2.1:4000".parse().expect("address")),
            None,
            RequestBody::empty(),
        ))
    }

    fn wait_for(path: &Path, want: usize) -> String {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= want {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn default_and_custom_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let format = "$status $response_header_x_a $header_referer $uri";
        let spec =
            Spec::new(&path.to_string_lossy(), Some(format), Some("!$arg_skip")).expect("valid");
        let log = Arc::new(spec.open(None).expect("opens"));
        let response = Response {
            status: 200,
            headers: vec![(Bytes::from_static(b"X-A"), Bytes::from_static(b"v"))],
            body: ResponseBody::Empty,
        };
        let sent = Sent {
            status: 200,
            ..Sent::default()
        };
        (log.completion(request(), &response))(&sent);
        let text = wait_for(&path, 1);
        assert_eq!(text, "200 v - /a\n");

        let default = Spec::new(&path.to_string_lossy(), None, None)
            .expect("valid")
            .open(Some(&log))
            .expect("opens");
        assert!(Arc::ptr_eq(default.file(), log.file()));
        let line = {
            let mut out = Vec::new();
            default.format.render_into(
                &Entry {
                    request: &request(),
                    sent: &Sent {
                        status: 404,
                        body_bytes: 12,
                        ..Sent::default()
                    },
                    headers: &[],
                },
                true,
                &mut out,
            );
            String::from_utf8(out).expect("utf-8")
        };
        assert!(line.starts_with("192.0.2.1 - - ["), "{line}");
        assert!(
            line.ends_with("] \"GET /a?b=c HTTP/1.1\" 404 12 \"-\" \"t/1\""),
            "{line}"
        );
    }

    #[test]
    fn invalid_templates_are_refused() {
        let error = Spec::new("/x", Some("$nope"), None).err().expect("refused");
        assert_eq!(
            error.to_string(),
            "access_log/format: unknown variable \"nope\""
        );
    }
}

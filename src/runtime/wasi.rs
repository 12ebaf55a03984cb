//! What both guest types get from WASI: the context builder (the configured environment
//! and nothing else, the configured preopens, stdout and stderr to the log).
//!
//! A guest's stdout and stderr are written to Wharf's log line by line, each line tagged
//! with the app's name and the stream, so that what a guest prints ends up where
//! operators look, honouring `--log`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A host directory the guest sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub readonly: bool,
}

/// A WASI context for one of `app`'s instances: the app's environment and preopens
/// only, stdout and stderr to the log. Fails if a preopened directory cannot be opened.
pub fn context(
    app: &Arc<str>,
    environment: &[(String, String)],
    preopens: &[Preopen],
) -> anyhow::Result<WasiCtxBuilder> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(environment)
        .stdout(GuestLog::new(Arc::clone(app), "stdout"))
        .stderr(GuestLog::new(Arc::clone(app), "stderr"));
    for dir in preopens {
        let perms = if dir.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to open the directory `{}`", dir.host.display()))?;
    }
    Ok(wasi)
}

/// Longest line kept before it is logged anyway, so a guest cannot grow the buffer
/// without bound by never writing a newline.
const MAX_LINE: usize = 16 * 1024;

/// One of a guest's output streams.
struct GuestLog {
    app: Arc<str>,
    stream: &'static str,
}

impl GuestLog {
    fn new(app: Arc<str>, stream: &'static str) -> Self {
        Self { app, stream }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            app: Arc::clone(&self.app),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

/// Gathers bytes into lines and logs each complete one.
struct LineWriter {
    app: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        // The tags in a span, so the line ends with what the guest wrote.
        tracing::info_span!("guest", app = %self.app, stream = self.stream)
            .in_scope(|| tracing::info!("{text}"));
        self.line.clear();
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..=end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() >= MAX_LINE {
            self.emit();
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

//! The `--log` file: appended to by every thread, and reopened on `SIGUSR1` so that a
//! log rotator can move it aside and have Wharf write to a new file at the same path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

/// The log file at its path; lines go to the file most recently opened there.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: ArcSwap<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = open_for_append(path)
            .with_context(|| format!("failed to open the log file `{}`", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: ArcSwap::from_pointee(file),
        })
    }

    /// Opens the path again; lines already being written finish in the old file. On
    /// failure the old file stays in use, so nothing is lost.
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_for_append(&self.path)?;
        self.file.store(Arc::new(file));
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer for one log event (`tracing_subscriber`'s `MakeWriter`).
    pub fn writer(&self) -> LogWriter {
        LogWriter(self.file.load_full())
    }
}

fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes to the file that was current when it was made.
pub struct LogWriter(Arc<File>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_log_writes_to_the_new_file_at_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wharf.log");
        let log = LogFile::open(&path).expect("open");
        log.writer().write_all(b"one\n").expect("write");
        let rotated = dir.path().join("wharf.log.1");
        std::fs::rename(&path, &rotated).expect("rotate");
        log.writer().write_all(b"two\n").expect("write");
        log.reopen().expect("reopen");
        log.writer().write_all(b"three\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(&rotated).expect("read"),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "three\n");
    }
}

//! Unix socket files shared by the control socket and `unix:` listeners.

use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context as _, bail};

/// A socket file left by a server that died is removed; a live one is an error, and so
/// is any other kind of file.
pub fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        bail!("`{}` exists and is not a socket", path.display());
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another server is already listening on `{}`",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("failed to remove the stale socket `{}`", path.display()))
}

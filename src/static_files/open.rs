//! Opening the file a share names, confined as Unit confines it: under `chroot` with
//! `openat2(2)` and `RESOLVE_IN_ROOT` (`..` and absolute symlinks stay inside it), no
//! symbolic link anywhere on the path with `follow_symlinks: false`
//! (`RESOLVE_NO_SYMLINKS`), no mount point crossed with `traverse_mounts: false`
//! (`RESOLVE_NO_XDEV`). The kernel does the walk, so nothing can swap a component
//! between a check and the open. Errors map to statuses as in `nxt_http_static.c`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// How the path may be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolve {
    pub follow_symlinks: bool,
    pub traverse_mounts: bool,
}

impl Default for Resolve {
    /// Unit's defaults: both allowed.
    fn default() -> Self {
        Self {
            follow_symlinks: true,
            traverse_mounts: true,
        }
    }
}

/// Why no file was opened.
#[derive(Debug)]
pub struct OpenError {
    /// 404, 403, or 500.
    pub status: u16,
    pub error: io::Error,
}

impl OpenError {
    fn from_io(error: io::Error) -> Self {
        let status = match error.raw_os_error() {
            Some(
                libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ENXIO | libc::EINVAL,
            ) => 404,
            Some(libc::EACCES | libc::EPERM | libc::ELOOP | libc::EXDEV) => 403,
            _ => 500,
        };
        Self { status, error }
    }
}

/// Whether this kernel has `openat2(2)` (Linux 5.6): `chroot`, `follow_symlinks` and
/// `traverse_mounts` need it, and a config using them is refused without it.
pub fn confinement_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| match openat2(libc::AT_FDCWD, c"/", O_DIR, 0) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::ENOSYS),
    })
}

/// Flags of the file opened: never a controlling terminal, and never waiting on a FIFO
/// (which is then refused as not a regular file).
const O_FILE: i32 = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
const O_DIR: i32 = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;

/// Opens `path` for reading, confined to `chroot` (a directory) and by `resolve`.
pub fn open(path: &[u8], chroot: Option<&[u8]>, resolve: Resolve) -> Result<File, OpenError> {
    let not_found = || OpenError {
        status: 404,
        error: io::Error::from_raw_os_error(libc::ENOENT),
    };
    let mut flags = 0;
    if !resolve.follow_symlinks {
        flags |= libc::RESOLVE_NO_SYMLINKS;
    }
    if !resolve.traverse_mounts {
        flags |= libc::RESOLVE_NO_XDEV;
    }
    let chroot = chroot.filter(|root| !root.is_empty());
    if flags == 0 && chroot.is_none() {
        let name = CString::new(path).map_err(|_| not_found())?;
        return open_plain(&name).map_err(OpenError::from_io);
    }
    let (dir, name) = match chroot {
        Some(root) => {
            // A share outside the chroot is refused before anything is opened.
            let Some(inside) = chroot_match(root, path) else {
                return Err(OpenError {
                    status: 403,
                    error: io::Error::from_raw_os_error(libc::EACCES),
                });
            };
            flags |= libc::RESOLVE_IN_ROOT;
            let root = CString::new(root).map_err(|_| not_found())?;
            let dir = openat2(libc::AT_FDCWD, &root, O_DIR, 0).map_err(OpenError::from_io)?;
            (Some(dir), inside)
        }
        None if path.first() == Some(&b'/') => {
            let dir = openat2(libc::AT_FDCWD, c"/", O_DIR, 0).map_err(OpenError::from_io)?;
            (Some(dir), path)
        }
        None => (None, path),
    };
    let name = CString::new(name).map_err(|_| not_found())?;
    let at = dir
        .as_ref()
        .map_or(libc::AT_FDCWD, std::os::fd::AsRawFd::as_raw_fd);
    openat2(at, &name, O_FILE, flags)
        .map(File::from)
        .map_err(OpenError::from_io)
}

fn open_plain(name: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: `name` is a valid C string; the descriptor returned is owned here.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::open(name.as_ptr(), O_FILE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor nothing else owns.
    #[allow(unsafe_code)]
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn openat2(dir: i32, name: &std::ffi::CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let mut how: libc::open_how = open_how();
    how.flags = u64::try_from(flags).unwrap_or_default();
    how.resolve = resolve;
    loop {
        // SAFETY: `name` is a valid C string, `how` a valid `open_how` whose size is
        // passed with it; the descriptor returned is owned here.
        #[allow(unsafe_code)]
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                name.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
            // SAFETY: as above.
            #[allow(unsafe_code)]
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the walk (`RESOLVE_IN_ROOT`); try again.
        if !matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(error);
        }
    }
}

fn open_how() -> libc::open_how {
    // SAFETY: `open_how` is a plain struct of integers, valid when zeroed.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed()
    }
}

/// Unit's `nxt_http_static_chroot_match`: the part of `share` below `chroot`, or `None`
/// when `share` does not lie under it (repeated slashes count as one; the rest must be
/// non-empty).
pub fn chroot_match<'a>(chroot: &[u8], share: &'a [u8]) -> Option<&'a [u8]> {
    let (mut c, mut s) = (0, 0);
    if chroot.first()? != share.first()? {
        return None;
    }
    c += 1;
    s += 1;
    loop {
        let sc = *share.get(s)?;
        let cc = chroot.get(c).copied();
        if cc == Some(sc) {
            c += 1;
            s += 1;
            continue;
        }
        match cc {
            None => break,
            Some(b'/') if chroot[c - 1] == b'/' => c += 1,
            Some(b'/') => return None,
            Some(_) if sc == b'/' && share[s - 1] == b'/' => s += 1,
            Some(_) => return None,
        }
    }
    if share[s - 1] != b'/' && share[s] != b'/' {
        return None;
    }
    while share.get(s) == Some(&b'/') {
        s += 1;
    }
    (s < share.len()).then(|| &share[s..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_prefixes() {
        let m = |c: &str, s: &str| chroot_match(c.as_bytes(), s.as_bytes()).map(<[u8]>::to_vec);
        assert_eq!(m("/srv/www", "/srv/www/a/b"), Some(b"a/b".to_vec()));
        assert_eq!(m("/srv/www/", "/srv/www/a"), Some(b"a".to_vec()));
        assert_eq!(m("/srv//www", "/srv/www//a"), Some(b"a".to_vec()));
        assert_eq!(m("/srv/www", "/srv/wwwx/a"), None);
        assert_eq!(m("/srv/www", "/srv/www"), None);
        assert_eq!(m("/srv/www", "/srv/www/"), None);
        assert_eq!(m("/srv/www", "/etc/passwd"), None);
        assert_eq!(m("/srv/www", "srv/www/a"), None);
    }

    #[test]
    fn confined_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("a.txt"), b"a").expect("write");
        std::fs::write(dir.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink("a.txt", root.join("link")).expect("symlink");
        std::os::unix::fs::symlink("../secret", root.join("out")).expect("symlink");
        let root_bytes = root.to_str().expect("utf-8").as_bytes().to_vec();
        let path = |name: &str| [&root_bytes[..], b"/", name.as_bytes()].concat();
        let jail = Some(&root_bytes[..]);
        let default = Resolve::default();
        assert!(open(&path("a.txt"), jail, default).is_ok());
        assert!(open(&path("link"), jail, default).is_ok());
        // `..` in a symlink stays inside the root, where there is no `secret`.
        assert_eq!(
            open(&path("out"), jail, default)
                .map(drop)
                .expect_err("refused")
                .status,
            404
        );
        assert_eq!(
            open(&path("../secret"), jail, default)
                .map(drop)
                .expect_err("refused")
                .status,
            404
        );
        let strict = Resolve {
            follow_symlinks: false,
            traverse_mounts: true,
        };
        assert_eq!(
            open(&path("link"), jail, strict)
                .map(drop)
                .expect_err("refused")
                .status,
            403
        );
        assert_eq!(
            open(&path("link"), None, strict)
                .map(drop)
                .expect_err("refused")
                .status,
            403
        );
        assert_eq!(
            open(b"/etc/hostname", jail, default)
                .map(drop)
                .expect_err("refused")
                .status,
            403
        );
        assert_eq!(
            open(b"/a\0b", None, default)
                .map(drop)
                .expect_err("refused")
                .status,
            404
        );
    }
}

//! Running unprivileged: `--user` and `--group` (the identity Wharf drops to after
//! starting as root, as `unitd` runs its application processes), and the owner of the
//! control socket (`--control-user`, `--control-group`).
//!
//! The drop happens once, on the main thread, before any other thread exists: Linux
//! keeps credentials and capabilities per thread, and threads started later inherit the
//! main thread's. Of root's capabilities only `CAP_NET_BIND_SERVICE` is kept, so that a
//! listener on a port below 1024 added later by the control API still binds; nothing
//! else a root process could do survives.

use std::ffi::{CStr, CString};

use anyhow::{Context as _, bail};

/// A user and group from the system's databases.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    /// `user` and, if given, `group`; without one, the user's primary group (as Unit).
    pub fn resolve(user: &str, group: Option<&str>) -> anyhow::Result<Self> {
        let (uid, primary_gid) = user_ids(user)?;
        let gid = match group {
            Some(group) => group_id(group)?,
            None => primary_gid,
        };
        Ok(Self {
            user: user.to_owned(),
            uid,
            gid,
        })
    }
}

/// The uid and primary gid of `name`.
pub fn user_ids(name: &str) -> anyhow::Result<(u32, u32)> {
    // SAFETY: `passwd` is a C struct of integers and pointers.
    #[allow(unsafe_code)]
    let entry = unsafe { lookup("user", name, 16 * 1024, libc::getpwnam_r) }?;
    Ok((entry.pw_uid, entry.pw_gid))
}

/// The gid of the group `name`.
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    // SAFETY: `group` is a C struct of integers and pointers.
    #[allow(unsafe_code)]
    let entry = unsafe { lookup("group", name, 64 * 1024, libc::getgrnam_r) }?;
    Ok(entry.gr_gid)
}

/// The signature of `getpwnam_r` and `getgrnam_r`: name, entry, buffer, its length, and
/// where to say whether the entry was found.
type Reentrant<E> = unsafe extern "C" fn(
    *const libc::c_char,
    *mut E,
    *mut libc::c_char,
    usize,
    *mut *mut E,
) -> libc::c_int;

/// Looks `name` up with one of the reentrant NSS calls. The entry's numeric fields are
/// read by the callers; its pointers (into `buffer`) are never used after return.
///
/// # Safety
///
/// `E` must be the C struct `call` fills, for which all-zero bytes are a valid value.
#[allow(unsafe_code)]
unsafe fn lookup<E>(
    kind: &str,
    name: &str,
    buffer_len: usize,
    call: Reentrant<E>,
) -> anyhow::Result<E> {
    let c_name = CString::new(name).with_context(|| format!("`{name}` is not a {kind} name"))?;
    let mut buffer = vec![0u8; buffer_len];
    // SAFETY: all zeroes is a valid `E` (the caller's promise); the call overwrites it.
    let mut entry: E = unsafe { std::mem::zeroed() };
    let mut found: *mut E = std::ptr::null_mut();
    // SAFETY: the pointers are valid for the call: the NUL-terminated name, the
    // entry, the buffer with its true length, and `found`, set to `&entry` or to null.
    let status = unsafe {
        call(
            c_name.as_ptr(),
            &raw mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &raw mut found,
        )
    };
    if status != 0 {
        let error = std::io::Error::from_raw_os_error(status);
        return Err(error).with_context(|| format!("failed to look up the {kind} `{name}`"));
    }
    if found.is_null() {
        bail!("there is no {kind} `{name}`");
    }
    Ok(entry)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

fn check(status: libc::c_int, what: &str) -> anyhow::Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()).with_context(|| format!("{what} failed"))
    }
}

/// Becomes `identity` (its supplementary groups included), keeping only
/// `CAP_NET_BIND_SERVICE`. Must run before any other thread is started. Started as
/// that user already, it changes nothing; as any other non-root user it is an error.
pub fn drop_to(identity: &Identity) -> anyhow::Result<()> {
    let euid = effective_uid();
    if euid != 0 {
        if euid == identity.uid {
            return Ok(());
        }
        bail!(
            "--user {} needs Wharf to be started as root (it runs as uid {euid})",
            identity.user
        );
    }
    let c_user = CString::new(identity.user.as_str()).context("a user name with NUL")?;
    drop_with(&c_user, identity)
        .with_context(|| format!("failed to switch to the user `{}`", identity.user))
}

fn drop_with(c_user: &CStr, identity: &Identity) -> anyhow::Result<()> {
    // SAFETY: plain integer arguments, or a valid NUL-terminated name; these calls act
    // on this (so far the only) thread's credentials.
    #[allow(unsafe_code)]
    unsafe {
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "PR_SET_KEEPCAPS",
        )?;
        check(
            libc::initgroups(c_user.as_ptr(), identity.gid),
            "initgroups",
        )?;
        check(libc::setgid(identity.gid), "setgid")?;
        check(libc::setuid(identity.uid), "setuid")?;
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "PR_SET_KEEPCAPS",
        )?;
    }
    keep_only_net_bind_service()?;
    // Root must be gone for good: a process that can become uid 0 again has not
    // dropped anything.
    // SAFETY: plain integer argument.
    #[allow(unsafe_code)]
    let regained = unsafe { libc::setuid(0) } == 0;
    if regained {
        bail!("uid 0 could be regained after the switch");
    }
    Ok(())
}

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapabilityData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_BIND_SERVICE: u32 = 10;

fn keep_only_net_bind_service() -> anyhow::Result<()> {
    let header = CapabilityHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let bit = 1 << CAP_NET_BIND_SERVICE;
    // Version 3 takes two 32-bit words per set; the capability is in the first.
    let data = [
        CapabilityData {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        },
        CapabilityData::default(),
    ];
    // SAFETY: capset reads a version-3 header and two data structs, both valid for the
    // call; pid 0 is this thread.
    #[allow(unsafe_code)]
    let status = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if status != 0 {
        return Err(std::io::Error::last_os_error()).context("capset(CAP_NET_BIND_SERVICE)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_its_group_resolve_and_unknown_names_are_errors() {
        let root = Identity::resolve("root", None).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        let error = Identity::resolve("no-such-user-wharf", None).expect_err("unknown user");
        assert!(
            format!("{error:#}").contains("no user `no-such-user-wharf`"),
            "{error:#}"
        );
        let error = group_id("no-such-group-wharf").expect_err("unknown group");
        assert!(
            format!("{error:#}").contains("no group `no-such-group-wharf`"),
            "{error:#}"
        );
        assert_eq!(group_id("root").expect("group root"), 0);
    }
}

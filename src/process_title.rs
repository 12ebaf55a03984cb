//! How the main process presents itself to Unit's tools, so that they find a running
//! Wharf and its control socket as they find a `unitd`.
//!
//! `unitctl` (Unit's CLI) looks for a process named `unitd` whose title is Unit's main
//! process title, `unit: main v1.35.0 [<argv0> <flags>]` (`nxt_main_process_title`),
//! takes the control socket from the title's `--control`, and reads the `unit version:`
//! and `configured as ./configure ...` lines that `unitd --version` prints on stderr.
//! This module builds that title and those lines, and sets the title as nginx and unitd
//! do on Linux: over the memory that holds `argv` and the environment, after moving the
//! environment's strings to the heap.

use std::ffi::{CStr, CString, OsString};
use std::io;

/// The Unit release whose control API and command line Wharf follows.
pub const UNIT_VERSION: &str = "1.35.0";

/// The name Unit's tools look for (`UNITD_BINARY_NAMES` in unitctl).
const PROCESS_NAME: &CStr = c"unitd";

/// Unit's main process title for a server started as `argv0` whose effective flags are
/// `flags` (each flag and its value as separate words).
pub fn title(argv0: &str, flags: &[String]) -> String {
    let mut title = format!("unit: main v{UNIT_VERSION} [{argv0}");
    for word in flags {
        title.push(' ');
        title.push_str(word);
    }
    title.push(']');
    title
}

/// The lines `unitd --version` prints on stderr, in the form Unit's tools parse:
/// `defaults` are the built-in defaults as `./configure` options (`--name=value`).
pub fn version_lines(defaults: &[(&str, String)]) -> String {
    let mut configure = String::from("./configure");
    for (name, value) in defaults {
        configure.push_str(&format!(" --{name}={value}"));
    }
    format!("unit version: {UNIT_VERSION}\nconfigured as {configure}\n")
}

/// The command-line arguments without the options in `dropped` (long names, without
/// `--`) and their values, in both the `--name value` and `--name=value` forms; the
/// title lists those options with their effective values instead.
pub fn without_options(args: &[OsString], dropped: &[&str]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut args = args.iter().map(|arg| arg.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let name = arg
            .strip_prefix("--")
            .map(|rest| match rest.split_once('=') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            });
        match name {
            Some((name, inline_value)) if dropped.contains(&name) => {
                if !inline_value {
                    args.next();
                }
            }
            _ => kept.push(arg),
        }
    }
    kept
}

/// Renames the process to `unitd` and makes `title` what `ps` and `/proc/PID/cmdline`
/// show, truncated to the space the original command line and environment took.
///
/// Must run before any other thread exists: it rewrites `environ`, which threads read
/// without a lock. After it, `std::env::args` no longer returns the command line.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set(title: &str) -> io::Result<()> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, PROCESS_NAME.as_ptr(), 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let area = ArgumentArea::of_this_process()?;
    // SAFETY: no other thread runs (the caller's contract), so nothing reads `environ`
    // while its pointers move to heap copies of the same strings, which are leaked so
    // they stay valid for the life of the process.
    unsafe { area.move_environment_out() };
    let bytes = title.as_bytes();
    let len = bytes.len().min(area.len() - 1);
    // SAFETY: the area is this process's own argv and environment strings, mapped
    // writable on its stack; nothing points into it any more but the argv array, which
    // only `std::env::args` reads.
    unsafe {
        let start = area.start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), start, len);
        std::ptr::write_bytes(start.add(len), 0, area.len() - len);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn set(_title: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "setting the process title is only implemented on Linux",
    ))
}

/// The memory from the first `argv` string to the end of the last environment string,
/// where the kernel put them and reads `/proc/PID/cmdline` from.
#[cfg(target_os = "linux")]
struct ArgumentArea {
    start: usize,
    end: usize,
}

#[cfg(target_os = "linux")]
impl ArgumentArea {
    fn of_this_process() -> io::Result<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        Self::from_stat(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "/proc/self/stat has no usable argument and environment bounds",
            )
        })
    }

    /// Fields 48 to 51 of `/proc/PID/stat` (proc(5)): `arg_start`, `arg_end`,
    /// `env_start`, `env_end`. The command name before them may hold spaces, so fields
    /// are counted from the last `)`.
    fn from_stat(stat: &str) -> Option<Self> {
        let (_, after_name) = stat.rsplit_once(')')?;
        let fields: Vec<usize> = after_name
            .split_ascii_whitespace()
            .skip(45)
            .take(4)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [arg_start, arg_end, env_start, env_end] = fields[..] else {
            return None;
        };
        // The title may run on into the environment's space only where it follows the
        // arguments directly, as the kernel lays them out.
        let end = if env_start == arg_end {
            env_end
        } else {
            arg_end
        };
        (arg_start < end).then_some(Self {
            start: arg_start,
            end,
        })
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Points every `environ` entry that lies in the area at a heap copy of its string.
    #[allow(unsafe_code)]
    unsafe fn move_environment_out(&self) {
        // SAFETY (caller): single-threaded; `environ` is a NULL-terminated array.
        unsafe {
            let mut entry = libc::environ;
            if entry.is_null() {
                return;
            }
            while !(*entry).is_null() {
                let at = *entry as usize;
                if (self.start..self.end).contains(&at) {
                    let copy = CString::from(CStr::from_ptr(*entry));
                    *entry = copy.into_raw();
                }
                entry = entry.add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_is_units_main_process_title() {
        let flags = ["--control", "unix:/run/wharf.sock", "--log", "/var/log/w"];
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            title("/usr/bin/wharf", &flags),
            "unit: main v1.35.0 [/usr/bin/wharf --control unix:/run/wharf.sock --log /var/log/w]"
        );
        assert_eq!(title("wharf", &[]), "unit: main v1.35.0 [wharf]");
    }

    #[test]
    fn version_lines_are_the_ones_unitctl_parses() {
        let lines = version_lines(&[("statedir", "wharf-state".into())]);
        assert_eq!(
            lines,
            "unit version: 1.35.0\nconfigured as ./configure --statedir=wharf-state\n"
        );
    }

    #[test]
    fn dropped_options_go_in_both_forms_with_their_values() {
        let args: Vec<OsString> = [
            "--control",
            "unix:a.sock",
            "--log",
            "l",
            "--statedir=s",
            "--no-daemon",
            "--state",
            "t",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            without_options(&args, &["control", "statedir", "state"]),
            ["--log", "l", "--no-daemon"]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_area_is_read_from_the_stat_fields_after_the_command_name() {
        // pid (comm) then fields 3..=52; the name holds a space and a `)`.
        let mut stat = String::from("42 (a b) c) S");
        for field in 4..=52 {
            stat.push_str(&format!(" {field}"));
        }
        let area = ArgumentArea::from_stat(&stat).expect("bounds");
        assert_eq!((area.start, area.end), (48, 49));
        let mut contiguous = String::from("42 (w) S");
        for field in 4..=52 {
            let value = match field {
                48 => 1000,
                49 | 50 => 1100,
                51 => 1500,
                other => other,
            };
            contiguous.push_str(&format!(" {value}"));
        }
        let area = ArgumentArea::from_stat(&contiguous).expect("bounds");
        assert_eq!((area.start, area.end), (1000, 1500));
        assert!(ArgumentArea::from_stat("42 (w) S 1 2").is_none());
    }

    #[test]
    fn the_process_name_fits_the_kernels_sixteen_bytes() {
        assert!(PROCESS_NAME.to_bytes_with_nul().len() <= 16);
    }
}

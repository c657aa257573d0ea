//! Access to the container from outside: the built-in `sshd` node (authorized keys, host keys,
//! root's password, a generated sshd_config, then OpenSSH itself) and the `tailscale` node
//! (tailscaled, logged in through its LocalAPI).
//!
//! This code runs in the nodes' child processes (`nix2gpu-init builtin NAME SETTINGS`), never
//! in PID 1. Its messages are plain lines on stderr: the init frames them as `sshd | ...`.

pub mod authorized_keys;
mod files;
mod host_keys;
mod password;
pub mod sshd;
mod sshd_config;
pub mod tailscale;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Prints a warning of a built-in node (framed by the init as `NAME | warning: ...`).
fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// Prints an informational line of a built-in node.
fn note(message: impl std::fmt::Display) {
    eprintln!("{message}");
}

/// The absolute path of the executable `program` names: itself (made absolute) when it
/// contains a slash, else the first executable file of that name in `path` (a PATH value).
/// OpenSSH's sshd re-executes itself for every connection and insists on an absolute path, so
/// nothing may be left to `execvp`.
pub fn find_program(program: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        return std::path::absolute(program).ok();
    }
    let path = path?;
    std::env::split_paths(path).filter(|dir| dir.is_absolute()).map(|dir| dir.join(program)).find(
        |candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        },
    )
}

/// A program that lives beside `sibling` (an OpenSSH tool next to the configured sshd, as in a
/// Nix store path), else found on `path`.
fn find_beside(program: &str, sibling: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    let beside = sibling.parent().map(|dir| dir.join(program));
    beside.filter(|p| p.is_file()).or_else(|| find_program(program, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_and_paths_are_kept() {
        let found = find_program("sh", Some(OsStr::new("relative:/nonexistent:/bin:/usr/bin")));
        assert!(found.is_some_and(|p| p.is_absolute() && p.ends_with("sh")));
        assert_eq!(find_program("/opt/x/sshd", None), Some(PathBuf::from("/opt/x/sshd")));
        let relative = find_program("x/sshd", None).unwrap();
        assert_eq!(relative, std::env::current_dir().unwrap().join("x/sshd"));
        assert_eq!(find_program("no-such-program-here", Some(OsStr::new("/bin:/usr/bin"))), None);
        assert_eq!(find_program("sh", None), None);
        // A directory of that name is not a program.
        assert_eq!(find_program("tmp", Some(OsStr::new("/"))), None);
    }
}

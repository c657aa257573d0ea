//! Descriptors the init inherited beyond stdin, stdout and stderr (a runtime's
//! `--preserve-fds`, a socket-activation manager, a careless parent): they go to the main
//! process, as tini passes them on, and to nothing else. Services, probes and built-in nodes
//! start with descriptors 0, 1 and 2 only; every descriptor the init opens itself is
//! close-on-exec from the start.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The inherited descriptors, marked close-on-exec at boot.
static INHERITED: OnceLock<Vec<RawFd>> = OnceLock::new();

/// Marks every inherited descriptor above 2 close-on-exec and remembers them for the main
/// process; returns them. Must run first, before the init opens anything of its own (which
/// would otherwise be taken for inherited). Without /proc nothing is known and nothing marked.
pub fn hold_for_main() -> Result<&'static [RawFd], String> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("cannot list inherited descriptors in /proc/self/fd: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The listing's own descriptor is in the list and closed by now: marking it fails.
    let inherited = listed.into_iter().filter(|fd| set_close_on_exec(*fd, true).is_ok()).collect();
    Ok(INHERITED.get_or_init(|| inherited))
}

/// The descriptors [`hold_for_main`] found (none before it ran).
pub fn descriptors() -> &'static [RawFd] {
    INHERITED.get().map(Vec::as_slice).unwrap_or_default()
}

/// Raw fcntl(2): the descriptor may be closed (EBADF), which rules out a `BorrowedFd`.
fn set_close_on_exec(fd: RawFd, on: bool) -> io::Result<()> {
    let flag = if on { nix::libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD takes an int and touches no memory of ours.
    match unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, flag) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

//! The one reaper: after SIGCHLD, `waitpid(-1, WNOHANG)` until nothing is left to collect.
//!
//! Every exit status in the process goes through here and is handed to its owner by pid, which
//! is why nothing else may wait for children (in particular not `tokio::process`, whose own
//! waiting races this loop: see crates.md).

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::exit_code;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// How a process ended, as the logs say it: `exited with code 1`, `killed by SIGTERM`.
impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with code {code}"),
            Self::Signal(signo) => write!(f, "killed by {}", super::signals::name(*signo)),
        }
    }
}

impl ExitStatus {
    /// The code a shell would report for it: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signo) => exit_code::for_signal(signo),
        }
    }
}

/// The result of one round of reaping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Every child collected in this round, in the order the kernel returned them.
    pub exited: Vec<(Pid, ExitStatus)>,
    /// Whether the init still has children (live or not yet collected).
    pub children_left: bool,
}

/// Collects every child that has ended, without blocking.
pub fn reap() -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => reaped.exited.push((pid, ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, signal, _core)) => {
                reaped.exited.push((pid, ExitStatus::Signal(signal as i32)));
            }
            Ok(WaitStatus::StillAlive) => {
                reaped.children_left = true;
                return reaped;
            }
            // Stops and continues are not asked for (no WUNTRACED/WCONTINUED); skip if seen.
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: no children at all. Anything else cannot happen with these arguments.
            Err(_) => return reaped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_names_the_code_or_the_signal() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exited with code 3");
        assert_eq!(ExitStatus::Signal(15).to_string(), "killed by SIGTERM");
        assert_eq!(ExitStatus::Signal(64).to_string(), "killed by signal 64");
        assert_eq!(ExitStatus::Signal(9).code(), 137);
    }
}

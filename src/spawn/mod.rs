//! Process creation: std `Command` plus what must happen between fork and exec.
//!
//! `tokio::process` is not used: its own waiting races the init's single reaper (crates.md
//! §1.4). The child's setup runs in `pre_exec`, after std's own steps, in this order: its own
//! process group, the terminal's foreground (when asked), then an empty signal mask (the init
//! blocks the signals it reads through its signalfd, and a mask survives exec).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::unistd::{Pid, getpgrp, setpgid, tcsetpgrp};

use crate::exit_code;
use crate::pid1::signals;

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [OsString],
    pub env: &'a BTreeMap<OsString, OsString>,
    /// Hand the terminal on stdin to the child's process group (interactive main process).
    pub foreground: bool,
}

/// Why a program could not be started.
#[derive(Debug)]
pub struct SpawnError {
    pub program: String,
    pub error: io::Error,
    /// PATH as the child would have searched it, for the "not found" message.
    pub path_var: Option<String>,
}

impl SpawnError {
    /// 127 when the program (or its interpreter) does not exist, 126 when it cannot be executed.
    pub fn exit_code(&self) -> i32 {
        match self.error.raw_os_error() {
            Some(nix::libc::ENOENT) | Some(nix::libc::ENOTDIR) => exit_code::NOT_FOUND,
            _ => exit_code::NOT_EXECUTABLE,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = &self.program;
        match (self.exit_code(), self.program.contains('/')) {
            (exit_code::NOT_FOUND, true) => {
                write!(f, "cannot run `{program}`: it does not exist, or its interpreter (#!) does not")
            }
            (exit_code::NOT_FOUND, false) => write!(
                f,
                "cannot run `{program}`: not found in PATH ({})",
                self.path_var.as_deref().unwrap_or("unset")
            ),
            _ => write!(f, "cannot run `{program}`: not executable ({})", self.error),
        }
    }
}

/// Starts the program. The child leads its own process group and starts with an empty signal
/// mask; the caller owns its exit status through the reaper.
pub fn spawn(spec: &Spec<'_>) -> Result<Pid, SpawnError> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    command.args(&spec.argv[1..]).env_clear().envs(spec.env);
    let foreground = spec.foreground;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setpgid, getpgrp, tcsetpgrp, sigprocmask); it allocates
    // nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            if foreground {
                take_terminal()?;
            }
            signals::unblock_in_child()
        });
    }
    match command.spawn() {
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(error) => Err(SpawnError {
            program: program.to_string_lossy().into_owned(),
            error,
            path_var: spec.env.get(std::ffi::OsStr::new("PATH")).map(|p| p.to_string_lossy().into_owned()),
        }),
    }
}

/// Makes the calling process's group the foreground group of the terminal on stdin. Not a
/// terminal (or no controlling terminal) is fine: there is nothing to hand over.
fn take_terminal() -> io::Result<()> {
    // SAFETY: fd 0 stays open for the duration of the call; it is only borrowed.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    match tcsetpgrp(stdin, getpgrp()) {
        Ok(()) | Err(Errno::ENOTTY | Errno::ENXIO | Errno::EBADF) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Gives the terminal on stdin back to the init's own process group, after an interactive main
/// process ended. SIGTTOU is blocked in the init, so this works from the background.
pub fn reclaim_terminal() {
    let _ = take_terminal();
}

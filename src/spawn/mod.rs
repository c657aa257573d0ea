//! Process creation: std `Command` plus what must happen between fork and exec.
//!
//! `tokio::process` is not used: its own waiting races the init's single reaper (crates.md
//! §1.4). The child's setup runs in `pre_exec`, after std's own steps (environment, working
//! directory), in this order: a process group of its own (a new session for services, so a
//! service can never touch the container's terminal; the main process stays in the init's
//! session so it can be handed the terminal's foreground), the terminal (when asked), then the
//! privilege drop (supplementary groups, gid, uid: in that order, or the drop would fail), and
//! last an empty signal mask (the init blocks the signals it reads through its signalfd, and a
//! mask survives exec). std's own `.uid()`/`.gid()` are not used: they run before `pre_exec`.
//! Descriptors the init inherited reach the main process only (see `pid1::inherited`).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::errno::Errno;
use nix::unistd::{Gid, Pid, Uid, getpgrp, setgid, setgroups, setpgid, setsid, setuid, tcsetpgrp};

pub use crate::accounts::Credentials;
use crate::exit_code;
use crate::pid1::{inherited, signals};

/// A process's environment: the startup environment, shared by every process (one copy for a
/// thousand services, not a thousand), then the process's own variables, later ones winning.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    base: Arc<BTreeMap<OsString, OsString>>,
    own: Arc<Vec<(OsString, OsString)>>,
}

impl Environment {
    pub fn new(base: Arc<BTreeMap<OsString, OsString>>, own: Vec<(OsString, OsString)>) -> Self {
        Self { base, own: Arc::new(own) }
    }

    /// The value `key` has for the process.
    pub fn get(&self, key: &str) -> Option<&OsStr> {
        let own = self.own.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_os_str());
        own.or_else(|| self.base.get(OsStr::new(key)).map(OsString::as_os_str))
    }

    /// The variables as the process gets them, later ones winning: what two environments are
    /// compared by.
    fn effective(&self) -> BTreeMap<&OsStr, &OsStr> {
        let base = self.base.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()));
        base.chain(self.own.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()))).collect()
    }

    fn apply(&self, command: &mut Command) {
        command.env_clear().envs(self.base.iter()).envs(self.own.iter().map(|(k, v)| (k, v)));
    }
}

impl PartialEq for Environment {
    fn eq(&self, other: &Self) -> bool {
        self.effective() == other.effective()
    }
}

/// Where the process's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The init's own (the main process, as with tini).
    Inherit,
    /// Pipes the init reads and frames as `NAME | line` (services).
    Capture,
    /// /dev/null (probes, shutdown commands).
    Discard,
}

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [OsString],
    pub env: &'a Environment,
    pub working_dir: Option<&'a Path>,
    pub credentials: Option<&'a Credentials>,
    pub output: Output,
    /// The main process: stays in the init's session (so it can own the terminal) and keeps
    /// the init's stdin. Everything else gets a session of its own and /dev/null as stdin.
    pub main: bool,
    /// Hand the terminal on stdin to the child's process group (interactive main process).
    pub foreground: bool,
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// The read ends of its stdout and stderr, with [`Output::Capture`].
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
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

impl SpawnError {
    /// The program exists but the kernel refused to execute it (permissions, format).
    fn refused_to_execute(&self) -> bool {
        use nix::libc::{EACCES, EISDIR, ENOEXEC, EPERM, ETXTBSY};
        matches!(self.error.raw_os_error(), Some(EACCES | EISDIR | ENOEXEC | EPERM | ETXTBSY))
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
            _ if self.refused_to_execute() => {
                write!(f, "cannot run `{program}`: not executable ({})", self.error)
            }
            // Out of descriptors, memory or processes: nothing wrong with the program.
            _ => write!(f, "cannot run `{program}`: {}", self.error),
        }
    }
}

/// Starts the program. The caller owns its exit status through the reaper.
pub fn spawn(spec: &Spec<'_>) -> Result<Spawned, SpawnError> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    command.args(spec.argv.get(1..).unwrap_or_default());
    spec.env.apply(&mut command);
    if let Some(dir) = spec.working_dir {
        command.current_dir(dir);
    }
    let (out, err) = match spec.output {
        Output::Inherit => (Stdio::inherit(), Stdio::inherit()),
        Output::Capture => (Stdio::piped(), Stdio::piped()),
        Output::Discard => (Stdio::null(), Stdio::null()),
    };
    command.stdout(out).stderr(err);
    if !spec.main {
        command.stdin(Stdio::null());
    }
    let setup = ChildSetup::new(spec);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls; everything it needs was prepared before the fork, so it
    // allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || setup.apply());
    }
    match command.spawn() {
        Ok(mut child) => Ok(Spawned {
            pid: Pid::from_raw(child.id() as i32),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
        }),
        Err(error) => Err(SpawnError {
            program: program.to_string_lossy().into_owned(),
            error,
            path_var: spec.env.get("PATH").map(|p| p.to_string_lossy().into_owned()),
        }),
    }
}

/// What the child does to itself between fork and exec, prepared in the parent so the child
/// only makes system calls.
struct ChildSetup {
    main: bool,
    foreground: bool,
    /// Supplementary groups, gid and uid, in the order they must be set.
    credentials: Option<(Vec<Gid>, Gid, Uid)>,
}

impl ChildSetup {
    fn new(spec: &Spec<'_>) -> Self {
        let credentials = spec.credentials.map(|c| {
            (c.groups.iter().map(|g| Gid::from_raw(*g)).collect(), Gid::from_raw(c.gid), Uid::from_raw(c.uid))
        });
        Self { main: spec.main, foreground: spec.foreground, credentials }
    }

    /// Only async-signal-safe calls, no allocation: this runs in the forked child.
    fn apply(&self) -> io::Result<()> {
        if self.main {
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            if self.foreground {
                take_terminal()?;
            }
            inherited::pass_on_in_child()?;
        } else {
            setsid()?;
        }
        if let Some((groups, gid, uid)) = &self.credentials {
            setgroups(groups)?;
            setgid(*gid)?;
            setuid(*uid)?;
        }
        signals::unblock_in_child()
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

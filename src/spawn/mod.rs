//! Process creation, for the main process, services, probes and shutdown commands alike.
//!
//! `tokio::process` and std's `Command` are not used: tokio's own waiting races the init's
//! single reaper (crates.md §1.4), and both fork a copy of the init per start (see [`child`]
//! for what that costs with many services and how it is avoided). The child, with a copy of
//! the init's descriptor table (everything the init opens is close-on-exec, so only what is
//! put on 0, 1 and 2, and the main process's inheritance, survives its exec), in this order:
//! resets signal handlers, gets a process group of its own
//! (a new session for services, so a service can never touch the container's terminal; the
//! main process stays in the init's session so it can be handed the terminal's foreground),
//! the terminal (when asked), its stdin, stdout and stderr, its working directory, then drops
//! privileges (supplementary groups, gid, uid: in that order, or the drop would fail), and last
//! empties its signal mask (the init blocks the signals it reads through its signalfd, and a
//! mask survives exec). Descriptors the init inherited reach the main process only (see
//! `pid1::inherited`).

mod child;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{Pid, getpgrp, pipe2, tcsetpgrp};

use self::child::ChildOutput;
pub use crate::accounts::Credentials;
use crate::exit_code;
use crate::pid1::inherited;

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
    start(spec).map_err(|error| SpawnError {
        program: spec.argv.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        error,
        path_var: spec.env.get("PATH").map(|p| p.to_string_lossy().into_owned()),
    })
}

fn start(spec: &Spec<'_>) -> io::Result<Spawned> {
    let argv = c_strings(spec.argv.iter().map(|arg| arg.as_bytes()))?;
    let program = argv.first().ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))?;
    let path = find_program(program, spec.env)?;
    let envp = c_strings(
        spec.env.effective().into_iter().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()),
    )?;
    let working_dir = spec.working_dir.map(|dir| c_string(dir.as_os_str().as_bytes())).transpose()?;
    let (stdout, stderr, output) = match spec.output {
        Output::Inherit => (None, None, ChildOutput::Inherit),
        Output::Discard => (None, None, ChildOutput::Null),
        Output::Capture => {
            let (out_read, out_write) = pipe2(OFlag::O_CLOEXEC)?;
            let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC)?;
            (Some(out_read), Some(err_read), ChildOutput::Pipes(out_write, err_write))
        }
    };
    let job = child::Job {
        path,
        argv,
        envp,
        working_dir,
        stdin_null: !spec.main,
        main: spec.main,
        foreground: spec.foreground,
        credentials: spec.credentials.map(|c| (c.groups.clone(), c.gid, c.uid)),
        keep_open: if spec.main { inherited::descriptors() } else { &[] },
    };
    let pid = child::start(job, output)?;
    Ok(Spawned { pid, stdout, stderr })
}

/// Where PATH is searched when the process's environment has none (glibc's `_CS_PATH`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The program to execute: `program` itself when it names a path, else the first place in the
/// process's PATH where it can be executed, as `execvp(3)` would find it in the child (a
/// place where it is missing is skipped, one where it is refused is remembered and skipped).
/// Checked here, before the start, so that these failures are errors of the start.
fn find_program(program: &CStr, env: &Environment) -> io::Result<CString> {
    let name = program.to_bytes();
    if name.is_empty() {
        return Err(io::Error::from_raw_os_error(nix::libc::ENOENT));
    }
    if name.contains(&b'/') {
        return executable(program).map(|()| program.to_owned());
    }
    let path = env.get("PATH").map_or(DEFAULT_PATH.as_bytes(), OsStr::as_bytes);
    let mut refused = false;
    for dir in path.split(|b| *b == b':') {
        // An empty entry is the working directory, as for execvp.
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = c_string(&[dir, b"/", name].concat())?;
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) if error.raw_os_error() == Some(nix::libc::EACCES) => refused = true,
            Err(error) if matches!(error.raw_os_error(), Some(nix::libc::ENOENT | nix::libc::ENOTDIR)) => {}
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::from_raw_os_error(if refused { nix::libc::EACCES } else { nix::libc::ENOENT }))
}

/// What exec would say first about the file: missing (ENOENT, ENOTDIR) or refused (EACCES: a
/// directory, or no permission to execute).
fn executable(path: &CStr) -> io::Result<()> {
    let status = nix::sys::stat::stat(path)?;
    if status.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR {
        return Err(io::Error::from_raw_os_error(nix::libc::EACCES));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(io::Error::from)
}

fn c_strings<I, B>(items: I) -> io::Result<Vec<CString>>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    items.into_iter().map(|item| c_string(item.as_ref())).collect()
}

/// A NUL inside an argument, variable or path cannot be passed to exec.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
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

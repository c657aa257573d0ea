//! Runs a program that may crash or hang (a probe that loads driver code, `nvidia-smi`) under
//! a deadline, collecting its output.
//!
//! Event-driven: one `poll` on the output pipes and a pidfd of the child, with the time left as
//! the timeout. On the deadline the child's process group is killed with SIGKILL; a process
//! stuck in the kernel (an ioctl into a wedged driver) may not die at once, so the caller gets
//! its answer after a short grace even then, and the leftover is someone else's to reap (PID 1
//! reaps orphans).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::nvml::Failure;

/// Output kept per stream; a runaway writer is read to the end but not remembered.
const OUTPUT_LIMIT: usize = 1 << 20;

/// How long a killed child may take to be gone before the caller is answered anyway.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// A program that ended on its own.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// A death by signal as a failure; `None` for an exit with a code.
    pub fn crash(&self) -> Option<Failure> {
        self.status.signal().map(|signal| Failure::Crashed {
            signal,
            signal_name: Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.to_string()),
        })
    }

    /// What it printed (stdout, then stderr), trimmed, for a message.
    pub fn said(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&self.stderr);
        if !stderr.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(stderr.trim());
        }
        text
    }
}

/// Runs `command` (stdin from /dev/null, stdout and stderr captured, in a process group of its
/// own) until it ends or `timeout` passes. A program that cannot be started or does not end
/// in time is a [`Failure`]; one that ends, however, is `Finished`.
pub fn run(command: &mut Command, timeout: Duration) -> Result<Finished, Failure> {
    let deadline = Instant::now() + timeout;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| Failure::NotRun { message: format!("{}: {error}", program(command)) })?;
    let pidfd = pidfd_open(&child);
    let mut streams = [Capture::new(child.stdout.take()), Capture::new(child.stderr.take())];
    if let Err(error) = watch(&mut streams, pidfd.as_ref(), deadline) {
        kill(&mut child, pidfd.as_ref());
        return Err(Failure::NotRun { message: format!("{}: cannot watch it: {error}", program(command)) });
    }
    let exited = match &pidfd {
        Some(pidfd) => readable(pidfd, Duration::ZERO),
        None => streams.iter().all(|stream| stream.file.is_none()),
    };
    if !exited {
        kill(&mut child, pidfd.as_ref());
        let still_running = child.try_wait().ok().flatten().is_none();
        return Err(Failure::Hung { timeout_seconds: timeout.as_secs_f64(), still_running });
    }
    for stream in &mut streams {
        stream.drain();
    }
    let status = child.wait().map_err(|error| Failure::NotRun {
        message: format!("{}: cannot wait for it: {error}", program(command)),
    })?;
    let [stdout, stderr] = streams.map(|stream| stream.kept);
    Ok(Finished { status, stdout, stderr })
}

/// Polls until the child has exited (its pidfd is readable; without a pidfd, until both pipes
/// are closed) or the deadline passes, reading the pipes as data comes.
fn watch(streams: &mut [Capture; 2], pidfd: Option<&OwnedFd>, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let mut fds: Vec<PollFd> = streams
            .iter()
            .filter_map(|stream| stream.file.as_ref())
            .map(|file| PollFd::new(file.as_fd(), PollFlags::POLLIN))
            .collect();
        let open_pipes = fds.len();
        if let Some(pidfd) = pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        } else if open_pipes == 0 {
            return Ok(());
        }
        match poll(&mut fds, poll_timeout(left)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(false)).collect();
        drop(fds);
        let mut ready = ready.into_iter();
        for stream in streams.iter_mut().filter(|stream| stream.file.is_some()) {
            if ready.next() == Some(true) {
                stream.read_some();
            }
        }
        if pidfd.is_some() && ready.next() == Some(true) {
            return Ok(());
        }
    }
}

/// Kills the child's process group and reaps it, waiting at most [`KILL_GRACE`] for it to go
/// (without a pidfd, as long as it takes).
fn kill(child: &mut Child, pidfd: Option<&OwnedFd>) {
    // The child leads its own group (process_group(0)), so its pid is the group's id.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    if pidfd.is_none_or(|pidfd| readable(pidfd, KILL_GRACE)) {
        let _ = child.wait();
    }
}

/// Whether `fd` becomes readable within `limit`.
fn readable(fd: &OwnedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let left = deadline.saturating_duration_since(Instant::now());
        match poll(&mut fds, poll_timeout(left)) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn poll_timeout(left: Duration) -> PollTimeout {
    // Rounded up, so the deadline is not missed by a fraction of a millisecond.
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// A pidfd for the child (Linux 5.3+); `None` on older kernels, where the pipes closing stands
/// in for the exit.
fn pidfd_open(child: &Child) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, child.id() as nix::libc::pid_t, 0) };
    // SAFETY: a non-negative result is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn program(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

/// One output pipe and what was read from it.
struct Capture {
    /// `None` once the writer has closed it.
    file: Option<File>,
    kept: Vec<u8>,
}

impl Capture {
    fn new(pipe: Option<impl Into<OwnedFd>>) -> Self {
        let file = pipe.map(|pipe| File::from(pipe.into()));
        if let Some(file) = &file {
            // Non-blocking, so that draining after the exit never waits on a pipe that a
            // grandchild still holds open.
            if let Ok(flags) = fcntl(file.as_fd(), FcntlArg::F_GETFL) {
                let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
                let _ = fcntl(file.as_fd(), FcntlArg::F_SETFL(flags));
            }
        }
        Self { file, kept: Vec::new() }
    }

    /// Reads what is there now; closes the pipe at its end or on an error.
    fn read_some(&mut self) -> bool {
        let Some(file) = &mut self.file else { return false };
        let mut chunk = [0u8; 8192];
        match file.read(&mut chunk) {
            Ok(0) => {
                self.file = None;
                false
            }
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&chunk[..n.min(room)]);
                true
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.file = None;
                false
            }
        }
    }

    /// Reads everything already written.
    fn drain(&mut self) {
        while self.read_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn output_and_exit_code_of_a_program_that_ends() {
        let finished = run(&mut sh("echo out; echo err >&2; exit 3"), Duration::from_secs(10)).unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!((finished.stdout.as_slice(), finished.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
        assert_eq!(finished.said(), "out\nerr");
        assert!(finished.crash().is_none());
    }

    #[test]
    fn a_death_by_signal_is_a_crash() {
        let finished = run(&mut sh("kill -SEGV $$"), Duration::from_secs(10)).unwrap();
        assert_eq!(finished.crash(), Some(Failure::Crashed { signal: 11, signal_name: "SIGSEGV".into() }));
    }

    #[test]
    fn a_hang_is_killed_at_the_deadline_with_its_group() {
        let started = Instant::now();
        // The grandchild holds the pipes open too: the group kill must take it along.
        let failure = run(&mut sh("sleep 1000 & exec sleep 1000"), Duration::from_millis(300)).unwrap_err();
        let took = started.elapsed();
        assert_eq!(failure, Failure::Hung { timeout_seconds: 0.3, still_running: false });
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn a_program_that_closes_its_output_and_exits_later_is_waited_for() {
        let finished = run(&mut sh("exec >&- 2>&-; sleep 0.2; exit 4"), Duration::from_secs(10)).unwrap();
        assert_eq!(finished.status.code(), Some(4));
    }

    #[test]
    fn a_missing_program_is_not_run() {
        let failure = run(&mut Command::new("/nonexistent/nvidia-smi"), Duration::from_secs(1)).unwrap_err();
        match failure {
            Failure::NotRun { message } => {
                assert!(message.starts_with("/nonexistent/nvidia-smi: "), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}

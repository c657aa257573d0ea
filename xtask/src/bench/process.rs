//! Running children with a bound on every wait, and reading the process tree from /proc.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// A finished run: its wall time from just before spawn to just after the wait, and its output.
pub struct Finished {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// What the worker thread of `run_timed` reports.
enum Event {
    Started(u32),
    SpawnFailed(String),
    Done(Result<(Duration, Output), String>),
}

/// Runs `command` to completion, killing it after `limit`.
///
/// The child is spawned, waited for and timed on a worker thread with a blocking wait, so the
/// timing has no polling granularity and no busy loop stealing one of the few CPUs; this thread
/// only waits on a channel with a deadline, which is what bounds the wait.
pub fn run_timed(mut command: Command, limit: Duration) -> Result<Finished, String> {
    let description = format!("{command:?}");
    let deadline = Instant::now() + limit;
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let start = Instant::now();
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = sender.send(Event::SpawnFailed(e.to_string()));
                return;
            }
        };
        // Send errors only mean the caller gave up on us; there is nobody left to tell.
        let _ = sender.send(Event::Started(child.id()));
        let output = child.wait_with_output().map(|output| (start.elapsed(), output));
        let _ = sender.send(Event::Done(output.map_err(|e| e.to_string())));
    });
    let pid = match receive(&receiver, deadline, &description)? {
        Event::Started(pid) => pid,
        Event::SpawnFailed(e) => return Err(format!("cannot run {description}: {e}")),
        Event::Done(_) => return Err(format!("{description}: finished before it started")),
    };
    match receive(&receiver, deadline, &description) {
        Ok(Event::Done(Ok((elapsed, output)))) => Ok(Finished {
            elapsed,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Event::Done(Err(e))) => Err(format!("cannot wait for {description}: {e}")),
        Ok(_) => Err(format!("{description}: unexpected report from its worker")),
        Err(e) => {
            kill_pid(pid);
            Err(format!("{e} (killed pid {pid})"))
        }
    }
}

/// The next event from the worker, or an error once `deadline` has passed.
fn receive(receiver: &Receiver<Event>, deadline: Instant, description: &str) -> Result<Event, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    receiver.recv_timeout(left).map_err(|e| match e {
        RecvTimeoutError::Timeout => format!("{description} did not finish in time"),
        RecvTimeoutError::Disconnected => format!("{description}: its worker thread died"),
    })
}

/// SIGKILLs a pid we spawned but cannot reach through its `Child` (owned by the worker thread).
/// Best effort: this only runs on the way to reporting a timeout. The pid cannot have been
/// reused, since the worker has not reaped it (else it would have reported Done).
fn kill_pid(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

/// SIGKILLs a child and reaps it, waiting at most `limit`.
pub fn kill_and_reap(child: &mut Child, limit: Duration) -> Result<(), String> {
    // Fails only if it has already been reaped, which try_wait below then reports.
    let _ = child.kill();
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Err(format!("pid {} still running {limit:?} after SIGKILL", child.id())),
            Err(e) => return Err(format!("cannot wait for pid {}: {e}", child.id())),
        }
    }
}

/// The children of a process (empty if it is gone: callers poll until the tree is as expected).
pub fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    fs::read_to_string(path).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// The executable a process runs now, if it still exists.
pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The command name of a process (`comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end().to_string())
}

/// Resident set size in kB, from the VmRSS line of /proc/PID/status.
pub fn vm_rss_kb(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// Canonical form of a path, to compare with /proc/PID/exe.
pub fn canonical(path: &Path) -> Result<PathBuf, String> {
    fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

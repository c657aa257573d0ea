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

/// Waits until a process has exited (gone, or a zombie), polling every 5 ms for at most
/// `limit`. For the PID 1 of a namespace, exited means the kernel has killed and reaped every
/// other process in it.
pub fn wait_exited(pid: u32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let path = format!("/proc/{pid}/stat");
    loop {
        // The state is the first field after the command name, which ends with the last ')'.
        let state = fs::read_to_string(&path).ok().and_then(|stat| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(String::from))
        });
        match state.as_deref() {
            None | Some("Z" | "X") => return Ok(()),
            Some(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Some(state) => return Err(format!("pid {pid} still running (state {state}) after {limit:?}")),
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
    status_number(&status(pid)?, "VmRSS").ok_or_else(|| format!("no VmRSS line in /proc/{pid}/status"))
}

/// Canonical form of a path, to compare with /proc/PID/exe.
pub fn canonical(path: &Path) -> Result<PathBuf, String> {
    fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

/// Memory of a process in kB, from /proc/PID/status.
#[derive(Clone, Copy, Default)]
pub struct Memory {
    pub vm_rss: u64,
    /// Anonymous pages (heap, stacks): what the process itself allocated.
    pub rss_anon: u64,
    /// File-backed pages: mostly the executable and libraries, shared with other processes
    /// that map the same files.
    pub rss_file: u64,
    /// Proportional set size: each page divided by the number of processes that map it, so
    /// the PSS of several processes adds up to the memory they use together.
    pub pss: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Self, String> {
        let status = status(pid)?;
        let field =
            |name| status_number(&status, name).ok_or_else(|| format!("no {name} in /proc/{pid}/status"));
        let rollup_path = format!("/proc/{pid}/smaps_rollup");
        let rollup =
            fs::read_to_string(&rollup_path).map_err(|e| format!("cannot read {rollup_path}: {e}"))?;
        Ok(Memory {
            vm_rss: field("VmRSS")?,
            rss_anon: field("RssAnon")?,
            rss_file: field("RssFile")?,
            pss: status_number(&rollup, "Pss").ok_or_else(|| format!("no Pss in {rollup_path}"))?,
        })
    }

    pub fn plus(self, other: Memory) -> Memory {
        Memory {
            vm_rss: self.vm_rss + other.vm_rss,
            rss_anon: self.rss_anon + other.rss_anon,
            rss_file: self.rss_file + other.rss_file,
            pss: self.pss + other.pss,
        }
    }
}

/// Context switches of a process, summed over its threads: /proc/PID/status alone counts only
/// the main thread's, and a thread that wakes up is as much a wake-up as the main one.
#[derive(Clone, Copy, Default)]
pub struct Switches {
    pub voluntary: u64,
    pub nonvoluntary: u64,
}

impl Switches {
    pub fn of(pid: u32) -> Result<Self, String> {
        let dir = format!("/proc/{pid}/task");
        let tasks = fs::read_dir(&dir).map_err(|e| format!("cannot list {dir}: {e}"))?;
        let mut total = Switches::default();
        for task in tasks {
            let path = task.map_err(|e| format!("cannot list {dir}: {e}"))?.path().join("status");
            let status =
                fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let field =
                |name| status_number(&status, name).ok_or_else(|| format!("no {name} in {}", path.display()));
            total.voluntary += field("voluntary_ctxt_switches")?;
            total.nonvoluntary += field("nonvoluntary_ctxt_switches")?;
        }
        Ok(total)
    }

    pub fn plus(self, other: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary + other.voluntary,
            nonvoluntary: self.nonvoluntary + other.nonvoluntary,
        }
    }

    pub fn total(self) -> u64 {
        self.voluntary + self.nonvoluntary
    }

    /// The switches from `earlier` to `self`.
    pub fn since(self, earlier: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            nonvoluntary: self.nonvoluntary.saturating_sub(earlier.nonvoluntary),
        }
    }
}

fn status(pid: u32) -> Result<String, String> {
    let path = format!("/proc/{pid}/status");
    fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// The number of a `Name:   123 kB` (or `Name: 123`) line of a /proc status or smaps_rollup
/// file.
fn status_number(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Sends a signal (a name `kill` knows, e.g. TERM) to a process, through util-linux's `kill`.
pub fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("kill -{name} {pid} failed: {status}")) }
}

/// Waits for a child to exit, polling every `poll` for at most `limit`; returns its status.
/// Polling, not a blocking wait, so the caller keeps its bound without a thread.
pub fn wait_exit(child: &mut Child, limit: Duration, poll: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(poll),
            Ok(None) => return Err(format!("pid {} still running after {limit:?}", child.id())),
            Err(e) => return Err(format!("cannot wait for pid {}: {e}", child.id())),
        }
    }
}

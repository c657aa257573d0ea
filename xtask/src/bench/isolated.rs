//! The phase that runs the inits directly, not as PID 1 (smoke runs and startup timings), in a
//! private mount namespace with tmpfs on /run and /var.
//!
//! Ours creates /run/sshd, /var/empty, /run/user/0 and the like at boot even when it is not
//! PID 1, and the bench must not touch the host's. Wrapping each timed run in `unshare` would
//! add its cost to every sample, so instead this xtask re-executes itself once inside the
//! namespace (`xtask bench` with HELPER_ENV set), measures there, and prints the raw timings
//! on stdout for the parent to parse. A mount namespace costs nothing per exec, so the timings
//! are those of plain runs.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::contenders::{self, Contender};
use super::measure::{self, Samples, Timings};
use super::process::run_timed;

/// Set (to the path of our binary) on the re-executed xtask: it is the helper, not the bench.
const HELPER_ENV: &str = "NIX2GPU_BENCH_STARTUP_OF";
/// Bound on the whole helper: 300 rounds of five runs of about 2 ms each, with a wide margin.
const HELPER_LIMIT: Duration = Duration::from_secs(300);

/// Our binary's path when this process is the helper, None when it is the bench itself.
pub fn helper_request() -> Option<PathBuf> {
    env::var_os(HELPER_ENV).map(PathBuf::from)
}

/// Helper side: smoke runs and startup timings, printed as `note TEXT`, `floor NS...` and one
/// `init NS...` line per contender, in contender order.
pub fn serve(ours: PathBuf) -> Result<(), String> {
    let contenders = contenders::all(ours)?;
    let notes = measure::smoke_notes(&contenders)?;
    let timings = measure::startup(&contenders)?;
    let mut lines: Vec<String> = notes.iter().map(|note| format!("note {note}")).collect();
    lines.push(format!("floor {}", nanos(&timings.floor)));
    lines.extend(timings.inits.iter().map(|samples| format!("init {}", nanos(samples))));
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Bench side: runs the helper in the namespace and returns its timings and notes.
pub fn startup(ours: &Path, contenders: &[Contender]) -> Result<(Timings, Vec<String>), String> {
    let exe = env::current_exe().map_err(|e| format!("cannot find the xtask executable: {e}"))?;
    let mut command = contenders::in_private_mounts(&[exe.into_os_string(), OsString::from("bench")]);
    command.env(HELPER_ENV, ours).stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = run_timed(command, HELPER_LIMIT)?;
    if !run.status.success() {
        return Err(format!("the startup helper failed ({}): {}", run.status, run.stderr.trim()));
    }
    let (timings, notes) = parse(&run.stdout)?;
    if timings.inits.len() != contenders.len() {
        return Err(format!(
            "the startup helper reported {} inits, not {}",
            timings.inits.len(),
            contenders.len()
        ));
    }
    Ok((timings, notes))
}

/// Timings as a line of nanoseconds, for a helper to print.
pub fn nanos(samples: &Samples) -> String {
    let nanos: Vec<String> = samples.as_slice().iter().map(|d| d.as_nanos().to_string()).collect();
    nanos.join(" ")
}

/// Reads back what `serve` printed.
fn parse(stdout: &str) -> Result<(Timings, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut floor = None;
    let mut inits = Vec::new();
    for line in stdout.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "note" => notes.push(rest.to_string()),
            "floor" => floor = Some(durations(rest)?),
            "init" => inits.push(Samples::new(durations(rest)?)),
            _ => return Err(format!("the startup helper printed an unexpected line: {line:?}")),
        }
    }
    let floor = floor.ok_or("the startup helper printed no floor timings")?;
    Ok((Timings { floor: Samples::new(floor), inits }, notes))
}

/// Reads back a line `nanos` printed.
pub fn durations(text: &str) -> Result<Vec<Duration>, String> {
    text.split_whitespace()
        .map(|n| {
            n.parse()
                .map(Duration::from_nanos)
                .map_err(|e| format!("bad timing {n:?} from a bench helper: {e}"))
        })
        .collect()
}

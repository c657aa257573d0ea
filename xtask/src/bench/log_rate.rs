//! Log throughput: one service writing 1 GiB of 100-byte lines through our init (its stdout on
//! /dev/null), against the same producer piped through `cat > /dev/null`, the cheapest reader
//! there is. Ours splits the stream into lines, frames each as `NAME | line`, keeps the recent
//! ones for `logs` and writes them out; the ratio says what that costs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::contenders::{self, OUR_ENV, argv};
use super::measure::{self, Samples};
use super::process::run_timed;

/// 1 GiB rounded down to whole 100-byte lines (fixtures/bench/log_lines.c writes whole lines).
pub const LOG_BYTES: u64 = (1 << 30) / 100 * 100;
/// Runs per reader, alternating: each takes seconds, so few, reported as a median.
pub const LOG_RUNS: usize = 3;

/// Bound on one run: ours moved 1 GiB in about 5 s on the two-core machine this was written on.
const LOG_LIMIT: Duration = Duration::from_secs(120);

/// Wall times of both readers, from spawning unshare to its exit.
pub struct LogRate {
    pub ours: Samples,
    pub cat: Samples,
}

/// Compiles the producer, then times LOG_RUNS runs of each reader, alternating.
pub fn measure(ours: &Path, dir: &Path) -> Result<LogRate, String> {
    let producer = measure::compile_fixture("fixtures/bench/log_lines.c", "log_lines")?;
    let config = write_config(ours_config_path(dir)?, &producer)?;
    let mut ours_times = Vec::with_capacity(LOG_RUNS);
    let mut cat_times = Vec::with_capacity(LOG_RUNS);
    for _ in 0..LOG_RUNS {
        cat_times.push(timed(through_cat(&producer), "the producer piped through cat")?);
        ours_times.push(timed(through_ours(ours, &config), "nix2gpu-init")?);
    }
    Ok(LogRate { ours: Samples::new(ours_times), cat: Samples::new(cat_times) })
}

fn ours_config_path(dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.join("log.yaml"))
}

/// One service, `writer`, running the producer directly (`entrypoint`, no shell in between).
fn write_config(path: PathBuf, producer: &Path) -> Result<PathBuf, String> {
    let text = format!(
        "processes:\n  writer:\n    entrypoint: [{}, \"{LOG_BYTES}\"]\n",
        yaml_quoted(&producer.to_string_lossy())
    );
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// A YAML double-quoted scalar.
fn yaml_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Ours as PID 1 with the writer service and nothing else: it exits 0 once the service has
/// ended and its output is written out. Its stdout, where service lines go, is /dev/null.
fn through_ours(ours: &Path, config: &Path) -> Command {
    let mut command =
        contenders::as_pid1(&argv(&[ours.as_os_str(), OsStr::new("--config"), config.as_os_str()]));
    command.envs(OUR_ENV.iter().copied());
    command
}

/// The same producer piped through `cat > /dev/null`, as PID 1 of the same kind of namespace.
fn through_cat(producer: &Path) -> Command {
    contenders::as_pid1(&[
        OsString::from("sh"),
        OsString::from("-c"),
        OsString::from("\"$0\" \"$1\" | cat > /dev/null"),
        producer.as_os_str().to_os_string(),
        OsString::from(LOG_BYTES.to_string()),
    ])
}

/// Wall time of a run that must exit 0, its stderr kept for the error.
fn timed(mut command: Command, name: &str) -> Result<Duration, String> {
    command.stderr(Stdio::piped());
    Ok(measure::succeeded(run_timed(command, LOG_LIMIT)?, name)?.elapsed)
}

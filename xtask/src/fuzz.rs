//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds every fuzz target of fuzz/ at once
//! (cargo-fuzz, nightly), then runs each for N seconds (default 60) and reports how many
//! inputs it executed and whether it crashed. Fails if any target crashed.
//!
//! Each target reads its committed seeds (fuzz/corpus/TARGET) and a working corpus in
//! fuzz/target/corpus/TARGET, where libFuzzer adds what it finds: the seeds stay as committed
//! and later runs start from where earlier ones left off. The full libFuzzer output of a run is
//! in fuzz/target/logs/TARGET.log; a crashing input is saved under fuzz/artifacts/TARGET/.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{root, run};

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;
/// An input that runs longer than this counts as a hang (libFuzzer's own default is 20 minutes).
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// Lines of a crashing run's log shown (the panic and its backtrace are near the end).
const CRASH_LOG_LINES: usize = 60;

/// What one target's run came to.
struct Outcome {
    target: String,
    executions: Option<u64>,
    /// libFuzzer's average.
    per_second: Option<u64>,
    seconds: f64,
    /// The saved crashing inputs, or the reason the run failed without one.
    crashes: Vec<String>,
}

pub fn run_all(args: &[String]) -> Result<(), String> {
    let (seconds, mut targets) = parse_args(args)?;
    let known = list_targets()?;
    if let Some(unknown) = targets.iter().find(|target| !known.contains(target)) {
        return Err(format!("no fuzz target `{unknown}` (there are: {})", known.join(", ")));
    }
    if targets.is_empty() {
        targets = known;
    }
    println!("building the fuzz targets (cargo +nightly fuzz build)");
    run(nightly_fuzz().arg("build"))?;
    let mut outcomes = Vec::new();
    for target in &targets {
        println!("fuzzing {target} for {seconds} s");
        let outcome = fuzz(target, seconds)?;
        println!("  {}", describe(&outcome));
        outcomes.push(outcome);
    }
    println!("\n{:<20} {:>14} {:>10}  result", "target", "executions", "per second");
    for outcome in &outcomes {
        let executions = outcome.executions.map_or("?".into(), group_thousands);
        let rate = outcome.per_second.map_or("?".into(), group_thousands);
        let result =
            if outcome.crashes.is_empty() { "no crash".to_string() } else { outcome.crashes.join("; ") };
        println!("{:<20} {executions:>14} {rate:>10}  {result}", outcome.target);
    }
    let crashed: Vec<&str> =
        outcomes.iter().filter(|o| !o.crashes.is_empty()).map(|o| o.target.as_str()).collect();
    if crashed.is_empty() { Ok(()) } else { Err(format!("crashed: {}", crashed.join(", "))) }
}

/// `--seconds N` (or `--seconds=N`) and target names.
fn parse_args(args: &[String]) -> Result<(u64, Vec<String>), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--seconds") {
            Some("") => args.next().map(String::as_str),
            Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
            _ if arg.starts_with('-') => return Err(format!("unknown option `{arg}`")),
            _ => {
                targets.push(arg.clone());
                continue;
            }
        };
        seconds = value
            .and_then(|value| value.parse().ok())
            .filter(|&n| n > 0)
            .ok_or("--seconds needs a positive whole number")?;
    }
    Ok((seconds, targets))
}

/// `cargo +nightly fuzz` in the workspace root (cargo-fuzz finds fuzz/ from there). The
/// rustup proxy is called by name: the `cargo` running xtask is the stable toolchain's own.
fn nightly_fuzz() -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root()).env_remove("RUSTUP_TOOLCHAIN").args(["+nightly", "fuzz"]);
    command
}

/// The targets fuzz/Cargo.toml declares, as cargo-fuzz lists them.
fn list_targets() -> Result<Vec<String>, String> {
    let output = nightly_fuzz().arg("list").stderr(Stdio::inherit()).output().map_err(|e| {
        format!("cannot run cargo +nightly fuzz ({e}); install it with `cargo install cargo-fuzz --locked`")
    })?;
    if !output.status.success() {
        return Err(format!(
            "`cargo +nightly fuzz list` failed ({}): are nightly Rust and cargo-fuzz installed?",
            output.status
        ));
    }
    let targets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() { Err("cargo fuzz list names no targets".into()) } else { Ok(targets) }
}

/// Runs one target for `seconds`, its output going to its log file.
fn fuzz(target: &str, seconds: u64) -> Result<Outcome, String> {
    let fuzz_dir = root().join("fuzz");
    let corpus = fuzz_dir.join("target/corpus").join(target);
    let logs = fuzz_dir.join("target/logs");
    for dir in [&corpus, &logs] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| format!("cannot share {}: {e}", log_path.display()))?;
    let started = Instant::now();
    let status = nightly_fuzz()
        .args(["run", target])
        .arg(&corpus)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        // An input that makes a parser read its stdin (a config naming /dev/stdin) finds nothing.
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz run {target}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let text =
        fs::read_to_string(&log_path).map_err(|e| format!("cannot read {}: {e}", log_path.display()))?;
    let mut crashes = saved_inputs(&text);
    if !status.success() {
        print_tail(&log_path, &text);
        if crashes.is_empty() {
            crashes.push(format!("failed ({status}) without saving an input; see {}", log_path.display()));
        }
    }
    Ok(Outcome {
        target: target.to_string(),
        executions: executions(&text),
        per_second: stat(&text, "average_exec_per_sec"),
        seconds,
        crashes,
    })
}

/// One of libFuzzer's final statistics (`-print_final_stats`): `stat::NAME: VALUE`.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let (key, value) = line.strip_prefix("stat::")?.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The number of inputs run, from libFuzzer's final statistics, or else from its last status
/// line (`#N DONE ...`).
fn executions(log: &str) -> Option<u64> {
    stat(log, "number_of_executed_units").or_else(|| {
        log.lines().rev().find_map(|line| {
            let (count, rest) = line.strip_prefix('#')?.split_once(char::is_whitespace)?;
            rest.trim_start().starts_with("DONE").then(|| count.parse().ok())?
        })
    })
}

/// The inputs libFuzzer saved for a crash, a leak, a timeout or running out of memory.
fn saved_inputs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| Some(line.split_once("Test unit written to ")?.1.trim().to_string()))
        .collect()
}

fn print_tail(path: &Path, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    println!("  --- the last lines of {}:", path.display());
    for line in &lines[lines.len().saturating_sub(CRASH_LOG_LINES)..] {
        println!("  {line}");
    }
}

fn describe(outcome: &Outcome) -> String {
    let executions = outcome.executions.map_or("an unknown number of".into(), group_thousands);
    match outcome.crashes.as_slice() {
        [] => format!("{executions} executions in {:.0} s, no crash", outcome.seconds),
        crashes => format!("{executions} executions, CRASHED: {}", crashes.join("; ")),
    }
}

/// 12345678 as `12,345,678`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_final_stats_or_the_done_line() {
        let log = "#2\tINITED cov: 10 ft: 10\n#1024\tpulse  cov: 20\n#53017\tDONE   cov: 812 ft: 2730 corp: 180/9Kb\nDone 53017 runs in 11 second(s)\nstat::number_of_executed_units: 53017\nstat::average_exec_per_sec:     4819\n";
        assert_eq!(executions(log), Some(53017));
        assert_eq!(stat(log, "average_exec_per_sec"), Some(4819));
        assert_eq!(executions("#53017\tDONE   cov: 812\n"), Some(53017));
        assert_eq!(executions("#1024\tpulse  cov: 20\n"), None);
    }

    #[test]
    fn saved_inputs_are_found_and_numbers_grouped() {
        let log = "==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='/w/fuzz/artifacts/elf/'; Test unit written to /w/fuzz/artifacts/elf/crash-ab12\n";
        assert_eq!(saved_inputs(log), ["/w/fuzz/artifacts/elf/crash-ab12"]);
        assert_eq!(group_thousands(12_345_678), "12,345,678");
        assert_eq!(group_thousands(999), "999");
    }

    #[test]
    fn arguments_are_seconds_and_targets() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&[])).unwrap(), (DEFAULT_SECONDS, vec![]));
        assert_eq!(parse_args(&args(&["--seconds", "10", "elf"])).unwrap(), (10, vec!["elf".into()]));
        assert_eq!(parse_args(&args(&["config", "--seconds=5"])).unwrap(), (5, vec!["config".into()]));
        assert!(parse_args(&args(&["--seconds", "0"])).is_err());
        assert!(parse_args(&args(&["--secs", "1"])).is_err());
    }
}

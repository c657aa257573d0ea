//! Developer tasks: `cargo xtask <task>`. See `cargo xtask help`.

mod bench;
mod demo;
mod fuzz;
mod hot_code;
mod image;
mod nvidia;
mod static_build;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const HELP: &str = "\
cargo xtask <task>
  build-static   build the static release binary and check that it is static
  test           fetch-nvidia, build-static, then every test of the workspace against that binary
  fetch-nvidia   download NVIDIA's userspace (Debian non-free) into target/nvidia/root
  demo           the image's demo container in the local Docker engine (logs, status, an
                 ordered stop), or without an engine the init as PID 1 of fresh namespaces
  image          build the container image nix2gpu-init:dev FROM scratch (static init,
                 busybox, OpenSSH, a demo config) into the local Docker engine
  bench          PID 1 against tini, catatonit, dumb-init; the supervisor against
                 supervisord, s6-svscan and a shell floor; set-interpreter against
                 patchelf; ldcache against ldconfig; the gpu node against nix2gpu's
                 shell steps; writes BENCHMARKS.md
  bench pid1     only the PID-1 part (against tini, catatonit, dumb-init): replaces its part
  bench supervisor
                 only the supervisor part (against supervisord, s6, a shell): replaces its part
  bench elf      only set-interpreter against patchelf: replaces its part of BENCHMARKS.md
  bench ldcache  only ldcache against ldconfig: replaces its part of BENCHMARKS.md
  bench gpu      only the gpu node against nix2gpu's shell steps: replaces its part
  bench soak     ten minutes of restarts, probes and log traffic: the init's memory and
                 descriptors over time, into its part of BENCHMARKS.md (not in `bench`)
  hot-code       trace the functions the init runs at start-up and while it supervises,
                 write them to src/hot-code.order (the linker places them together), relink
  fuzz [--seconds N] [TARGET...]
                 build the fuzz targets of fuzz/ (cargo +nightly fuzz), run each (or those
                 named) for N seconds (default 60), report executions and crashes; fails if
                 any crashed";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "build-static" => static_build::build().map(|path| println!("{}", path.display())),
        "test" => test(),
        "fetch-nvidia" => nvidia::fetch().map(drop),
        "demo" => demo::run(),
        "image" => image::build(),
        "bench" => bench::run(std::env::args().nth(2).as_deref()),
        "hot-code" => hot_code::generate(),
        "fuzz" => fuzz::run_all(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            println!("{HELP}");
            return if task.is_empty() || task == "help" { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Runs a command, failing with its description if it does not succeed.
pub fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{command:?} failed: {status}")) }
}

/// `cargo xtask test`: NVIDIA's userspace for the GPU tests, the static binary, then all tests
/// (unit and PID-1) against it. cargo
/// prints one "test result" line per test binary, the last of them usually a doc-test run with
/// nothing in it; the sum over all of them closes the output, so the total is what is read last.
fn test() -> Result<(), String> {
    nvidia::fetch()?;
    let binary = static_build::build()?;
    image::build()?;
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--workspace", "--exclude", "xtask"])
        .env("NIX2GPU_INIT_BIN", &binary)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("cannot wait for cargo test: {e}"))?;
    println!("{} passed, {} failed", totals.passed, totals.failed);
    if status.success() { Ok(()) } else { Err(format!("cargo test failed: {status}")) }
}

/// Passed and failed tests summed over cargo's "test result" lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Adds the counts of a line like `test result: ok. 16 passed; 0 failed; 0 ignored; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else { continue };
            let count = count.parse::<u64>().unwrap_or(0);
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

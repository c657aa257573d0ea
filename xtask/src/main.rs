//! Developer tasks: `cargo xtask <task>`. See `cargo xtask help`.

mod bench;
mod static_build;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const HELP: &str = "\
cargo xtask <task>
  build-static   build the static release binary and check that it is static
  test           build-static, then every test of the workspace against that binary
  demo           run the init as PID 1 in fresh namespaces on a small demo
  bench          compare with tini, catatonit and dumb-init; writes BENCHMARKS.md";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "build-static" => static_build::build().map(|path| println!("{}", path.display())),
        "test" => test(),
        "demo" => demo(),
        "bench" => bench::run(),
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

/// `cargo xtask test`: the static binary, then all tests (unit and PID-1) against it.
fn test() -> Result<(), String> {
    let binary = static_build::build()?;
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["test", "--workspace", "--exclude", "xtask"])
        .env("NIX2GPU_INIT_BIN", &binary))
}

/// `cargo xtask demo`: the init as PID 1 of a fresh PID namespace, running fixtures/demo.sh.
fn demo() -> Result<(), String> {
    let binary = static_build::build()?;
    let script = root().join("fixtures/demo.sh");
    println!(
        "--- nix2gpu-init as PID 1 in a fresh PID and mount namespace, main process: {}",
        script.display()
    );
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var && exec \"$@\"")
        .arg("sh")
        .arg(&binary)
        .arg("--")
        .arg("sh")
        .arg(&script)
        .status()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    println!(
        "--- the init exited with {} (the main process's code)",
        status.code().map_or("a signal".into(), |c| c.to_string())
    );
    Ok(())
}

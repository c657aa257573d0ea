//! The static release binary: glibc linked in (crt-static) for the explicit target only, so
//! build scripts and proc-macros stay dynamic (the `build-static` alias in .cargo/config.toml).

use std::path::PathBuf;
use std::process::Command;

use crate::{root, run};

/// Builds the binary and checks that `file` calls it statically linked.
pub fn build() -> Result<PathBuf, String> {
    run(Command::new(env!("CARGO")).current_dir(root()).args(["build-static", "--quiet"]))?;
    let binary = root().join("target/x86_64-unknown-linux-gnu/release/nix2gpu-init");
    let output = Command::new("file")
        .arg("--brief")
        .arg(&binary)
        .output()
        .map_err(|e| format!("cannot run `file` (apt-get install file): {e}"))?;
    let description = String::from_utf8_lossy(&output.stdout);
    if !description.contains("static") {
        return Err(format!("{} is not static: {description}", binary.display()));
    }
    Ok(binary)
}

//! The static release binary: glibc linked in (crt-static) for the explicit target only, so
//! build scripts and proc-macros stay dynamic (the `build-static` alias in .cargo/config.toml).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::{hot_code, root, run};

/// Below this share of src/hot-code.order found in the link, the build says to regenerate it.
const STALE_BELOW: f64 = 0.9;

/// Builds the binary, checks that `file` calls it statically linked, and says when the hot-code
/// order no longer matches this link.
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
    // No coverage without a map: build.rs has said why the order was not used.
    if let Some((found, listed)) = order_coverage()?
        && (found as f64) < STALE_BELOW * listed as f64
    {
        eprintln!(
            "build-static: only {found} of the {listed} functions in {} are in this link (a new \
             toolchain or lock file renames them): run `cargo xtask hot-code`",
            hot_code::ORDER
        );
    }
    Ok(binary)
}

/// The map lld wrote at the last static link; None if no link wrote one.
pub fn link_map() -> Result<Option<String>, String> {
    let Some(path) = hot_code::map_path(&root().join("target")) else { return Ok(None) };
    fs::read_to_string(&path).map(Some).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// How many of the functions src/hot-code.order lists the last link has: (found, listed); None
/// if the link wrote no map (and so did not use the order).
pub fn order_coverage() -> Result<Option<(usize, usize)>, String> {
    let Some(map) = link_map()? else { return Ok(None) };
    let order = root().join(hot_code::ORDER);
    let order = fs::read_to_string(&order).map_err(|e| format!("cannot read {}: {e}", order.display()))?;
    Ok(Some(hot_code::coverage(&hot_code::text_functions(&map)?, &order)))
}

//! The link layout of the static init (see src/hot-code.order).
//!
//! The build-static alias sets `NIX2GPU_LINK_HOT_CODE`, and only then are the functions the init
//! runs at start-up and while it supervises placed together, in the order they first run: the
//! kernel maps a binary's code 64 kB around each page that faults, so code spread over the
//! whole binary makes it all resident and costs a fault per 64 kB. The options are lld's; other
//! builds, such as the Nix package's, link as usual. The linker also writes a map of the
//! result, which `cargo xtask hot-code` reads to list the functions' names and addresses.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=NIX2GPU_LINK_HOT_CODE");
    if env::var_os("NIX2GPU_LINK_HOT_CODE").is_none() {
        return;
    }
    if !links_with_lld() {
        println!(
            "cargo::warning=linking without src/hot-code.order: this rustc (before 1.90) does not link with lld"
        );
        return;
    }
    // Cargo relinks when the order changes; it does not know the linker reads it otherwise.
    println!("cargo::rerun-if-changed=src/hot-code.order");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let order = manifest.join("src/hot-code.order");
    let map = out.join("nix2gpu-init.map");
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering,--no-demangle,-Map={}",
        order.display(),
        map.display()
    );
}

/// Rust links x86_64-unknown-linux-gnu with its own lld since 1.90; before, with the system's
/// linker, which may not know these options.
fn links_with_lld() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else { return false };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)?.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
}

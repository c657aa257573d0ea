//! `cargo xtask fetch-nvidia`: NVIDIA's real userspace (nvidia-smi, libnvidia-ml, libcuda)
//! from Debian's non-free component, unpacked under target/nvidia/root for the GPU userspace
//! tests and the ELF benchmark. Downloaded, never committed; skipped when already there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{root, run};

/// The Debian packages, taken at apt's candidate version.
const PACKAGES: [&str; 3] = ["nvidia-smi", "libnvidia-ml1", "libcuda1"];
/// Debian 12's deb822 source list, whose `Components:` lines need contrib and non-free.
const SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Where the downloaded packages stay, relative to the workspace root.
const DOWNLOADS: &str = "target/nvidia/debs";
/// Where the packages are unpacked, relative to the workspace root.
pub const ROOT: &str = "target/nvidia/root";
/// Files that must be there after unpacking, relative to [`ROOT`] (Debian's layout).
pub const NVIDIA_SMI: &str = "usr/lib/nvidia/current/nvidia-smi";
const EXPECTED: [&str; 3] = [
    NVIDIA_SMI,
    "usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.1",
    "usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.1",
];

/// Ensures the unpacked packages are under target/nvidia/root and returns that directory.
pub fn fetch() -> Result<PathBuf, String> {
    let unpacked = root().join(ROOT);
    if EXPECTED.iter().all(|file| unpacked.join(file).exists()) {
        println!("NVIDIA userspace already in {}", unpacked.display());
        return Ok(unpacked);
    }
    let downloads = root().join(DOWNLOADS);
    let _ = fs::remove_dir_all(&downloads);
    fs::create_dir_all(&downloads).map_err(|e| format!("cannot create {}: {e}", downloads.display()))?;
    if enable_non_free(Path::new(SOURCES))? {
        apt_update()?;
    }
    // A fresh machine may have no package lists yet: update once and try again.
    if download(&downloads).is_err() {
        apt_update()?;
        download(&downloads)?;
    }
    // Unpacked beside the final place, then renamed, so an interrupted run leaves no half tree.
    let partial = root().join("target/nvidia/root.partial");
    let _ = fs::remove_dir_all(&partial);
    for entry in fs::read_dir(&downloads).map_err(|e| format!("cannot list {}: {e}", downloads.display()))? {
        let deb = entry.map_err(|e| format!("cannot list {}: {e}", downloads.display()))?.path();
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))?;
    }
    if let Some(missing) = EXPECTED.iter().find(|file| !partial.join(file).exists()) {
        return Err(format!(
            "the packages {PACKAGES:?} unpacked without {missing}: has Debian's layout changed?"
        ));
    }
    let _ = fs::remove_dir_all(&unpacked);
    fs::rename(&partial, &unpacked).map_err(|e| format!("cannot rename {}: {e}", partial.display()))?;
    println!("NVIDIA userspace ({}) unpacked in {}", PACKAGES.join(", "), unpacked.display());
    Ok(unpacked)
}

/// The version of the unpacked nvidia-smi package, read from the name of its downloaded .deb
/// (`nvidia-smi_VERSION_ARCH.deb`).
pub fn version() -> Option<String> {
    let downloads = fs::read_dir(root().join(DOWNLOADS)).ok()?;
    downloads.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).find_map(|name| {
        let rest = name.strip_prefix("nvidia-smi_")?.strip_suffix(".deb")?;
        Some(rest.rsplit_once('_')?.0.to_string())
    })
}

/// Adds `contrib non-free` to every `Components:` line of `sources` that lacks non-free;
/// true if the file changed. A missing file (another source layout) is left to apt.
fn enable_non_free(sources: &Path) -> Result<bool, String> {
    let Ok(text) = fs::read_to_string(sources) else { return Ok(false) };
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.strip_prefix("Components:") {
            Some(components) if !components.split_whitespace().any(|c| c == "non-free") => {
                changed = true;
                let mut all: Vec<&str> = components.split_whitespace().collect();
                all.extend(
                    ["contrib", "non-free"]
                        .iter()
                        .filter(|c| !components.split_whitespace().any(|d| d == **c)),
                );
                format!("Components: {}", all.join(" "))
            }
            _ => line.to_string(),
        })
        .collect();
    if changed {
        fs::write(sources, lines.join("\n") + "\n")
            .map_err(|e| format!("cannot enable non-free in {}: {e}", sources.display()))?;
        println!("enabled contrib and non-free in {}", sources.display());
    }
    Ok(changed)
}

fn apt_update() -> Result<(), String> {
    run(Command::new("apt-get").args(["update", "-qq"]))
}

fn download(into: &Path) -> Result<(), String> {
    run(Command::new("apt-get").arg("download").arg("-qq").args(PACKAGES).current_dir(into))
}

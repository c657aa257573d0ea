//! `nix2gpu-init gpu-probe`: the driver version and the GPUs, from NVML loaded in a child
//! process, else from `nvidia-smi`.
//!
//! The parent never loads driver code. It finds `libnvidia-ml.so.1`, runs itself in the hidden
//! child mode (`gpu-probe --child --library PATH`) under the timeout, and reads the child's
//! JSON report; a child that crashes or hangs becomes a failure in the report. The child is a
//! fresh exec of this static binary: its dlopen works when the library's glibc is the one this
//! binary was linked with (see DESIGN.md, "GPU facts"); when it is not, that shows up as a
//! crash or a load failure here, not as a dead init.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::nvml::{self, Failure, GpuReport, Source};
use super::{bounded, smi};
use crate::exit_code;

/// How long the NVML child, and then `nvidia-smi`, may take each, unless `--timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code when no GPU was found (the report says why); 0 means at least one GPU answered.
pub const NO_GPU: i32 = 1;

/// The hidden flag that makes `gpu-probe` the child that loads NVML.
pub const CHILD_FLAG: &str = "--child";

/// The directories searched for `libnvidia-ml.so.1` after `$NVIDIA_CTK_LIBCUDA_DIR`, in order:
/// where NVIDIA's container toolkit puts the driver libraries in a non-Debian image (legacy
/// mode), on a Debian-like image or host (CDI), GKE's and nvidia-docker v1's directory, and
/// nixpkgs' driver link (reference/gpu-elf-ldcache.md §1.3, §4.7).
pub const LIBRARY_DIRS: [&str; 5] = [
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/local/nvidia/lib64",
    "/run/opengl-driver/lib",
];

/// Set by the toolkit's CDI mode (v1.18+) to the driver library directory.
pub const LIBCUDA_DIR_ENV: &str = "NVIDIA_CTK_LIBCUDA_DIR";

/// What `gpu-probe` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub json: bool,
    /// The library to load instead of searching.
    pub library: Option<PathBuf>,
    /// The `nvidia-smi` for the fallback instead of the one in PATH.
    pub nvidia_smi: Option<PathBuf>,
    pub timeout: Duration,
}

/// `nix2gpu-init gpu-probe`: prints the report; 0 when a GPU answered, [`NO_GPU`] otherwise.
pub fn command(options: &Options) -> i32 {
    let report = probe(options);
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("nix2gpu-init: cannot write the report: {error}");
                return exit_code::INTERNAL;
            }
        }
    } else {
        print!("{}", describe(&report));
    }
    if report.found_gpu() { 0 } else { NO_GPU }
}

/// The probe: NVML in a child, and `nvidia-smi` if NVML could not be loaded at all.
pub fn probe(options: &Options) -> GpuReport {
    let report = nvml(options);
    with_fallback(options, report)
}

/// NVML's part of the probe: the library found (or given) and loaded in a child.
pub fn nvml(options: &Options) -> GpuReport {
    let library = match &options.library {
        Some(path) => Ok(path.clone()),
        None => {
            let dirs = library_dirs(std::env::var_os(LIBCUDA_DIR_ENV).as_deref());
            find_library(&dirs, |path| path.exists())
        }
    };
    match library {
        Ok(path) => nvml_in_child(&path, options.timeout),
        Err(failure) => GpuReport { nvml_error: Some(failure), ..GpuReport::empty(None) },
    }
}

/// Whether NVML could not be loaded at all (rather than loaded and failing).
pub fn not_loaded(report: &GpuReport) -> bool {
    matches!(report.nvml_error, Some(Failure::LibraryNotLoaded { .. }))
}

/// `report`, completed from `nvidia-smi`'s CSV when NVML could not be loaded.
fn with_fallback(options: &Options, mut report: GpuReport) -> GpuReport {
    if not_loaded(&report) {
        let program = options.nvidia_smi.clone().unwrap_or_else(|| PathBuf::from("nvidia-smi"));
        match smi::query(&program, options.timeout) {
            Ok((driver_version, devices)) => {
                report.source = Some(Source::NvidiaSmi);
                report.driver_version = Some(driver_version);
                report.devices = devices;
            }
            Err(failure) => report.nvidia_smi_error = Some(failure),
        }
    }
    report
}

/// `$NVIDIA_CTK_LIBCUDA_DIR` (a `:`-separated list is accepted), then [`LIBRARY_DIRS`].
pub fn library_dirs(libcuda_dir: Option<&OsStr>) -> Vec<PathBuf> {
    let from_toolkit = libcuda_dir.map(std::env::split_paths).into_iter().flatten();
    from_toolkit.filter(|dir| dir.is_absolute()).chain(LIBRARY_DIRS.iter().map(PathBuf::from)).collect()
}

/// The first `DIR/libnvidia-ml.so.1` that exists, by absolute path (a static binary's dlopen
/// would not search these directories itself).
pub fn find_library(dirs: &[PathBuf], exists: impl Fn(&Path) -> bool) -> Result<PathBuf, Failure> {
    dirs.iter().map(|dir| dir.join(nvml::LIBRARY)).find(|path| exists(path)).ok_or_else(|| {
        let searched: Vec<String> = dirs.iter().map(|dir| dir.display().to_string()).collect();
        Failure::LibraryNotLoaded {
            message: format!("{} is in none of {}", nvml::LIBRARY, searched.join(", ")),
        }
    })
}

/// Runs this binary as the NVML child under `timeout` and reads its report.
fn nvml_in_child(library: &Path, timeout: Duration) -> GpuReport {
    let failed = |failure| GpuReport {
        nvml_error: Some(failure),
        ..GpuReport::empty(Some(library.display().to_string()))
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            return failed(Failure::NotRun { message: format!("cannot find this program: {error}") });
        }
    };
    let mut child = Command::new(exe);
    child.args(["gpu-probe", CHILD_FLAG, "--library"]).arg(library);
    let finished = match bounded::run(&mut child, timeout) {
        Ok(finished) => finished,
        Err(failure) => return failed(failure),
    };
    if let Some(crash) = finished.crash() {
        return failed(crash);
    }
    match (finished.status.code(), serde_json::from_slice::<GpuReport>(&finished.stdout)) {
        (Some(0), Ok(report)) => report,
        (Some(0), Err(error)) => {
            failed(Failure::Unreadable { message: format!("{error}: {}", finished.said()) })
        }
        (code, _) => failed(Failure::Exited { code: code.unwrap_or(-1), output: finished.said() }),
    }
}

/// The hidden child mode: loads NVML from `library`, prints the report as one JSON line.
pub fn child(library: &Path) -> i32 {
    // A crash in the driver library must not leave a core file in the working directory (the
    // parent reports it), and a child whose parent is gone has nobody to answer.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    match serde_json::to_string(&nvml::probe_library(library)) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(error) => {
            eprintln!("nix2gpu-init: cannot write the report: {error}");
            exit_code::INTERNAL
        }
    }
}

/// The report for a person: the verdict first, then one line per GPU or per reason.
pub fn describe(report: &GpuReport) -> String {
    let mut out = String::new();
    let library = report.library.as_deref().unwrap_or(nvml::LIBRARY);
    match (&report.source, &report.driver_version) {
        (Some(Source::Nvml), Some(driver)) => out.push_str(&format!("driver {driver} (NVML, {library})\n")),
        (Some(Source::NvidiaSmi), Some(driver)) => out.push_str(&format!("driver {driver} (nvidia-smi)\n")),
        _ => out.push_str("no GPU report\n"),
    }
    for device in &report.devices {
        out.push_str(&format!("GPU {}: {}", device.index, device.name.as_deref().unwrap_or("?")));
        if let Some(uuid) = &device.uuid {
            out.push_str(&format!(" ({uuid})"));
        }
        if let Some(memory) = &device.memory {
            let mib = |bytes: u64| bytes / (1024 * 1024);
            out.push_str(&format!(
                ", memory {} MiB total, {} MiB used, {} MiB free",
                mib(memory.total_bytes),
                mib(memory.used_bytes),
                mib(memory.free_bytes)
            ));
        }
        if let Some(error) = &device.error {
            out.push_str(&format!(", {error}"));
        }
        out.push('\n');
    }
    if report.source.is_some() && report.devices.is_empty() {
        out.push_str("no GPU: the driver answered but lists no device\n");
    }
    if let Some(error) = &report.nvml_error {
        out.push_str(&format!("NVML ({library}): {error}\n"));
    }
    if let Some(error) = &report.nvidia_smi_error {
        out.push_str(&format!("nvidia-smi: {error}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::gpu::nvml::{GpuDevice, Memory};

    #[test]
    fn the_toolkit_directory_comes_first_then_the_usual_ones() {
        let dirs = library_dirs(Some(OsStr::new("/usr/lib/nvidia-cdi:relative")));
        assert_eq!(dirs[0], Path::new("/usr/lib/nvidia-cdi"));
        assert_eq!(dirs[1..].iter().map(|d| d.to_str().unwrap()).collect::<Vec<_>>(), LIBRARY_DIRS);
        assert_eq!(library_dirs(None).len(), LIBRARY_DIRS.len());
    }

    #[test]
    fn the_first_directory_holding_the_library_wins() {
        let present: BTreeSet<&Path> = [
            Path::new("/usr/local/nvidia/lib64/libnvidia-ml.so.1"),
            Path::new("/run/opengl-driver/lib/libnvidia-ml.so.1"),
        ]
        .into();
        let found = find_library(&library_dirs(None), |path| present.contains(path)).unwrap();
        assert_eq!(found, Path::new("/usr/local/nvidia/lib64/libnvidia-ml.so.1"));
        let missing = find_library(&library_dirs(None), |_| false).unwrap_err();
        assert!(missing.to_string().contains("libnvidia-ml.so.1 is in none of /usr/lib64, "), "{missing}");
    }

    #[test]
    fn descriptions_lead_with_the_verdict() {
        let mut report = GpuReport::empty(Some("/usr/lib64/libnvidia-ml.so.1".into()));
        report.source = Some(Source::Nvml);
        report.driver_version = Some("550.54.15".into());
        report.devices.push(GpuDevice {
            index: 0,
            name: Some("NVIDIA H100 80GB HBM3".into()),
            uuid: Some("GPU-1".into()),
            memory: Some(Memory {
                total_bytes: 80 << 30,
                used_bytes: 1 << 20,
                free_bytes: (80 << 30) - (1 << 20),
            }),
            error: None,
        });
        assert_eq!(
            describe(&report),
            "driver 550.54.15 (NVML, /usr/lib64/libnvidia-ml.so.1)\n\
             GPU 0: NVIDIA H100 80GB HBM3 (GPU-1), memory 81920 MiB total, 1 MiB used, 81919 MiB free\n"
        );
        let failed = GpuReport {
            nvml_error: Some(Failure::LibraryNotLoaded { message: "gone".into() }),
            nvidia_smi_error: Some(Failure::Exited { code: 12, output: "no library".into() }),
            ..GpuReport::empty(None)
        };
        assert_eq!(
            describe(&failed),
            "no GPU report\nNVML (libnvidia-ml.so.1): cannot load the library: gone\n\
             nvidia-smi: exited with code 12: no library\n"
        );
    }
}

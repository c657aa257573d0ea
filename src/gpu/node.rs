//! The built-in `gpu` node: a one-shot child of the init (`nix2gpu-init builtin gpu`) that
//! waits for the NVIDIA driver to be injected, makes its libraries visible to every kind of
//! program, fixes nvidia-smi for the image's loader, asks NVML what is there, and leaves a
//! report for `status`.
//!
//! Its lines (`gpu | ...`) are written for a person at `docker logs`: what is awaited, for how
//! long so far, and a verdict that says what to check. It exits 0 when the work is done (the
//! verdict may still be that the driver does not answer: the libraries are in place for when
//! it does), and 1 when a GPU was requested but never injected; with `required`, a driver that
//! does not answer fails too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::nvml::{Failure, GpuReport};
use super::wait::{self, CONTROL_DEVICE, Found};
use super::{bounded, driver, elf, ldcache, probe};
use crate::config::builtins::{GpuNode, gpu_requested};

/// How long NVML and nvidia-smi get to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the node concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No GPU was requested and no driver is in the container: nothing to do.
    NotRequested,
    /// A GPU was requested but the driver's files did not arrive in time.
    NotInjected,
    /// The libraries are in place but NVML reports no GPU (no kernel driver, no device).
    DriverNotAnswering,
    /// NVML (or nvidia-smi) reported the GPUs.
    Ready,
}

/// The report `status` shows as its `gpu` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// The verdict in words, with what to check.
    pub message: String,
    /// How long the wait for the driver took.
    pub waited_ms: u64,
    pub driver_dir: Option<PathBuf>,
    pub driver_version: Option<String>,
    /// Links made this boot (soname links, `/run/opengl-driver/lib`).
    pub links: Vec<PathBuf>,
    pub nvidia_smi: Option<NvidiaSmi>,
    pub probe: Option<GpuReport>,
}

/// What became of nvidia-smi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaSmi {
    /// The program on PATH: the injected one, or our rewritten copy.
    pub path: PathBuf,
    /// Whether this boot wrote the copy (a second boot finds it done).
    pub rewritten: bool,
    /// `nvidia-smi -L`'s exit code (9: runs, but no driver answers).
    pub exit_code: Option<i32>,
    /// Why it does not run, if it does not.
    pub error: Option<String>,
}

impl NvidiaSmi {
    /// The report of a program that was not run, or not made runnable, and why.
    fn failed(path: PathBuf, rewritten: bool, error: String) -> NvidiaSmi {
        NvidiaSmi { path, rewritten, exit_code: None, error: Some(error) }
    }
}

/// Runs the node; the process's exit code.
pub fn run(settings: GpuNode) -> i32 {
    let vars: BTreeMap<String, String> = std::env::vars_os().map(|(k, v)| (lossy(k), lossy(v))).collect();
    let device = Path::new(CONTROL_DEVICE);
    let started = Instant::now();
    let present = wait::look(&settings.library_dirs, device);
    if !gpu_requested(&vars) && present.libraries.is_empty() && !present.device {
        let message = "no GPU requested (NVIDIA_VISIBLE_DEVICES is unset, void or none) and no driver in the container: nothing to do";
        return finish(&settings, report(Verdict::NotRequested, message, started), 0);
    }
    let found = match await_driver(&settings, device, present) {
        Ok(found) => found,
        Err(message) => return finish(&settings, report(Verdict::NotInjected, &message, started), 1),
    };
    let waited = started.elapsed();
    let mut report = set_up(&settings, &found);
    report.waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    let code = if report.verdict == Verdict::Ready || !settings.required { 0 } else { 1 };
    finish(&settings, report, code)
}

fn lossy(text: OsString) -> String {
    text.to_string_lossy().into_owned()
}

fn report(verdict: Verdict, message: &str, started: Instant) -> Report {
    Report {
        verdict,
        message: message.to_string(),
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        driver_dir: None,
        driver_version: None,
        links: Vec::new(),
        nvidia_smi: None,
        probe: None,
    }
}

/// The driver's libraries, waited for (with progress lines) if they are not all there.
fn await_driver(settings: &GpuNode, device: &Path, present: Found) -> Result<Found, String> {
    if present.complete() {
        return Ok(present);
    }
    let limit = settings.wait;
    println!(
        "waiting up to {}s for the NVIDIA driver: {}",
        limit.as_secs_f64(),
        present.missing().join(", ")
    );
    let found = wait::wait(&settings.library_dirs, device, limit, |missing, waited| {
        println!(
            "still waiting for {} ({}s of {}s)",
            missing.join(", "),
            waited.as_secs(),
            limit.as_secs_f64()
        );
    })?;
    if found.libraries.len() < wait::LIBRARIES.len() {
        let searched: Vec<String> = settings.library_dirs.iter().map(|d| d.display().to_string()).collect();
        let unusable: Vec<String> = found.unusable.iter().map(|f| f.display().to_string()).collect();
        let unusable = if unusable.is_empty() {
            String::new()
        } else {
            format!(
                "; found but not complete ELF libraries (truncated, or not libraries at all): {}",
                unusable.join(", ")
            )
        };
        return Err(format!(
            "a GPU was requested but the driver was not injected within {}s: missing {} (searched {}){unusable}. \
             Check that the container runs with the NVIDIA runtime (docker run --gpus all, or --runtime=nvidia \
             with NVIDIA_VISIBLE_DEVICES) and that nvidia-smi works on the host",
            limit.as_secs_f64(),
            found.missing().join(", "),
            searched.join(", ")
        ));
    }
    if !found.device {
        println!(
            "{CONTROL_DEVICE} did not appear within {}s: the container has the driver's libraries but no GPU device",
            limit.as_secs_f64()
        );
    }
    Ok(found)
}

/// Links and nvidia-smi; then the loader configuration and cache, while NVML is asked (the
/// probe, and nvidia-smi -L); then the verdict.
fn set_up(settings: &GpuNode, found: &Found) -> Report {
    // Invariant: `await_driver` only returns with NVML found, and a found file has a parent.
    let dir = found.driver_dir().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let nvml =
        found.libraries.iter().find(|(name, _)| *name == wait::LIBRARIES[0]).map(|(_, file)| file.clone());
    let version = nvml.as_deref().and_then(driver::version);
    println!("driver libraries in {} (version {})", dir.display(), version.as_deref().unwrap_or("unknown"));
    let libraries = match &version {
        Some(version) => driver::libraries(&dir, version),
        None => found.libraries.iter().map(|(_, file)| file.clone()).collect(),
    };
    let links = driver::link_sonames(&libraries, &settings.driver_link_dir);
    for failure in &links.failed {
        println!("cannot link {failure}");
    }
    println!("{} libraries linked by soname ({} new links)", libraries.len(), links.made.len());
    let fixed = settings.patch_nvidia_smi.then(|| fix_nvidia_smi(settings, &dir)).flatten();
    let library = dir.join(super::nvml::LIBRARY);
    let options = probe::Options {
        json: false,
        library: Some(if library.exists() { library } else { nvml.unwrap_or(library) }),
        nvidia_smi: fixed.as_ref().map(|fixed| match fixed {
            Ok(ready) => ready.path.clone(),
            Err(failed) => failed.path.clone(),
        }),
        timeout: PROBE_TIMEOUT,
    };
    let (nvidia_smi, probe) = check_and_probe(fixed, &options, || update_loader(&dir));
    let (verdict, message) = verdict(&probe);
    Report {
        verdict,
        message,
        waited_ms: 0,
        driver_dir: Some(dir),
        driver_version: probe.driver_version.clone().or(version),
        links: links.made,
        nvidia_smi,
        probe: Some(probe),
    }
}

fn verdict(probe: &GpuReport) -> (Verdict, String) {
    if probe.found_gpu() {
        let names: Vec<&str> = probe.devices.iter().filter_map(|d| d.name.as_deref()).collect();
        let driver = probe.driver_version.as_deref().unwrap_or("?");
        return (
            Verdict::Ready,
            format!("{} GPU(s) ready, driver {driver}: {}", probe.devices.len(), names.join(", ")),
        );
    }
    let why = match (&probe.nvml_error, &probe.nvidia_smi_error) {
        (Some(nvml), Some(smi)) => format!("NVML: {nvml}; nvidia-smi: {smi}"),
        (Some(nvml), None) => format!("NVML: {nvml}"),
        (None, Some(smi)) => format!("nvidia-smi: {smi}"),
        (None, None) => "NVML reports no GPU".to_string(),
    };
    (
        Verdict::DriverNotAnswering,
        format!("the driver's libraries are in place but the driver does not answer ({why})"),
    )
}

/// The `/etc/ld.so.conf.d` entry and a fresh `/etc/ld.so.cache` that includes the driver.
fn update_loader(dir: &Path) {
    match driver::conf_entry(Path::new("/"), dir) {
        Ok(true) => println!("wrote {}", driver::CONF_FILE),
        Ok(false) => {}
        Err(e) => println!("cannot write {}: {e}", driver::CONF_FILE),
    }
    let mut dirs = driver::cache_dirs(Path::new("/"));
    if !dirs.iter().any(|d| d == dir) {
        dirs.insert(0, dir.to_path_buf());
    }
    match ldcache::update(Path::new(ldcache::DEFAULT_OUTPUT), &dirs) {
        Ok(entries) => {
            println!("wrote {} ({entries} entries from {} directories)", ldcache::DEFAULT_OUTPUT, dirs.len())
        }
        Err(e) => println!("cannot write {}: {e}", ldcache::DEFAULT_OUTPUT),
    }
}

/// Runs the NVML probe and `nvidia-smi -L` (when nvidia-smi is ready to run) while
/// `write_cache` writes the loader's configuration and cache: each load of libnvidia-ml takes
/// tens of milliseconds without a GPU (mostly the 12 MB it clears) and far longer with one,
/// and they change nothing the cache is built from.
///
/// What may depend on the new cache waits for it. nvidia-smi as injected finds libnvidia-ml
/// through its loader's cache, so it runs after; our copy finds it through its RUNPATH. The
/// probe's child finds libnvidia-ml's own dependencies (libc and the like) through the cache
/// that is there; if it could not load NVML before the new cache, the whole probe (with its
/// nvidia-smi fallback) runs again after it.
fn check_and_probe(
    fixed: Option<Result<Runnable, NvidiaSmi>>,
    options: &probe::Options,
    write_cache: impl FnOnce(),
) -> (Option<NvidiaSmi>, GpuReport) {
    std::thread::scope(|scope| {
        let probing = std::thread::Builder::new().spawn_scoped(scope, || probe::nvml(options));
        let early = match &fixed {
            Some(Ok(ready)) if ready.own_copy => {
                std::thread::Builder::new().spawn_scoped(scope, || check_runs(ready)).ok()
            }
            _ => None,
        };
        write_cache();
        let nvidia_smi = match (early, &fixed) {
            (Some(checking), Some(Ok(ready))) => {
                Some(said(checking.join().unwrap_or_else(|_| not_run(ready, "the check's thread panicked"))))
            }
            (_, Some(Ok(ready))) => Some(said(check_runs(ready))),
            // Why it cannot be fixed was said then.
            (_, Some(Err(failed))) => Some(failed.clone()),
            (_, None) => None,
        };
        (nvidia_smi, probe_after_cache(probing.map(|thread| thread.join()), options))
    })
}

/// The probe's report, from the early NVML probe's `joined` thread: as it is, or the whole
/// probe again now that the cache is written if NVML could not be loaded before (or there was
/// no thread).
fn probe_after_cache(
    joined: io::Result<std::thread::Result<GpuReport>>,
    options: &probe::Options,
) -> GpuReport {
    match joined {
        Ok(Ok(report)) if !probe::not_loaded(&report) => report,
        Ok(Ok(_)) | Err(_) => probe::probe(options),
        Ok(Err(_)) => {
            let library = options.library.as_ref().map(|library| library.display().to_string());
            let message = "the probe's thread panicked".to_string();
            GpuReport { nvml_error: Some(Failure::NotRun { message }), ..GpuReport::empty(library) }
        }
    }
}

/// nvidia-smi ready to be run: the injected program or our copy.
struct Runnable {
    path: PathBuf,
    /// Whether it is our copy (with a RUNPATH to the driver), rather than the injected program.
    own_copy: bool,
    /// Whether this boot wrote the copy.
    rewritten: bool,
}

/// Says why the injected nvidia-smi at `path` could not be made to run (`action` failed), and
/// the report that carries it.
fn unfixable(path: PathBuf, action: &str, error: String) -> NvidiaSmi {
    println!("cannot {action} {}: {error}", path.display());
    NvidiaSmi::failed(path, false, error)
}

/// Finds the injected nvidia-smi; if its interpreter is not the image's loader, a copy in
/// the node's bin directory gets that loader and a RUNPATH to the driver. Returns the program
/// to run, or the report of why it cannot be fixed.
fn fix_nvidia_smi(settings: &GpuNode, driver_dir: &Path) -> Option<Result<Runnable, NvidiaSmi>> {
    let injected = find_nvidia_smi(&settings.bin_dir)?;
    let Some(loader) = settings.loader.clone().or_else(discover_loader) else {
        let error = "no dynamic loader found in the image (set nix2gpu.gpu.loader)".to_string();
        return Some(Err(unfixable(injected, "fix", error)));
    };
    let interpreter = elf::file_interpreter(&injected).ok().flatten();
    let own_copy = interpreter.as_deref().map(Path::new) != Some(loader.as_path()) || !loader.exists();
    let (path, rewritten) = if !own_copy {
        (injected.clone(), false)
    } else {
        let copy = settings.bin_dir.join("nvidia-smi");
        let made = fs::create_dir_all(&settings.bin_dir).map_err(|e| e.to_string()).and_then(|()| {
            let runpath = driver_dir.to_string_lossy();
            elf::set_interpreter(&injected, &loader.to_string_lossy(), Some(&runpath), Some(&copy))
        });
        match made {
            Ok(outcome) => (copy, outcome == elf::Outcome::Written),
            Err(error) => return Some(Err(unfixable(injected, "rewrite", error))),
        }
    };
    if rewritten {
        println!(
            "nvidia-smi: copied to {} with interpreter {} and RUNPATH {}",
            path.display(),
            loader.display(),
            driver_dir.display()
        );
    }
    Some(Ok(Runnable { path, own_copy, rewritten }))
}

/// Runs `nvidia-smi -L`: 0 lists the GPUs, 9 means it found NVML but no driver answers, both
/// prove the program itself works; 12 means it cannot find libnvidia-ml.
fn check_runs(ready: &Runnable) -> NvidiaSmi {
    let (exit_code, error) = match bounded::run(Command::new(&ready.path).arg("-L"), PROBE_TIMEOUT) {
        Ok(finished) => match finished.status.code() {
            Some(code @ (0 | 9)) => (Some(code), None),
            Some(12) => (Some(12), Some("it cannot find libnvidia-ml.so.1 (NVML error 12)".to_string())),
            Some(code) => (Some(code), Some(format!("it exited with {code}: {}", finished.said()))),
            None => (None, finished.crash().map(|c| c.to_string())),
        },
        Err(failure) => (None, Some(failure.to_string())),
    };
    NvidiaSmi { path: ready.path.clone(), rewritten: ready.rewritten, exit_code, error }
}

/// The report of a check that did not run.
fn not_run(ready: &Runnable, why: &str) -> NvidiaSmi {
    NvidiaSmi::failed(ready.path.clone(), ready.rewritten, why.into())
}

/// `checked`, once its line is in the log.
fn said(checked: NvidiaSmi) -> NvidiaSmi {
    let path = checked.path.display();
    match (&checked.exit_code, &checked.error) {
        (Some(code), None) => {
            println!("{path} -L runs (exit {code}{})", if *code == 9 { ": no driver answers" } else { "" })
        }
        (_, Some(error)) => println!("{path} does not run: {error}"),
        (None, None) => {}
    }
    checked
}

/// The injected nvidia-smi: where the toolkit puts it, else on PATH (not our own copy).
fn find_nvidia_smi(own_dir: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/bin", "/usr/local/nvidia/bin"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .filter(|dir| dir != own_dir)
        .map(|dir| dir.join("nvidia-smi"))
        .find(|file| file.is_file())
}

/// The image's loader: the FHS path, else a glibc in the Nix store (the newest by name).
fn discover_loader() -> Option<PathBuf> {
    const NAME: &str = "ld-linux-x86-64.so.2";
    let fhs = ["/lib64", "/lib"].into_iter().map(|dir| Path::new(dir).join(NAME)).find(|p| p.exists());
    fhs.or_else(|| {
        let mut loaders: Vec<PathBuf> = fs::read_dir("/nix/store")
            .ok()?
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().contains("-glibc-"))
            .map(|entry| entry.path().join("lib").join(NAME))
            .filter(|loader| loader.exists())
            .collect();
        loaders.sort();
        loaders.pop()
    })
}

/// Prints the verdict, writes the report, and gives `code` back.
fn finish(settings: &GpuNode, report: Report, code: i32) -> i32 {
    println!("{}", report.message);
    if let Err(e) = write_report(&settings.report_file, &report) {
        println!("cannot write the report {}: {e}", settings.report_file.display());
    }
    code
}

fn write_report(file: &Path, report: &Report) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let temporary = file.with_extension("new");
    fs::write(&temporary, json).map_err(|e| e.to_string())?;
    fs::rename(&temporary, file).map_err(|e| e.to_string())
}

/// The report of the last run, for `status` (None before the node ran, or unreadable).
pub fn read_report(file: &Path) -> Option<Report> {
    serde_json::from_slice(&fs::read(file).ok()?).ok()
}

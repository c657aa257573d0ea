//! GPU node: `nix2gpu-init builtin gpu` against the same work done the way nix2gpu's startup
//! script does it (bash: a symlink loop over the driver's libraries, `ldconfig`, patchelf on
//! nvidia-smi, then running nvidia-smi), on NVIDIA's real user space (Debian's packages, from
//! `cargo xtask fetch-nvidia`) and no GPU.
//!
//! Both write system paths (/etc/ld.so.cache, the driver directory, /run, /dev/nvidiactl), so
//! the bench runs itself again in a private mount namespace (see [`NAMESPACE`]) and measures
//! there. The driver is placed as NVIDIA's toolkit places it (versioned libraries in
//! /usr/local/nvidia/lib64, nvidia-smi in /usr/local/nvidia/bin, /dev/nvidiactl present), and
//! every run starts from that same state: whatever the previous run made is removed, untimed.

use std::env;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::isolated;
use super::measure::Samples;
use super::process::run_timed;
use super::report::{self, Table, millis, secs};
use crate::nvidia;

/// The heading that starts this part of BENCHMARKS.md (`bench gpu` replaces from here on).
pub const HEADING: &str = "# GPU node";
/// Timed runs per subject, interleaved.
const RUNS: usize = 21;
/// Untimed rounds first (page cache, the loader's first look at the libraries).
const WARMUP_ROUNDS: usize = 3;
/// nix2gpu's time over ours must be at least this (medians).
const MIN_RATIO: f64 = 5.0;
/// Bound on one run of a subject.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Bound on the whole helper.
const HELPER_LIMIT: Duration = Duration::from_secs(600);
/// Set (to our binary's path) on the copy of xtask that measures in the namespace.
const HELPER_ENV: &str = "NIX2GPU_BENCH_GPU_OURS";
/// Set on the helper: where `cargo xtask fetch-nvidia` unpacked the driver.
const NVIDIA_ROOT_ENV: &str = "NIX2GPU_BENCH_GPU_NVIDIA";

/// The private mount namespace: /usr read-only (ldconfig must not "fix" links in the machine's
/// library directories), tmpfs on /usr/local (the toolkit's /usr/local/nvidia), /run and
/// /var/cache (ldconfig's auxiliary cache), a fresh /dev with the basic nodes (libnvidia-ml
/// creates device nodes when run as root; they must land here), and an overlay over /etc.
const NAMESPACE: &str = "set -e
mount --bind /usr /usr && mount -o remount,bind,ro /usr
mount -t tmpfs tmpfs /usr/local && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/cache
mount -t tmpfs tmpfs /dev
mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9
mkdir /run/etc-upper /run/etc-work
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc-upper,workdir=/run/etc-work /etc
exec \"$@\"";

/// Where the toolkit puts the driver's libraries and nvidia-smi (legacy mode, non-Debian image).
const DRIVER_DIR: &str = "/usr/local/nvidia/lib64";
const INJECTED_SMI: &str = "/usr/local/nvidia/bin/nvidia-smi";
const CONTROL_DEVICE: &str = "/dev/nvidiactl";
/// The image's loader, at a path of its own as in a Nix store: not nvidia-smi's interpreter,
/// so both sides rewrite nvidia-smi.
const LOADER: &str = "/run/glibc/lib/ld-linux-x86-64.so.2";
const SYSTEM_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// What the node makes (its defaults); nix2gpu's copy of nvidia-smi goes to the same place.
const NODE_DIR: &str = "/run/nix2gpu";
const REWRITTEN_SMI: &str = "/run/nix2gpu/bin/nvidia-smi";
const LINK_DIR: &str = "/run/opengl-driver/lib";
/// The image's loader configuration for the driver (nix2gpu's image ships such a file).
const IMAGE_CONF: &str = "/etc/ld.so.conf.d/nvidia.conf";
/// What either side may add to /etc/ld.so.conf.d.
const ADDED_CONF: [&str; 2] = ["/etc/ld.so.conf.d/nix2gpu-nvidia.conf", "/etc/ld.so.conf.d/nix-cuda.conf"];
const CACHE: &str = "/etc/ld.so.cache";
const AUX_CACHE: &str = "/var/cache/ldconfig/aux-cache";
const SCRIPT_DIR: &str = "/run/bench";

/// nix2gpu's startup.sh (fleek-sh/nix2gpu c6391d5, nix2gpu/startup-script/startup.sh), the
/// commands of its NVIDIA parts, with this bench's places as arguments: the driver directory,
/// the injected nvidia-smi, where the patched copy goes, the loader.
const STEPS: &str = r#"set -euo pipefail
dir=$1 smi=$2 copy=$3 interp=$4
if [ -d "$dir" ] && [ "$(ls -A "$dir"/*.so* 2>/dev/null)" ]; then
  for lib in "$dir"/*.so.*; do
    if [[ -f $lib ]]; then
      base=$(basename "$lib" | sed 's/\.so\..*//')
      ln -sf "$lib" "$dir/$base.so.1" 2>/dev/null || true
      ln -sf "$lib" "$dir/$base.so" 2>/dev/null || true
    fi
  done
  for cuda_path in /nix/store/*-cuda*/lib; do
    [ -d "$cuda_path" ] && echo "$cuda_path" >>/etc/ld.so.conf.d/nix-cuda.conf
  done
  ldconfig 2>/dev/null || true
  export LD_LIBRARY_PATH="$dir:/usr/lib64:/usr/lib:${LD_LIBRARY_PATH:-}"
fi
mkdir -p "${copy%/*}"
cp "$smi" "$copy"
([ -n "$interp" ] && patchelf --set-interpreter "$interp" "$copy" 2>/dev/null) || true
patchelf --set-rpath "$dir:/usr/lib64:/usr/lib" "$copy" 2>/dev/null || true
"#;

/// What nix2gpu's script does next: run nvidia-smi; without a GPU, print why (ldd and the
/// driver's libraries).
const CHECKS: &str = r#"if "$copy" &>/dev/null; then
  echo "GPU ready: $("$copy" --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
else
  echo "nvidia-smi not functional"
  ldd "$copy" 2>&1 | head -10 || true
  printf '%s\n' "$dir"/libnvidia* 2>/dev/null | head -5
fi
"#;

/// One measured thing, in the order of the table.
#[derive(Clone, Copy, PartialEq)]
enum Subject {
    /// nix2gpu's steps and its check of nvidia-smi.
    Theirs,
    /// nix2gpu's steps alone.
    TheirsSteps,
    Ours,
    /// The node's copy of nvidia-smi running `-L` by itself: one load of libnvidia-ml, which
    /// the issue's check of nvidia-smi makes whatever else the node does.
    OneNvmlLoad,
}

/// Every subject, in declaration order (so `subject as usize` indexes this).
const SUBJECTS: [Subject; 4] = [Subject::Theirs, Subject::TheirsSteps, Subject::Ours, Subject::OneNvmlLoad];

impl Subject {
    /// The key of its lines in the helper's output.
    fn key(self) -> &'static str {
        match self {
            Self::Theirs => "theirs",
            Self::TheirsSteps => "steps",
            Self::Ours => "ours",
            Self::OneNvmlLoad => "nvml",
        }
    }

    /// Whether a run ended as it should: nvidia-smi without a GPU exits 9 (NVML found, no
    /// driver); the others succeed.
    fn ended_well(self, status: std::process::ExitStatus) -> bool {
        match self {
            Self::OneNvmlLoad => status.code() == Some(9),
            Self::Theirs | Self::TheirsSteps | Self::Ours => status.success(),
        }
    }

    fn script(self) -> PathBuf {
        Path::new(SCRIPT_DIR).join(format!("{}.sh", self.key()))
    }

    fn command(self, ours: &Path) -> Command {
        let mut command = match self {
            Self::Ours => {
                let mut command = Command::new(ours);
                command.args(["builtin", "gpu", &node_settings()]);
                command
            }
            Self::Theirs | Self::TheirsSteps => {
                let mut command = Command::new("/bin/bash");
                command.arg(self.script()).args([DRIVER_DIR, INJECTED_SMI, REWRITTEN_SMI, LOADER]);
                command
            }
            Self::OneNvmlLoad => {
                let mut command = Command::new(REWRITTEN_SMI);
                command.arg("-L");
                command
            }
        };
        command
            .env_remove("LD_LIBRARY_PATH")
            .env("NVIDIA_VISIBLE_DEVICES", "all")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// Wall and CPU times of one subject.
struct Timings {
    wall: Samples,
    /// User and system time of the run's whole process tree, per run.
    cpu: Samples,
}

impl Timings {
    /// The mean CPU time: each run's is counted in whole clock ticks, too coarse for a median.
    fn cpu_mean(&self) -> Duration {
        let runs = self.cpu.as_slice();
        runs.iter().sum::<Duration>() / u32::try_from(runs.len().max(1)).unwrap_or(u32::MAX)
    }
}

pub struct Results {
    /// Indexed by `Subject as usize`.
    timings: [Timings; SUBJECTS.len()],
    libraries: usize,
    date: String,
    load: String,
    cpus: String,
}

impl Results {
    fn of(&self, subject: Subject) -> &Timings {
        &self.timings[subject as usize]
    }

    fn ratio(&self, subject: Subject) -> f64 {
        secs(self.of(subject).wall.median()) / secs(self.of(Subject::Ours).wall.median())
    }
}

/// Our binary's path when this process is the helper.
pub fn helper_request() -> Option<PathBuf> {
    env::var_os(HELPER_ENV).map(PathBuf::from)
}

/// Helper side, inside the namespace: places the driver, checks both sides' results once, then
/// times them and prints `KEY NS...` (wall) and `KEY-cpu NS...` lines, and `libraries N`.
pub fn serve(ours: &Path) -> Result<(), String> {
    let libraries = place_driver()?;
    let original_cache = fs::read(CACHE).ok();
    let fresh_state = || reset(original_cache.as_deref());
    // The state nvidia-smi alone runs in: the node's, made untimed.
    let state_for = |subject: Subject| {
        fresh_state()?;
        if subject == Subject::OneNvmlLoad { run(Subject::Ours, ours).map(drop) } else { Ok(()) }
    };
    for subject in SUBJECTS {
        state_for(subject)?;
        check(subject, ours)?;
    }
    let clock_ticks: u64 =
        report::stdout_of("getconf", &["CLK_TCK"])?.parse().map_err(|e| format!("getconf CLK_TCK: {e}"))?;
    let mut wall = [const { Vec::new() }; SUBJECTS.len()];
    let mut cpu = [const { Vec::new() }; SUBJECTS.len()];
    for round in 0..WARMUP_ROUNDS + RUNS {
        // Each round starts with another subject, so none always runs right after the same one.
        for turn in 0..SUBJECTS.len() {
            let index = (round + turn) % SUBJECTS.len();
            state_for(SUBJECTS[index])?;
            let before = children_cpu(clock_ticks)?;
            let elapsed = run(SUBJECTS[index], ours)?;
            let used = children_cpu(clock_ticks)?.saturating_sub(before);
            if round >= WARMUP_ROUNDS {
                wall[index].push(elapsed);
                cpu[index].push(used);
            }
        }
    }
    let mut lines = vec![format!("libraries {libraries}")];
    for ((subject, wall), cpu) in SUBJECTS.iter().zip(wall).zip(cpu) {
        lines.push(format!("{} {}", subject.key(), isolated::nanos(&Samples::new(wall))));
        lines.push(format!("{}-cpu {}", subject.key(), isolated::nanos(&Samples::new(cpu))));
    }
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Runs the helper in the namespace and reads its timings.
pub fn measure(ours: &Path) -> Result<Results, String> {
    let nvidia_root = nvidia::fetch()?;
    for (tool, package) in [("/usr/bin/patchelf", "patchelf"), ("/sbin/ldconfig", "libc-bin")] {
        if !Path::new(tool).is_file() {
            return Err(format!("{tool} is missing: apt-get install -y {package}"));
        }
    }
    eprintln!(
        "bench: the gpu node against nix2gpu's steps, {RUNS} runs each after {WARMUP_ROUNDS} untimed rounds, in a private mount namespace"
    );
    let date = report::stdout_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let cpus = report::stdout_of("nproc", &[])?;
    let exe = env::current_exe().map_err(|e| format!("cannot find the xtask executable: {e}"))?;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "sh", "-c", NAMESPACE, "sh"])
        .arg(exe)
        .args(["bench", "gpu"])
        .env(HELPER_ENV, ours)
        .env(NVIDIA_ROOT_ENV, nvidia_root)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run_timed(command, HELPER_LIMIT)?;
    if !run.status.success() {
        return Err(format!("the gpu helper failed ({}): {}", run.status, run.stderr.trim()));
    }
    let (timings, libraries) = parse(&run.stdout)?;
    Ok(Results { timings, libraries, date, load, cpus })
}

/// Reads back what `serve` printed.
fn parse(stdout: &str) -> Result<([Timings; SUBJECTS.len()], usize), String> {
    let mut libraries = None;
    let mut wall: [Option<Samples>; SUBJECTS.len()] = Default::default();
    let mut cpu: [Option<Samples>; SUBJECTS.len()] = Default::default();
    for line in stdout.lines() {
        let (key, values) = line.split_once(' ').unwrap_or((line, ""));
        if key == "libraries" {
            libraries = Some(values.parse().map_err(|e| format!("bad library count {values:?}: {e}"))?);
            continue;
        }
        let (subject, slot) = match key.strip_suffix("-cpu") {
            Some(subject) => (subject, &mut cpu),
            None => (key, &mut wall),
        };
        let index = SUBJECTS
            .iter()
            .position(|s| s.key() == subject)
            .ok_or_else(|| format!("the gpu helper printed an unexpected line: {line:?}"))?;
        slot[index] = Some(Samples::new(isolated::durations(values)?));
    }
    let missing = || format!("the gpu helper did not print the timings of every subject: {stdout}");
    let timings: Vec<Timings> = wall
        .into_iter()
        .zip(cpu)
        .map(|pair| match pair {
            (Some(wall), Some(cpu)) => Ok(Timings { wall, cpu }),
            _ => Err(missing()),
        })
        .collect::<Result<_, _>>()?;
    let timings = timings.try_into().map_err(|_| missing())?;
    let libraries = libraries.ok_or_else(|| format!("the gpu helper printed no library count: {stdout}"))?;
    Ok((timings, libraries))
}

/// The node's settings as `nix2gpu-init builtin gpu` takes them (the `GpuNode` struct in JSON):
/// the defaults the config gives, with the image's loader named.
fn node_settings() -> String {
    let library_dirs = ["/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", DRIVER_DIR];
    format!(
        r#"{{"wait":{{"secs":30,"nanos":0}},"patch_nvidia_smi":true,"loader":"{LOADER}","driver_link_dir":"{LINK_DIR}","library_dirs":["{}"],"bin_dir":"{NODE_DIR}/bin","report_file":"{NODE_DIR}/gpu.json","required":false}}"#,
        library_dirs.join(r#"",""#)
    )
}

/// Places the driver as the toolkit does, the image's loader and loader configuration, and
/// nix2gpu's scripts. Returns the number of driver libraries.
fn place_driver() -> Result<usize, String> {
    let unpacked =
        PathBuf::from(env::var_os(NVIDIA_ROOT_ENV).ok_or("the gpu helper was not told the driver's place")?);
    let libs = unpacked.join("usr/lib/x86_64-linux-gnu/nvidia/current");
    fs::create_dir_all(DRIVER_DIR).map_err(|e| format!("cannot create {DRIVER_DIR}: {e}"))?;
    let mut libraries = 0;
    for entry in fs::read_dir(&libs).map_err(|e| format!("cannot list {}: {e}", libs.display()))? {
        let file = entry.map_err(|e| format!("cannot list {}: {e}", libs.display()))?.path();
        // The versioned files only (`libcuda.so.535.309.01`): the links are the tools' work.
        if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            copy(&file, &Path::new(DRIVER_DIR).join(file.file_name().unwrap_or_default()))?;
            libraries += 1;
        }
    }
    let smi = Path::new(INJECTED_SMI);
    fs::create_dir_all(smi.parent().unwrap_or(Path::new("/")))
        .map_err(|e| format!("cannot create {}: {e}", smi.display()))?;
    copy(&unpacked.join(nvidia::NVIDIA_SMI), smi)?;
    let loader = Path::new(LOADER);
    fs::create_dir_all(loader.parent().unwrap_or(Path::new("/")))
        .map_err(|e| format!("cannot create {LOADER}: {e}"))?;
    symlink(SYSTEM_LOADER, loader).map_err(|e| format!("cannot link {LOADER}: {e}"))?;
    write(IMAGE_CONF, &format!("{DRIVER_DIR}\n"))?;
    fs::create_dir_all(SCRIPT_DIR).map_err(|e| format!("cannot create {SCRIPT_DIR}: {e}"))?;
    write(&Subject::Theirs.script().to_string_lossy(), &format!("{STEPS}{CHECKS}"))?;
    write(&Subject::TheirsSteps.script().to_string_lossy(), STEPS)?;
    Ok(libraries)
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &str, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
}

/// Back to the driver as injected: no links beside the libraries, nothing in /run from a
/// previous run, the image's /etc/ld.so.cache, no auxiliary cache, an empty /dev/nvidiactl
/// (libnvidia-ml replaces it with a device node when run as root).
fn reset(original_cache: Option<&[u8]>) -> Result<(), String> {
    for entry in fs::read_dir(DRIVER_DIR).map_err(|e| format!("cannot list {DRIVER_DIR}: {e}"))? {
        let path = entry.map_err(|e| format!("cannot list {DRIVER_DIR}: {e}"))?.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            remove(&path)?;
        }
    }
    for dir in [NODE_DIR, LINK_DIR] {
        if let Err(e) = fs::remove_dir_all(dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(format!("cannot remove {dir}: {e}"));
        }
    }
    for file in ADDED_CONF.iter().chain([&AUX_CACHE, &CONTROL_DEVICE]) {
        remove(Path::new(file))?;
    }
    match original_cache {
        Some(bytes) => fs::write(CACHE, bytes).map_err(|e| format!("cannot restore {CACHE}: {e}"))?,
        None => remove(Path::new(CACHE))?,
    }
    write(CONTROL_DEVICE, "")
}

fn remove(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// One timed run, from spawn to exit; it must end well.
fn run(subject: Subject, ours: &Path) -> Result<Duration, String> {
    let run = run_timed(subject.command(ours), RUN_LIMIT)?;
    if !subject.ended_well(run.status) {
        return Err(format!("{} failed ({}): {}{}", subject.key(), run.status, run.stdout, run.stderr));
    }
    Ok(run.elapsed)
}

/// One run of `subject`, whose results are then checked: the soname links, the loader cache
/// that lists the driver, nvidia-smi rewritten for the loader and running (exit 9: it found
/// NVML, no driver answers), and what each side says about the GPU.
fn check(subject: Subject, ours: &Path) -> Result<(), String> {
    let output = run_timed(subject.command(ours), RUN_LIMIT)?;
    let said = format!("{}{}", output.stdout, output.stderr);
    if !subject.ended_well(output.status) {
        return Err(format!("{} failed ({}): {said}", subject.key(), output.status));
    }
    let failed = |what: &str| Err(format!("{}: {what}; it said: {said}", subject.key()));
    let listing = report::stdout_of("/sbin/ldconfig", &["-p", "-C", CACHE])?;
    for soname in ["libnvidia-ml.so.1", "libcuda.so.1"] {
        let link = Path::new(DRIVER_DIR).join(soname);
        if !fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            return failed(&format!("no link {}", link.display()));
        }
        if !listing.contains(&format!("{soname} (libc6,x86-64) => {}", link.display())) {
            return failed(&format!("{CACHE} does not list {soname}: {listing}"));
        }
    }
    let interpreter = report::stdout_of(&ours.to_string_lossy(), &["print-interpreter", REWRITTEN_SMI])?;
    if interpreter != LOADER {
        return failed(&format!("{REWRITTEN_SMI} has the interpreter {interpreter:?}"));
    }
    let smi = Command::new(REWRITTEN_SMI).arg("-L").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if smi.as_ref().ok().and_then(|status| status.code()) != Some(9) {
        return failed(&format!("{REWRITTEN_SMI} -L did not exit 9 (NVML found, no driver): {smi:?}"));
    }
    let verdict = match subject {
        Subject::Ours => fs::read_to_string(Path::new(NODE_DIR).join("gpu.json"))
            .is_ok_and(|report| report.contains(r#""verdict": "driver_not_answering""#)),
        Subject::Theirs => output.stdout.contains("nvidia-smi not functional"),
        Subject::TheirsSteps | Subject::OneNvmlLoad => true,
    };
    if !verdict {
        return failed("no verdict of a driver that does not answer");
    }
    Ok(())
}

/// CPU time (user and system) of the children this process has waited for, all of their
/// descendants included: `cutime` and `cstime` of /proc/self/stat.
fn children_cpu(clock_ticks: u64) -> Result<Duration, String> {
    let stat =
        fs::read_to_string("/proc/self/stat").map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of the whole line, 14 and 15 after the name.
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    match (ticks(13), ticks(14)) {
        (Some(user), Some(system)) => {
            Ok(Duration::from_nanos((user + system) * 1_000_000_000 / clock_ticks.max(1)))
        }
        _ => Err(format!("cannot read cutime and cstime from /proc/self/stat: {stat}")),
    }
}

/// This part of BENCHMARKS.md.
pub fn render(results: &Results) -> String {
    let ours = results.of(Subject::Ours);
    let mut table = Table::new(&[
        "subject",
        "wall median",
        "wall p90",
        "wall min / max",
        "CPU mean (user + sys)",
        "theirs/ours (wall median)",
    ]);
    for (subject, name) in [
        (Subject::Theirs, "nix2gpu's steps and its nvidia-smi check (bash)"),
        (Subject::TheirsSteps, "nix2gpu's steps alone: links, ldconfig, cp + patchelf (bash)"),
        (Subject::Ours, "`nix2gpu-init builtin gpu` (the whole node)"),
        (Subject::OneNvmlLoad, "the node's copy of nvidia-smi, `-L` alone (one load of NVML)"),
    ] {
        let timings = results.of(subject);
        table.row(vec![
            name.into(),
            millis(timings.wall.median()),
            millis(timings.wall.percentile(90)),
            format!("{} / {}", millis(timings.wall.min()), millis(timings.wall.max())),
            millis(timings.cpu_mean()),
            match subject {
                Subject::Theirs | Subject::TheirsSteps => format!("{:.2}x", results.ratio(subject)),
                Subject::Ours | Subject::OneNvmlLoad => "-".into(),
            },
        ]);
    }
    let ratio = results.ratio(Subject::Theirs);
    let mut targets = Table::new(&["target", "threshold", "measured", "result"]);
    targets.row(report::target(
        "nix2gpu's steps and check / the gpu node (wall, medians)".into(),
        format!(">= {MIN_RATIO:.1}x"),
        Some(format!("{ratio:.2}x")),
        ratio >= MIN_RATIO,
    ));
    let notes = notes(results, ours);
    format!(
        "{HEADING}\n\n\
         The built-in gpu node (`nix2gpu-init builtin gpu SETTINGS`, as the init starts it) against \
         the same work done with the shell commands of nix2gpu's startup script, on NVIDIA's \
         user space from Debian's packages ({} driver libraries, nvidia-smi) placed as the \
         toolkit places it, without a GPU. Wall time from spawn to exit, {RUNS} runs per \
         subject after {WARMUP_ROUNDS} untimed rounds, interleaved; every run starts from the \
         same freshly injected state.\n\n{}\n## Target (GPU node)\n\n{}\n## Notes (GPU node)\n\n{}\n",
        results.libraries,
        table.render(),
        targets.render(),
        notes.join("\n")
    )
}

fn notes(results: &Results, ours: &Timings) -> Vec<String> {
    let nvml_load = results.of(Subject::OneNvmlLoad).wall.median();
    let budget = results.of(Subject::Theirs).wall.median() / 5;
    let notes = [
        format!(
            "Measured on {}, load average {} at the start; {}; {}; {}; {}; nvidia-smi and \
             libnvidia-ml {} from Debian's non-free packages; ours: {}.",
            results.date,
            results.load,
            report::package_version(Some("bash")),
            report::package_version(Some("coreutils")),
            report::package_version(Some("libc-bin")),
            report::package_version(Some("patchelf")),
            nvidia::version().unwrap_or_else(|| "(version unknown)".into()),
            report::package_version(None),
        ),
        format!(
            "The state each run starts from, in a private mount namespace (the bench runs itself \
             again there): the versioned libraries in {DRIVER_DIR} and nvidia-smi in \
             {INJECTED_SMI} (read-only /usr elsewhere, so ldconfig cannot touch the machine's \
             library links), an empty {CONTROL_DEVICE} in a private /dev, /etc an overlay with \
             {IMAGE_CONF} naming the driver directory (nix2gpu's image ships such a file) and the \
             machine's /etc/ld.so.cache, /run and /var/cache empty tmpfs, the image's loader at \
             {LOADER} (a link to {SYSTEM_LOADER}). Whatever a run made (links, caches, \
             /run/nix2gpu, /run/opengl-driver) is removed before the next, untimed."
        ),
        format!(
            "nix2gpu's steps (its startup.sh at fleek-sh/nix2gpu c6391d5, run by bash as there): \
             for every `*.so.*` in the driver directory, `basename | sed` and two `ln -sf` (the \
             `.so.1` and `.so` links); the `/nix/store/*-cuda*/lib` loop (no match here); plain \
             `ldconfig` (it reads /etc/ld.so.conf and scans the same directories as ours, the \
             {} entries of the machine's /usr/lib/x86_64-linux-gnu included, and writes its auxiliary cache, absent \
             at each start as in a new container); `cp` of nvidia-smi to {REWRITTEN_SMI}, then \
             `patchelf --set-interpreter` and `patchelf --set-rpath` on the copy. Its check (first \
             row only): run nvidia-smi, which fails without a GPU, so, as nix2gpu does then, \
             `ldd nvidia-smi | head -10` and a listing of the driver's libraries.",
            system_libraries()
        ),
        "Left out of nix2gpu's side, all in its favour: its `gum log` line before each step (a \
         process each); `find /nix/store -name ld-linux-x86-64.so.2` to choose the loader (a \
         walk of the whole store; the bench gives the loader, as ours is given it in the \
         settings); the `nvidia-smi --version` that decides whether to patch (in an image \
         without nvidia-smi's loader it is a failed exec; here the machine's loader exists, so \
         it would run the whole program). nix2gpu patches /usr/bin/nvidia-smi in place; the \
         toolkit mounts it read-only, so the script patches a copy, as ours does."
            .into(),
        "Ours, the whole node: finds the driver (the default library directories and the \
         control device), links each driver library by its DT_SONAME beside it and in \
         /run/opengl-driver/lib, writes nvidia-smi's copy with the loader and a RUNPATH \
         (synced, renamed), then loads NVML in a child (`gpu-probe --child`) for the verdict and \
         runs the copy's `nvidia-smi -L` while it writes /etc/ld.so.conf.d/nix2gpu-nvidia.conf \
         and /etc/ld.so.cache (its own writer, same directories as ldconfig, synced), and \
         writes its report for `status`. Beyond nix2gpu's steps it runs NVML a second time (the \
         probe child) and writes the report; nix2gpu's check runs ldd, which ours does not."
            .into(),
        "Both sides' results were checked once before timing: the soname links, `ldconfig -p` \
         listing libnvidia-ml.so.1 and libcuda.so.1 in the driver directory, the copy's \
         interpreter read back, the copy running (`nvidia-smi -L` exits 9: NVML found, no \
         driver), and each side's verdict that no driver answers."
            .into(),
        format!(
            "CPU is user plus system time of the run's whole process tree, from the bench's \
             `cutime` and `cstime` (counted in clock ticks, hence the mean): ours {} against \
             nix2gpu's {}. Ours runs the NVML child, `nvidia-smi -L` and its cache writer at the \
             same time (the machine has {} CPUs), so its wall time is below the sum of its parts; \
             each load of libnvidia-ml (nvidia-smi, the NVML child) is a large part of either \
             side's CPU time, mostly page faults in the 12 MB NVML clears when it loads.",
            millis(ours.cpu_mean()),
            millis(results.of(Subject::Theirs).cpu_mean()),
            results.cpus,
        ),
        format!(
            "The last row is the floor of the check the issue asks for (run the rewritten \
             nvidia-smi): the node's copy running `-L` alone, in the state the node leaves (made \
             untimed before each run). That one load of libnvidia-ml takes {}, {:.0}% of the {} \
             the target allows the whole node (a fifth of nix2gpu's time); the node loads NVML a \
             second time for its probe.",
            millis(nvml_load),
            100.0 * secs(nvml_load) / secs(budget),
            millis(budget),
        ),
        "The machine may be shared (others compiling), so the numbers can be noisy; the subjects \
         are interleaved, each round starting with another, so drift hits all alike."
            .into(),
    ];
    notes.iter().map(|note| format!("- {note}")).collect()
}

/// How many files the machine's multiarch library directory holds, for the notes.
fn system_libraries() -> usize {
    fs::read_dir("/usr/lib/x86_64-linux-gnu").map_or(0, |entries| entries.count())
}

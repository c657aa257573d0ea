//! `nix2gpu-init set-interpreter` against Debian's patchelf, on NVIDIA's real nvidia-smi (the
//! binary the init rewrites at boot): each run gets a fresh copy and gives it a loader path as
//! long as a Nix store path, in place. Both tools run as processes, interleaved round-robin
//! with a `/bin/true` floor. The work happens on a tmpfs, like the init's copy in /run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::measure::{Samples, succeeded};
use super::process::run_timed;
use super::report::{Table, micros, package_version, ratio, secs, stdout_of, target};
use crate::nvidia;

/// Timed runs per tool, after the warm-up rounds.
const RUNS: usize = 200;
const WARMUP_ROUNDS: usize = 5;
/// Bound on one run.
const LIMIT: Duration = Duration::from_secs(10);
/// patchelf's time over ours, above the floor, must be at least this.
const MIN_RATIO: f64 = 5.0;
/// The heading that starts this part of BENCHMARKS.md (`bench elf` replaces from here on).
pub const HEADING: &str = "# ELF interpreter rewrite";
/// A tmpfs for the copies, where there is one.
const TMPFS: &str = "/dev/shm";
const SYSTEM_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Sorted wall times of the floor, ours and patchelf, and facts for the notes.
pub struct Results {
    floor: Samples,
    /// `std::fs::copy` of nvidia-smi into the work directory, in the bench process.
    copying: Samples,
    /// `nix2gpu-init --version`: our binary's start and exit alone.
    start: Samples,
    /// Whether our binary is position-independent (ELF type ET_DYN: static-pie).
    position_independent: Option<bool>,
    ours: Samples,
    patchelf: Samples,
    loader_length: usize,
    file_size: u64,
    work_dir: String,
    date: String,
    load: String,
}

/// A scratch directory, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn measure(ours: &Path) -> Result<Results, String> {
    let smi = nvidia::fetch()?.join(nvidia::NVIDIA_SMI);
    let patchelf = Path::new("/usr/bin/patchelf");
    if !patchelf.is_file() {
        return Err(format!("{} is missing: apt-get install -y patchelf", patchelf.display()));
    }
    let dir = work_dir()?;
    let loader = long_loader(&dir.0)?;
    let copy = dir.0.join("nvidia-smi");
    eprintln!(
        "bench: set-interpreter against patchelf on nvidia-smi, {RUNS} runs each, in {}",
        dir.0.display()
    );
    let date = stdout_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let tools = [
        Tool { name: "nix2gpu-init", program: ours, args: vec!["set-interpreter", "--interpreter", &loader] },
        Tool { name: "patchelf", program: patchelf, args: vec!["--set-interpreter", &loader] },
    ];
    let mut samples: [Vec<Duration>; 5] = Default::default();
    for round in 0..WARMUP_ROUNDS + RUNS {
        let floor = succeeded(run_timed(quiet(Command::new("/bin/true")), LIMIT)?, "/bin/true")?;
        let mut version = Command::new(ours);
        version.arg("--version");
        let started = succeeded(run_timed(quiet(version), LIMIT)?, "nix2gpu-init --version")?;
        let mut times = vec![floor.elapsed, started.elapsed];
        for tool in &tools {
            // The fresh copy each tool starts from, timed once a round: what writing a new file
            // of this size costs by itself.
            let start = Instant::now();
            fs::copy(&smi, &copy).map_err(|e| format!("cannot copy {}: {e}", smi.display()))?;
            if times.len() == 2 {
                times.push(start.elapsed());
            }
            times.push(succeeded(run_timed(tool.command(&copy), LIMIT)?, tool.name)?.elapsed);
            if round == 0 {
                check_result(ours, &copy, &loader, tool.name)?;
            }
        }
        if round >= WARMUP_ROUNDS {
            samples.iter_mut().zip(times).for_each(|(samples, time)| samples.push(time));
        }
    }
    let pie = position_independent(ours);
    let [floor, start, copying, ours, patchelf] = samples.map(Samples::new);
    let work_dir = dir.0.parent().map_or_else(String::new, |p| p.display().to_string());
    let file_size = fs::metadata(&smi).map_or(0, |metadata| metadata.len());
    Ok(Results {
        floor,
        copying,
        start,
        position_independent: pie,
        ours,
        patchelf,
        loader_length: loader.len(),
        file_size,
        work_dir,
        date,
        load,
    })
}

/// Whether the ELF file at `path` is position-independent (type ET_DYN); None if unreadable.
fn position_independent(path: &Path) -> Option<bool> {
    let bytes = fs::read(path).ok()?;
    let kind = u16::from_le_bytes(bytes.get(16..18)?.try_into().ok()?);
    Some(kind == 3)
}

/// The note on our start alone: how far from the floor, and what kind of binary it is.
fn start_note(start: Duration, floor: Duration, position_independent: Option<bool>) -> String {
    let (distance, side) = if start >= floor { (start - floor, "above") } else { (floor - start, "below") };
    let kind = match position_independent {
        Some(true) => {
            ": it is a static-pie binary, which relocates itself at every start (dirtying the pages of its relocated data)"
        }
        Some(false) => {
            ": it is a static binary that is not position-independent, so nothing is relocated at start"
        }
        None => "",
    };
    format!("Our binary's start and exit alone (second row) is {} {side} the floor{kind}.", micros(distance))
}

/// One tool: `program ARGS... FILE`.
struct Tool<'a> {
    name: &'static str,
    program: &'a Path,
    args: Vec<&'a str>,
}

impl Tool<'_> {
    fn command(&self, file: &Path) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.args).arg(file);
        quiet(command)
    }
}

/// No stdin, output discarded.
fn quiet(mut command: Command) -> Command {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// The copies go to a tmpfs like /run, where the init writes its copy of nvidia-smi; without
/// one, to target/.
fn work_dir() -> Result<WorkDir, String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let tmpfs = mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&TMPFS) && fields.get(2) == Some(&"tmpfs")
    });
    let base = if tmpfs { PathBuf::from(TMPFS) } else { crate::root().join("target/bench") };
    let dir = base.join(format!("nix2gpu-bench-elf-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(WorkDir(dir))
}

/// A symlink to the system loader at a path shaped like a Nix store loader (over 100 bytes),
/// far longer than the 28 bytes of nvidia-smi's `.interp`.
fn long_loader(dir: &Path) -> Result<String, String> {
    let lib = dir.join("nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-2.40-66/lib");
    fs::create_dir_all(&lib).map_err(|e| format!("cannot create {}: {e}", lib.display()))?;
    let link = lib.join("ld-linux-x86-64.so.2");
    std::os::unix::fs::symlink(SYSTEM_LOADER, &link)
        .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    Ok(link.display().to_string())
}

/// The rewritten copy names `loader` and runs: nvidia-smi exits 12 (no libnvidia-ml found),
/// which it can only do once the loader has started it.
fn check_result(ours: &Path, copy: &Path, loader: &str, name: &str) -> Result<(), String> {
    let printed = Command::new(ours).arg("print-interpreter").arg(copy).output();
    let printed = printed.map_err(|e| format!("cannot run print-interpreter: {e}"))?;
    if String::from_utf8_lossy(&printed.stdout).trim() != loader {
        return Err(format!("{name} did not set the interpreter: {printed:?}"));
    }
    let status = Command::new(copy).stdout(Stdio::null()).status();
    match status.map(|status| status.code()) {
        Ok(Some(12)) => Ok(()),
        other => Err(format!("nvidia-smi rewritten by {name} did not run as expected (exit 12): {other:?}")),
    }
}

/// This part of BENCHMARKS.md.
pub fn render(results: &Results) -> String {
    let floor = results.floor.median();
    let above = |samples: &Samples| samples.median().saturating_sub(floor);
    let mut table = Table::new(&[
        "tool",
        "median",
        "p90",
        "median - floor",
        "patchelf/tool (median)",
        "patchelf/tool (above floor)",
    ]);
    table.row(vec![
        "`/bin/true` (floor)".into(),
        micros(floor),
        micros(results.floor.percentile(90)),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "`nix2gpu-init --version` (our start and exit alone)".into(),
        micros(results.start.median()),
        micros(results.start.percentile(90)),
        micros(above(&results.start)),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "copying the file alone (`std::fs::copy`, no process)".into(),
        micros(results.copying.median()),
        micros(results.copying.percentile(90)),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    for (name, samples) in
        [("nix2gpu-init set-interpreter", &results.ours), ("patchelf --set-interpreter", &results.patchelf)]
    {
        table.row(vec![
            name.into(),
            micros(samples.median()),
            micros(samples.percentile(90)),
            micros(above(samples)),
            ratio(secs(results.patchelf.median()), secs(samples.median())),
            ratio(secs(above(&results.patchelf)), secs(above(samples))),
        ]);
    }
    let work = secs(above(&results.patchelf)) / secs(above(&results.ours)).max(f64::MIN_POSITIVE);
    let mut targets = Table::new(&["target", "threshold", "measured", "result"]);
    targets.row(target(
        "set-interpreter vs patchelf on nvidia-smi, above the floor".into(),
        format!(">= {MIN_RATIO:.1}x"),
        Some(format!("{work:.2}x")),
        work >= MIN_RATIO,
    ));
    let notes = [
        format!(
            "Measured on {}, load average {} at the start; {}; nvidia-smi {} from Debian's \
             non-free packages (ET_EXEC, `.interp` of 28 bytes).",
            results.date,
            results.load,
            package_version(Some("patchelf")),
            nvidia::version().unwrap_or_else(|| "(version unknown)".into()),
        ),
        format!(
            "Each run rewrites a fresh copy (made before the timed run) in place, to a {}-byte loader path (a \
             symlink to {SYSTEM_LOADER}), in {}: a tmpfs, like the init's copy in /run. Ours \
             copies the file in the kernel, writes the few changed headers plus the appended \
             path, fsyncs and renames over the original; patchelf rewrites the file in place.",
            results.loader_length, results.work_dir
        ),
        "The first copy of each tool is checked: `print-interpreter` reads the new path back and \
         the rewritten nvidia-smi runs (exit 12: the loader started it, no libnvidia-ml here)."
            .into(),
        "The target compares the time above the `/bin/true` floor (exec and exit of any process), \
         i.e. the rewrite itself: the init calls it in-process at boot and pays no exec. Whole \
         process times are in the table too."
            .into(),
        format!(
            "Most of ours above the floor is writing the new file: copying {} bytes into a fresh \
             tmpfs file costs {} by itself (third row; both tools write a whole new file, and both \
             free the pages of the file they replace). Ours keeps that copy so the file is \
             replaced atomically (rename), never rewritten in place.",
            results.file_size,
            micros(results.copying.median())
        ),
        start_note(results.start.median(), floor, results.position_independent),
    ];
    let notes: Vec<String> = notes.iter().map(|note| format!("- {note}")).collect();
    format!(
        "{HEADING}\n\n`nix2gpu-init set-interpreter` against patchelf on NVIDIA's nvidia-smi, {RUNS} \
         runs each after {WARMUP_ROUNDS} warm-up rounds, interleaved round-robin with the floor.\n\n{}\n\
         ## Target (ELF)\n\n{}\n## Notes (ELF)\n\n{}\n",
        table.render(),
        targets.render(),
        notes.join("\n")
    )
}

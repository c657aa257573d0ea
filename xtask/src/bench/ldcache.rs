//! ld.so.cache: `nix2gpu-init ldcache` against glibc's `ldconfig`, building the cache for one
//! directory of 1,000 libraries, in the same run, alternating.
//!
//! The libraries are copies of one gcc-built library (fixtures/bench/ldcache_lib.c) linked with
//! a placeholder soname that each copy overwrites with its own, so every copy is a valid ELF
//! object with a distinct DT_SONAME; each has its soname link, as in a distribution's library
//! directory. Before any timing, both caches are listed with `ldconfig -p` and must hold the
//! same entries.
//!
//! Measured twice: with the directory and the caches on target/ (the disk: each run ends with
//! the fsync both tools do, whose cost is the disk's), and on a tmpfs in a private mount
//! namespace (the bench re-executes itself there), where the time is the tools' own work.
//!
//! Beside them runs a floor (fixtures/bench/ldcache_floor.c): the system calls ours makes for
//! the directory and nothing else, on one thread, so that the report shows how much of a
//! run is the kernel's.

use std::env;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::isolated;
use super::measure::{self, Samples};
use super::process::run_timed;
use super::report::{self, Table, millis, secs};
use crate::root;

/// Libraries in the directory.
pub const LIBRARIES: usize = 1000;
/// Timed runs per tool and place, alternating between the tools.
const RUNS: usize = 21;
/// Untimed runs of each tool first, so the page cache holds the directory.
const WARMUP_RUNS: usize = 3;
/// ldconfig time over ours must be at least this (median, on tmpfs).
const MIN_RATIO: f64 = 5.0;
/// Bound on one run of either tool.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Bound on the whole tmpfs helper.
const HELPER_LIMIT: Duration = Duration::from_secs(600);

/// Where the directory is built and the disk runs happen, relative to the workspace root.
const WORK_DIR: &str = "target/bench/ldcache";
/// The soname the template library is linked with; each copy overwrites the X's.
const PLACEHOLDER: &[u8] = b"libbench-XXXXXX.so.1\0";
const LDCONFIG: &str = "/sbin/ldconfig";
/// Set (to our binary's path) on the copy of xtask that measures on tmpfs.
const HELPER_ENV: &str = "NIX2GPU_BENCH_LDCACHE_OURS";
/// The floor program, built into the work directory.
const FLOOR: &str = "floor";

/// Timings of both tools and the floor at one place.
pub struct Timings {
    ours: Samples,
    ldconfig: Samples,
    floor: Samples,
}

impl Timings {
    fn ratio(&self) -> f64 {
        secs(self.ldconfig.median()) / secs(self.ours.median())
    }

    /// The most any program making ours' system calls on one CPU could reach.
    fn floor_ratio(&self) -> f64 {
        secs(self.ldconfig.median()) / secs(self.floor.median())
    }
}

/// Both places' timings.
pub struct Results {
    disk: Timings,
    tmpfs: Timings,
}

/// Our binary's path when this process is the tmpfs helper.
pub fn helper_request() -> Option<PathBuf> {
    env::var_os(HELPER_ENV).map(PathBuf::from)
}

/// Helper side: measures in the tmpfs the parent mounted over `tmpfs_dir()` and prints the
/// timings as `ours NS...`, `ldconfig NS...` and `floor NS...`.
pub fn serve(ours: &Path) -> Result<(), String> {
    let work = tmpfs_dir();
    copy_libraries(&work_dir().join("root/libs"), &work.join("root/libs"))?;
    let timings = measure_in(&work, ours)?;
    println!(
        "ours {}\nldconfig {}\nfloor {}",
        isolated::nanos(&timings.ours),
        isolated::nanos(&timings.ldconfig),
        isolated::nanos(&timings.floor)
    );
    Ok(())
}

/// Builds the directory, then measures on the disk and on tmpfs.
pub fn measure(ours: &Path) -> Result<Results, String> {
    eprintln!("bench: ld.so.cache for {LIBRARIES} libraries, ours against ldconfig, {RUNS} runs each");
    build_libraries(&work_dir().join("root/libs"))?;
    build_floor()?;
    let disk = measure_in(&work_dir(), ours)?;
    let tmpfs = measure_on_tmpfs(ours)?;
    Ok(Results { disk, tmpfs })
}

/// The report section.
pub fn render(results: &Results) -> String {
    let mut table = Table::new(&[
        "directory and cache on",
        "ldconfig median",
        "ours median",
        "floor median",
        "ldconfig min / max",
        "ours min / max",
        "ldconfig/ours (median)",
        "ldconfig/floor (median)",
    ]);
    for (place, timings) in [("target/ (disk)", &results.disk), ("tmpfs", &results.tmpfs)] {
        table.row(vec![
            place.into(),
            millis(timings.ldconfig.median()),
            millis(timings.ours.median()),
            millis(timings.floor.median()),
            format!("{} / {}", millis(timings.ldconfig.min()), millis(timings.ldconfig.max())),
            format!("{} / {}", millis(timings.ours.min()), millis(timings.ours.max())),
            format!("{:.2}x", timings.ratio()),
            format!("{:.2}x", timings.floor_ratio()),
        ]);
    }
    let ratio = results.tmpfs.ratio();
    let mut targets = Table::new(&["target", "threshold", "measured", "result"]);
    targets.row(report::target(
        format!("ldconfig time / ours, {LIBRARIES} libraries, on tmpfs"),
        format!(">= {MIN_RATIO:.2}x (median)"),
        Some(format!("{ratio:.2}x")),
        ratio >= MIN_RATIO,
    ));
    format!(
        "# ld.so.cache\n\n\
         `nix2gpu-init ldcache` against glibc's `ldconfig` ({}) building the cache for one \
         directory of {LIBRARIES} libraries: copies of one gcc-built library \
         (fixtures/bench/ldcache_lib.c), each with its own soname, and the soname link to each \
         ({} directory entries, {LIBRARIES} cache entries). Both caches were listed with \
         `ldconfig -p` before timing and hold the same entries. Wall time from spawn to exit, \
         {RUNS} runs per tool and place after {WARMUP_RUNS} untimed ones, alternating.\n\n{}\n\
         ## Targets (ld.so.cache)\n\n{}\n\
         ## Notes (ld.so.cache)\n\n\
         - ldconfig runs as `ldconfig -r ROOT -C /ld.so.cache -f /ld.so.conf -X -i /libs`: \
         `-r` confines it to ROOT, since it always adds the system library directories (absent \
         there); no configuration file; `-X`: no symlink updates (ours creates none); `-i`: no \
         auxiliary cache (it still reads each library once, like ours). Ours runs as \
         `nix2gpu-init ldcache --output ROOT/ours.cache ROOT/libs`, so its paths carry the ROOT \
         prefix, which the comparison of the listings strips.\n\
         - Both write a temporary file, fsync it and rename it over the cache. On the disk that \
         fsync is part of every run of both; on tmpfs it costs nothing, so that row compares the \
         work itself: listing the directory, reading each library's headers, sorting, writing.\n\
         - Both are bound by system calls. For each library and its link, ours makes five \
         (open relative to the directory, a read of the first page and one of the dynamic \
         section, close; readlink for the link), spread over up to four threads, one per CPU \
         ({cpus} here); ldconfig makes about nine (stat calls, open, mmap, munmap, close) on \
         one thread and takes the page faults of its mapping. Ours gains from its threads only \
         as far as the other CPUs are idle.\n\
         - The floor (fixtures/bench/ldcache_floor.c, built here with `gcc -O2 -static`) lists \
         the directory and makes the system calls ours makes for it, on one thread, and nothing \
         else: no cache is built or written. ldconfig/floor is the most that any program \
         reading the libraries with these calls on one CPU could reach; the target needs \
         {MIN_RATIO:.2}x, the floor reaches {floor:.2}x on tmpfs. Ours is {over:.0}% above it.\n\
         - The tmpfs runs happen in a private mount namespace (`unshare --mount`, a tmpfs over \
         {WORK_DIR}/tmpfs, the directory copied there), which the bench enters by running itself \
         again.\n\
         - The machine may be shared (others compiling), so the numbers can be noisy; the two \
         tools alternate, so drift hits both alike.\n",
        report::package_version(Some("libc-bin")),
        2 * LIBRARIES,
        table.render(),
        targets.render(),
        cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get()),
        floor = results.tmpfs.floor_ratio(),
        over = 100.0 * (secs(results.tmpfs.ours.median()) / secs(results.tmpfs.floor.median()) - 1.0),
    )
}

fn work_dir() -> PathBuf {
    root().join(WORK_DIR)
}

fn tmpfs_dir() -> PathBuf {
    work_dir().join("tmpfs")
}

/// Writes the libraries and their soname links into `dir`, afresh.
fn build_libraries(dir: &Path) -> Result<(), String> {
    let template = build_template()?;
    let at = placeholder_offset(&template)?;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for index in 0..LIBRARIES {
        let number = format!("{index:06}");
        let mut library = template.clone();
        library[at + 9..at + 15].copy_from_slice(number.as_bytes());
        let file = format!("libbench-{number}.so.1.0.0");
        fs::write(dir.join(&file), &library).map_err(|e| format!("cannot write {file}: {e}"))?;
        let link = dir.join(format!("libbench-{number}.so.1"));
        symlink(&file, &link).map_err(|e| format!("cannot create {}: {e}", link.display()))?;
    }
    Ok(())
}

/// The template library, compiled with the placeholder soname.
fn build_template() -> Result<Vec<u8>, String> {
    let output = work_dir().join("template.so");
    fs::create_dir_all(work_dir()).map_err(|e| format!("cannot create {WORK_DIR}: {e}"))?;
    let soname = String::from_utf8_lossy(&PLACEHOLDER[..PLACEHOLDER.len() - 1]).into_owned();
    crate::run(
        Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC"])
            .arg(format!("-Wl,-soname,{soname}"))
            .arg("-o")
            .arg(&output)
            .arg(root().join("fixtures/bench/ldcache_lib.c")),
    )
    .map_err(|e| format!("{e} (is gcc installed? apt-get install -y gcc)"))?;
    fs::read(&output).map_err(|e| format!("cannot read {}: {e}", output.display()))
}

/// The floor program, compiled into the work directory.
fn build_floor() -> Result<(), String> {
    measure::compile("fixtures/bench/ldcache_floor.c", &work_dir().join(FLOOR), &["-static"])
}

/// Where the placeholder soname is; it must occur exactly once, in the dynamic string table.
fn placeholder_offset(template: &[u8]) -> Result<usize, String> {
    let found: Vec<usize> = template
        .windows(PLACEHOLDER.len())
        .enumerate()
        .filter(|(_, w)| *w == PLACEHOLDER)
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [at] => Ok(*at),
        _ => Err(format!("the template library holds its soname {} times, not once", found.len())),
    }
}

/// Copies the libraries (files and links) into a new directory.
fn copy_libraries(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("cannot list {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let copied = match fs::read_link(&source) {
            Ok(link) => symlink(link, &target),
            Err(_) => fs::copy(&source, &target).map(drop),
        };
        copied.map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
    }
    Ok(())
}

/// Checks that both tools build the same cache for `work`/root/libs, then times them.
fn measure_in(work: &Path, ours: &Path) -> Result<Timings, String> {
    let root = work.join("root");
    same_entries(&root, ours)?;
    floor_reads_every_library(&root)?;
    let (mut ours_times, mut ldconfig_times, mut floor_times) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARMUP_RUNS + RUNS {
        let ldconfig = timed(ldconfig_command(&root), "ldconfig")?;
        let ours = timed(ours_command(ours, &root), "nix2gpu-init ldcache")?;
        let floor = timed(floor_command(&root), "the floor")?;
        if round >= WARMUP_RUNS {
            ldconfig_times.push(ldconfig);
            ours_times.push(ours);
            floor_times.push(floor);
        }
    }
    Ok(Timings {
        ours: Samples::new(ours_times),
        ldconfig: Samples::new(ldconfig_times),
        floor: Samples::new(floor_times),
    })
}

fn ldconfig_command(root: &Path) -> Command {
    let mut command = Command::new(LDCONFIG);
    command.arg("-r").arg(root).args(["-C", "/ld.so.cache", "-f", "/ld.so.conf", "-X", "-i", "/libs"]);
    command
}

fn ours_command(ours: &Path, root: &Path) -> Command {
    let mut command = Command::new(ours);
    command.args(["ldcache", "--output"]).arg(root.join("ours.cache")).arg(root.join("libs"));
    command
}

fn floor_command(root: &Path) -> Command {
    let mut command = Command::new(work_dir().join(FLOOR));
    command.arg(root.join("libs"));
    command
}

/// The floor must have read every library's dynamic section, or it measured less than ours does.
fn floor_reads_every_library(root: &Path) -> Result<(), String> {
    let output = floor_command(root).output().map_err(|e| format!("cannot run the floor: {e}"))?;
    let read = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || read.trim() != LIBRARIES.to_string() {
        return Err(format!("the floor read {} libraries, not {LIBRARIES} ({})", read.trim(), output.status));
    }
    Ok(())
}

fn timed(mut command: Command, name: &str) -> Result<Duration, String> {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).env_remove("LD_LIBRARY_PATH");
    let run = run_timed(command, RUN_LIMIT)?;
    if !run.status.success() {
        return Err(format!("{name} failed ({}): {}", run.status, run.stderr.trim()));
    }
    Ok(run.elapsed)
}

/// Runs both once and compares what `ldconfig -p` lists in their caches.
fn same_entries(root: &Path, ours: &Path) -> Result<(), String> {
    timed(ldconfig_command(root), "ldconfig")?;
    timed(ours_command(ours, root), "nix2gpu-init ldcache")?;
    let theirs = entries(&root.join("ld.so.cache"), "/")?;
    let prefix = format!("{}/", root.display());
    let ours = entries(&root.join("ours.cache"), &prefix)?;
    if theirs.len() != LIBRARIES || ours != theirs {
        let differing = theirs.iter().zip(&ours).find(|(a, b)| a != b);
        return Err(format!(
            "the caches differ: ldconfig has {} entries, ours {}; first difference: {differing:?}",
            theirs.len(),
            ours.len()
        ));
    }
    Ok(())
}

/// The entry lines of `ldconfig -p -C cache`, with the paths' `prefix` replaced by `/`.
fn entries(cache: &Path, prefix: &str) -> Result<Vec<String>, String> {
    let output = Command::new(LDCONFIG)
        .arg("-p")
        .arg("-C")
        .arg(cache)
        .output()
        .map_err(|e| format!("cannot run {LDCONFIG} -p: {e}"))?;
    if !output.status.success() {
        return Err(format!("ldconfig -p -C {} failed: {}", cache.display(), output.status));
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    let stripped = |line: &str| line.replacen(&format!("=> {prefix}"), "=> /", 1);
    Ok(listing.lines().filter(|line| line.starts_with('\t')).map(stripped).collect())
}

/// Parent side of the tmpfs measurement: the helper in a private mount namespace.
fn measure_on_tmpfs(ours: &Path) -> Result<Timings, String> {
    let tmpfs = tmpfs_dir();
    fs::create_dir_all(&tmpfs).map_err(|e| format!("cannot create {}: {e}", tmpfs.display()))?;
    let exe = env::current_exe().map_err(|e| format!("cannot find the xtask executable: {e}"))?;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "sh", "-c", r#"mount -t tmpfs tmpfs "$1" && exec "$2" bench ldcache"#, "sh"])
        .arg(&tmpfs)
        .arg(exe)
        .env(HELPER_ENV, ours)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = run_timed(command, HELPER_LIMIT)?;
    if !run.status.success() {
        return Err(format!("the tmpfs helper failed ({}): {}", run.status, run.stderr.trim()));
    }
    let mut timings = (None, None, None);
    for line in run.stdout.lines() {
        let (tool, values) = line.split_once(' ').unwrap_or((line, ""));
        let samples = Some(Samples::new(isolated::durations(values)?));
        match tool {
            "ours" => timings.0 = samples,
            "ldconfig" => timings.1 = samples,
            "floor" => timings.2 = samples,
            _ => return Err(format!("the tmpfs helper printed an unexpected line: {line:?}")),
        }
    }
    match timings {
        (Some(ours), Some(ldconfig), Some(floor)) => Ok(Timings { ours, ldconfig, floor }),
        _ => Err(format!("the tmpfs helper printed no timings: {}", run.stdout)),
    }
}

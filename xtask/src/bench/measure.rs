//! The four measurements. Each returns raw numbers in the order of the contenders (ours first);
//! the report computes ratios and verdicts from them.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::contenders::{self, Contender, argv};
use super::process::{self, Finished, run_timed};
use crate::root;

/// Timed startup runs per init (after the warm-up): enough for a stable median and p90.
pub const STARTUP_RUNS: usize = 300;
/// Untimed rounds first, so page cache and CPU frequency settle before anything counts.
pub const WARMUP_ROUNDS: usize = 10;
/// Orphans per storm run.
pub const ORPHANS: u32 = 10_000;
/// Timed storm runs per init: each takes about a second, so few, reported as a median.
pub const STORM_RUNS: usize = 5;
/// VmRSS samples per init, each in a fresh namespace: ours varies by about 100 kB from one
/// start to the next (stable within one), so the median and the range are reported.
pub const RSS_SAMPLES: usize = 5;

/// Bound on a single `INIT -- /bin/true`.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// Bound on one storm run, generous for a loaded two-core machine.
const STORM_LIMIT: Duration = Duration::from_secs(120);
/// How long the sleepers' process tree may take to appear.
const RSS_READY_LIMIT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed unshare may take to go away.
const KILL_LIMIT: Duration = Duration::from_secs(5);

/// Sorted timings of one subject.
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut durations: Vec<Duration>) -> Self {
        durations.sort();
        Samples(durations)
    }

    pub fn as_slice(&self) -> &[Duration] {
        &self.0
    }

    /// Nearest-rank percentile (p in 0..=100); zero for no samples.
    pub fn percentile(&self, p: usize) -> Duration {
        let rank = (p * self.0.len()).div_ceil(100).max(1);
        self.0.get(rank - 1).copied().unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        self.percentile(50)
    }

    pub fn min(&self) -> Duration {
        self.0.first().copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

/// Timings with the same command run with no init at all, the floor that no init can beat.
pub struct Timings {
    pub floor: Samples,
    pub inits: Vec<Samples>,
}

/// VmRSS in kB over the samples of one init.
pub struct Rss {
    pub median: u64,
    pub min: u64,
    pub max: u64,
}

/// Bytes on disk and what `file` says about linking.
pub struct Size {
    pub bytes: u64,
    pub linkage: String,
}

/// Everything the report needs, in contender order.
pub struct Results {
    pub startup: Timings,
    pub rss_kb: Vec<Rss>,
    pub storm: Timings,
    pub zombies: Vec<u64>,
    pub sizes: Vec<Size>,
    /// Anything a contender printed on stderr, e.g. a warning about not being PID 1.
    pub notes: Vec<String>,
    /// How many of the functions src/hot-code.order lists our binary has: (found, listed);
    /// None if it was linked without the order.
    pub hot_code: Option<(usize, usize)>,
}

/// Runs each init once, not as PID 1, to see whether it refuses (an error: the startup numbers
/// would be meaningless) or warns (a note for the report).
pub fn smoke_notes(contenders: &[Contender]) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for contender in contenders {
        let mut command = contender.direct(&argv(&["/bin/true"]));
        command.stderr(Stdio::piped());
        let run = succeeded(run_timed(command, STARTUP_LIMIT)?, contender.name)?;
        if !run.stderr.trim().is_empty() {
            notes.push(format!(
                "{} (not PID 1) printed on stderr: {}",
                contender.name,
                one_line(&run.stderr)
            ));
        }
    }
    Ok(notes)
}

/// `INIT -- /bin/true` wall times, round-robin over the floor and the inits so that drift in
/// machine load is spread evenly over all of them instead of landing on one.
pub fn startup(contenders: &[Contender]) -> Result<Timings, String> {
    let program = argv(&["/bin/true"]);
    let mut floor = Vec::with_capacity(STARTUP_RUNS);
    let mut inits = vec![Vec::with_capacity(STARTUP_RUNS); contenders.len()];
    for round in 0..WARMUP_ROUNDS + STARTUP_RUNS {
        let counts = round >= WARMUP_ROUNDS;
        let run = succeeded(run_timed(contenders::no_init(&program)?, STARTUP_LIMIT)?, "/bin/true")?;
        if counts {
            floor.push(run.elapsed);
        }
        for (contender, samples) in contenders.iter().zip(&mut inits) {
            let run = succeeded(run_timed(contender.direct(&program), STARTUP_LIMIT)?, contender.name)?;
            if counts {
                samples.push(run.elapsed);
            }
        }
    }
    Ok(Timings { floor: Samples::new(floor), inits: inits.into_iter().map(Samples::new).collect() })
}

/// VmRSS of each init as PID 1 with a shell and three sleeping children.
pub fn rss(contenders: &[Contender]) -> Result<Vec<Rss>, String> {
    contenders
        .iter()
        .map(|contender| {
            let mut samples = (0..RSS_SAMPLES).map(|_| rss_once(contender)).collect::<Result<Vec<_>, _>>()?;
            samples.sort_unstable();
            match (samples.first(), samples.get(samples.len() / 2), samples.last()) {
                (Some(&min), Some(&median), Some(&max)) => Ok(Rss { median, min, max }),
                _ => Err(format!("{}: no VmRSS samples", contender.name)),
            }
        })
        .collect()
}

/// One VmRSS sample in a fresh namespace, which is torn down (by killing unshare) either way.
fn rss_once(contender: &Contender) -> Result<u64, String> {
    let sleepers = argv(&["sh", "-c", "sleep 100 & sleep 100 & sleep 100 & wait"]);
    let mut unshare =
        contender.as_pid1(&sleepers).spawn().map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    let sampled = sample_rss_when_ready(unshare.id(), contender);
    let reaped = process::kill_and_reap(&mut unshare, KILL_LIMIT);
    let kb = sampled?;
    reaped?;
    Ok(kb)
}

/// Waits until the init (the child of unshare, once it has exec'd the init) has a shell child
/// with three sleep children, then reads the init's VmRSS: sampling earlier would catch it
/// before it did its share of the work.
fn sample_rss_when_ready(unshare: u32, contender: &Contender) -> Result<u64, String> {
    let expected = process::canonical(&contender.path)?;
    let deadline = Instant::now() + RSS_READY_LIMIT;
    loop {
        if let Some(init) = ready_init(unshare, &expected) {
            return process::vm_rss_kb(init);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: no init with a shell and three sleeping children under unshare (pid {unshare}) within {RSS_READY_LIMIT:?}",
                contender.name
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The init's host pid if its process tree is complete.
fn ready_init(unshare: u32, expected: &Path) -> Option<u32> {
    let init =
        process::children(unshare).into_iter().find(|&pid| process::exe(pid).as_deref() == Some(expected))?;
    let has_three_sleepers = |shell: u32| {
        let sleepers = process::children(shell);
        sleepers.len() == 3 && sleepers.iter().all(|&pid| process::comm(pid).as_deref() == Some("sleep"))
    };
    process::children(init).into_iter().any(has_three_sleepers).then_some(init)
}

/// Compiles fixtures/orphan_storm.c into target/bench.
pub fn build_orphan_storm() -> Result<PathBuf, String> {
    compile_fixture("fixtures/orphan_storm.c", "orphan_storm")
}

/// Compiles a C fixture (a path from the workspace root) into target/bench/NAME; rebuilt each
/// run: it takes a moment and a fixture must never be stale.
pub fn compile_fixture(source: &str, name: &str) -> Result<PathBuf, String> {
    let dir = root().join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let binary = dir.join(name);
    compile(source, &binary, &[])?;
    Ok(binary)
}

/// Compiles a C fixture (a path from the workspace root) into `binary` with gcc, warnings as
/// errors, and `flags` besides.
pub fn compile(source: &str, binary: &Path, flags: &[&str]) -> Result<(), String> {
    crate::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror"])
            .args(flags)
            .arg("-o")
            .arg(binary)
            .arg(root().join(source)),
    )
    .map_err(|e| format!("{e} (is gcc installed, with libc6-dev? apt-get install -y gcc)"))
}

/// Storm timings (round-robin like startup) and, per init, the zombies left after a storm.
pub fn orphan_storm(
    contenders: &[Contender],
    storm: &Path,
) -> Result<(Timings, Vec<u64>, Vec<String>), String> {
    let program = argv(&[storm.as_os_str().to_os_string(), OsString::from(ORPHANS.to_string())]);
    let mut floor = Vec::with_capacity(STORM_RUNS);
    let mut inits = vec![Vec::with_capacity(STORM_RUNS); contenders.len()];
    for _ in 0..STORM_RUNS {
        floor.push(storm_once(contenders::as_pid1(&program), "no init")?);
        for (contender, samples) in contenders.iter().zip(&mut inits) {
            samples.push(storm_once(contender.as_pid1(&program), contender.name)?);
        }
    }
    let mut zombies = Vec::with_capacity(contenders.len());
    let mut notes = Vec::new();
    for contender in contenders {
        let (count, stderr) = zombies_after_storm(contender, storm)?;
        zombies.push(count);
        if !stderr.trim().is_empty() {
            notes.push(format!("{} (PID 1) printed on stderr: {}", contender.name, one_line(&stderr)));
        }
    }
    let timings =
        Timings { floor: Samples::new(floor), inits: inits.into_iter().map(Samples::new).collect() };
    Ok((timings, zombies, notes))
}

/// Wall time of one storm, from spawning unshare to its exit. unshare returns only once its
/// child, PID 1, is reaped, and the kernel reaps what is left of the namespace before that, so
/// this covers the whole storm and its cleanup.
fn storm_once(mut command: Command, name: &str) -> Result<Duration, String> {
    command.stderr(Stdio::piped());
    Ok(succeeded(run_timed(command, STORM_LIMIT)?, name)?.elapsed)
}

/// Runs a storm under the init as PID 1, waits half a second, and counts zombies in the
/// namespace (its own /proc). The orphans exit at once, so a reaping init leaves none.
fn zombies_after_storm(contender: &Contender, storm: &Path) -> Result<(u64, String), String> {
    let script =
        "\"$1\" \"$2\" || exit 97; sleep 0.5; cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ' || true";
    let program = argv(&[
        OsString::from("sh"),
        OsString::from("-c"),
        OsString::from(script),
        OsString::from("sh"),
        storm.as_os_str().to_os_string(),
        OsString::from(ORPHANS.to_string()),
    ]);
    let mut command = contender.as_pid1(&program);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = succeeded(run_timed(command, STORM_LIMIT)?, contender.name)?;
    let last = run.stdout.lines().last().unwrap_or_default().trim();
    let count = last
        .parse()
        .map_err(|_| format!("{}: zombie count is not a number: {:?}", contender.name, run.stdout))?;
    Ok((count, run.stderr))
}

/// Bytes and linkage of each contender's binary.
pub fn sizes(contenders: &[Contender]) -> Result<Vec<Size>, String> {
    contenders.iter().map(|contender| size(&contender.path)).collect()
}

fn size(path: &Path) -> Result<Size, String> {
    let bytes = fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?.len();
    let output = Command::new("file")
        .arg("--brief")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run `file` (apt-get install -y file): {e}"))?;
    let description = String::from_utf8_lossy(&output.stdout);
    let linkage = [
        ("static-pie linked", "static (static-pie)"),
        ("statically linked", "static"),
        ("dynamically linked", "dynamic"),
    ]
    .into_iter()
    .find(|(phrase, _)| description.contains(phrase))
    .map_or("unknown", |(_, linkage)| linkage);
    Ok(Size { bytes, linkage: linkage.to_string() })
}

/// The run, if it exited 0; else an error with its status and stderr.
pub fn succeeded(run: Finished, name: &str) -> Result<Finished, String> {
    if run.status.success() {
        Ok(run)
    } else {
        Err(format!("{name} failed ({}): {}", run.status, one_line(&run.stderr)))
    }
}

/// Output squeezed onto one line for notes and errors.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

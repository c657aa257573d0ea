//! The supervisor measurements that need N services running: time until they all run, memory
//! once they do, SIGTERM to exit, and context switches while idle.
//!
//! Every run is a fresh namespace (`unshare --pid --fork --mount-proc --kill-child`, behind the
//! tmpfs wrapper, as in the PID-1 measurements), watched from the host's /proc; killing unshare
//! takes the whole namespace down, so every run ends with that, whatever happened in it.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use super::census::Census;
use super::measure::Samples;
use super::process::{self, Memory, Switches};
use super::supervisors::Supervisor;

/// Service counts measured (time to start, memory, SIGTERM to exit).
pub const SERVICE_COUNTS: [usize; 3] = [3, 100, 1000];
/// Runs per supervisor and count, round-robin over the supervisors; reported as medians.
pub const RUNS: usize = 5;
/// Services running while the idle context switches are counted.
pub const IDLE_SERVICES: usize = 100;
/// How long the supervisors are watched while idle.
pub const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Quiet time after the last service started before the idle window opens: what a supervisor
/// does right after its last start (say, note that it started) is not idling.
pub const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// Pause between "all running" and the memory sample and SIGTERM, so those see a supervisor
/// that has finished reacting to its last start, not one in the middle of it.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How often /proc is polled for the services (see `census`).
pub const POLL: Duration = Duration::from_millis(1);

/// Bound on the services to appear (supervisord takes 5 to 10 s for 1000 on two busy cores).
const READY_LIMIT: Duration = Duration::from_secs(30);
/// Bound on the exit after SIGTERM (supervisord's own grace before SIGKILL is 10 s).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long a SIGKILLed unshare may take to go away (with its namespace of 1000 processes).
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// Per service count (in the order of SERVICE_COUNTS), per supervisor (in lineup order).
pub type ByCount<T> = Vec<Vec<T>>;

/// What the runs with N services measured.
pub struct Results {
    /// From spawning unshare to all services running.
    pub startup: ByCount<Samples>,
    /// Median of each field over the runs; the supervisor's processes (see `supervision`).
    pub memory: ByCount<Memory>,
    /// From SIGTERM to the supervisor to unshare's exit; None for the floor.
    pub stop: ByCount<Option<Samples>>,
    /// Anything unexpected, e.g. a supervisor that did not exit 0 on SIGTERM.
    pub notes: Vec<String>,
}

/// One run of one supervisor.
struct Run {
    startup: Duration,
    memory: Memory,
    /// Time to exit after SIGTERM, and unshare's exit status (the supervisor's, passed on);
    /// None for the floor.
    stop: Option<(Duration, ExitStatus)>,
}

/// All counts, RUNS runs each, round-robin over the supervisors so that drift in machine load
/// spreads over all of them.
pub fn measure(supervisors: &[Supervisor], dir: &Path) -> Result<Results, String> {
    let mut results = Results { startup: vec![], memory: vec![], stop: vec![], notes: vec![] };
    for count in SERVICE_COUNTS {
        eprintln!("bench: {count} services, {RUNS} runs per supervisor");
        let mut runs: Vec<Vec<Run>> = supervisors.iter().map(|_| Vec::with_capacity(RUNS)).collect();
        for _ in 0..RUNS {
            for (supervisor, runs) in supervisors.iter().zip(&mut runs) {
                runs.push(run_once(supervisor, count, dir)?);
            }
        }
        results.add(supervisors, count, &runs);
    }
    Ok(results)
}

impl Results {
    /// Summarizes the runs with `count` services, per supervisor.
    fn add(&mut self, supervisors: &[Supervisor], count: usize, runs: &[Vec<Run>]) {
        self.startup
            .push(runs.iter().map(|runs| Samples::new(runs.iter().map(|r| r.startup).collect())).collect());
        self.memory.push(runs.iter().map(|runs| median_memory(runs)).collect());
        self.stop.push(runs.iter().map(|runs| stop_samples(runs)).collect());
        let notes =
            supervisors.iter().zip(runs).filter_map(|(supervisor, runs)| stop_note(supervisor, count, runs));
        self.notes.extend(notes);
    }
}

/// Starts the supervisor with `count` services, measures, and tears the namespace down.
fn run_once(supervisor: &Supervisor, count: usize, dir: &Path) -> Result<Run, String> {
    let mut command = supervisor.prepare(count, dir)?;
    let start = Instant::now();
    let mut unshare = command.spawn().map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    let measured = measure_run(&mut unshare, start, supervisor, count);
    let torn_down = tear_down(&mut unshare);
    let run = measured?;
    torn_down?;
    Ok(run)
}

/// Kills unshare, and with it the namespace, and waits until the namespace is gone: SIGKILL
/// to unshare only makes the kernel kill its child, PID 1, whose exit then kills and reaps the
/// rest, after unshare itself has been reaped. Without the wait, tearing down the shell floor's
/// 1000 sleeps would overlap (and slow down) the next run.
fn tear_down(unshare: &mut Child) -> Result<(), String> {
    let pid1 = process::children(unshare.id()).first().copied();
    process::kill_and_reap(unshare, KILL_LIMIT)?;
    pid1.map_or(Ok(()), |pid1| process::wait_exited(pid1, KILL_LIMIT))
}

fn measure_run(
    unshare: &mut Child,
    start: Instant,
    supervisor: &Supervisor,
    count: usize,
) -> Result<Run, String> {
    let startup = wait_for_services(unshare, start, count, supervisor.name)?;
    thread::sleep(SETTLE);
    let pid1 = supervisor_pid(unshare.id(), supervisor.name)?;
    let memory = supervision(pid1)
        .into_iter()
        .try_fold(Memory::default(), |sum, pid| Memory::of(pid).map(|memory| sum.plus(memory)))?;
    let stop = if supervisor.stops_on_sigterm() { Some(stop(unshare, pid1)?) } else { None };
    Ok(Run { startup, memory, stop })
}

/// Polls until `count` services run under unshare; returns the time since `start`. Fails if
/// the supervisor exits first or the services do not all appear within READY_LIMIT.
fn wait_for_services(
    unshare: &mut Child,
    start: Instant,
    count: usize,
    name: &str,
) -> Result<Duration, String> {
    let mut census = Census::new(unshare.id());
    let deadline = start + READY_LIMIT;
    loop {
        let running = census.running();
        if running >= count {
            return Ok(start.elapsed());
        }
        if let Ok(Some(status)) = unshare.try_wait() {
            return Err(format!("{name} exited ({status}) with {running} of {count} services running"));
        }
        if Instant::now() >= deadline {
            return Err(format!("{name}: {running} of {count} services running after {READY_LIMIT:?}"));
        }
        thread::sleep(POLL);
    }
}

/// The supervisor's host pid: unshare's only child, which has exec'd the supervisor by the
/// time its services run.
fn supervisor_pid(unshare: u32, name: &str) -> Result<u32, String> {
    match process::children(unshare)[..] {
        [pid] => Ok(pid),
        ref other => {
            Err(format!("{name}: unshare (pid {unshare}) has children {other:?}, not one supervisor"))
        }
    }
}

/// The processes that do the supervising: PID 1, and those of its children that are not
/// services (s6-svscan's s6-supervise, one per service; the others have none).
fn supervision(pid1: u32) -> Vec<u32> {
    let helpers = process::children(pid1)
        .into_iter()
        .filter(|&pid| process::comm(pid).as_deref() != Some(super::census::SERVICE_COMM));
    std::iter::once(pid1).chain(helpers).collect()
}

/// SIGTERM to the supervisor; the time until unshare exits, which is after the kernel has
/// taken down whatever was left in the namespace. The clock starts before `kill` is spawned,
/// so about a millisecond of `kill` itself is included, the same for every supervisor.
fn stop(unshare: &mut Child, pid1: u32) -> Result<(Duration, ExitStatus), String> {
    let start = Instant::now();
    process::signal(pid1, "TERM")?;
    let status = process::wait_exit(unshare, STOP_LIMIT, POLL)?;
    Ok((start.elapsed(), status))
}

/// A note when a supervisor did not exit 0 on SIGTERM in some runs: the time to exit means
/// less if the exit was a failure.
fn stop_note(supervisor: &Supervisor, count: usize, runs: &[Run]) -> Option<String> {
    let failed: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            run.stop.filter(|(_, status)| !status.success()).map(|(_, status)| status.to_string())
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} with {count} services did not exit 0 after SIGTERM in {} of {} runs ({})",
            supervisor.name,
            failed.len(),
            runs.len(),
            failed.join(", ")
        )
    })
}

/// The median of each field separately.
fn median_memory(runs: &[Run]) -> Memory {
    let median = |field: fn(&Memory) -> u64| {
        let mut values: Vec<u64> = runs.iter().map(|run| field(&run.memory)).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    Memory {
        vm_rss: median(|m| m.vm_rss),
        rss_anon: median(|m| m.rss_anon),
        rss_file: median(|m| m.rss_file),
        pss: median(|m| m.pss),
    }
}

fn stop_samples(runs: &[Run]) -> Option<Samples> {
    runs.iter().map(|run| run.stop.map(|(elapsed, _)| elapsed)).collect::<Option<Vec<_>>>().map(Samples::new)
}

/// Context switches while idle, per supervisor: of PID 1 alone, and of all its supervision
/// processes (see `supervision`). All supervisors idle at the same time, each in its own
/// namespace: an idle process is not disturbed by other idle processes, and one shared window
/// costs 10 s instead of 10 s each.
pub fn idle_switches(supervisors: &[Supervisor], dir: &Path) -> Result<Vec<(Switches, Switches)>, String> {
    let mut running = Vec::with_capacity(supervisors.len());
    let measured = idle_with(&mut running, supervisors, &dir.join("idle"));
    let mut reaped = Ok(());
    for unshare in &mut running {
        reaped = reaped.and(tear_down(unshare));
    }
    let switches = measured?;
    reaped?;
    Ok(switches)
}

/// Starts every supervisor with IDLE_SERVICES services (pushing each unshare onto `running`
/// for the caller to clean up), waits until all run and have settled, and counts.
fn idle_with(
    running: &mut Vec<Child>,
    supervisors: &[Supervisor],
    dir: &Path,
) -> Result<Vec<(Switches, Switches)>, String> {
    for supervisor in supervisors {
        let mut command = supervisor.prepare(IDLE_SERVICES, dir)?;
        running.push(command.spawn().map_err(|e| format!("cannot run unshare (util-linux): {e}"))?);
    }
    let mut pids = Vec::with_capacity(supervisors.len());
    for (supervisor, unshare) in supervisors.iter().zip(running.iter_mut()) {
        wait_for_services(unshare, Instant::now(), IDLE_SERVICES, supervisor.name)?;
        pids.push(supervisor_pid(unshare.id(), supervisor.name)?);
    }
    thread::sleep(IDLE_SETTLE);
    let before = pids.iter().map(|&pid| switches(pid)).collect::<Result<Vec<_>, _>>()?;
    thread::sleep(IDLE_WINDOW);
    let after = pids.iter().map(|&pid| switches(pid)).collect::<Result<Vec<_>, _>>()?;
    Ok(after
        .into_iter()
        .zip(before)
        .map(|((pid1, all), (pid1_before, all_before))| (pid1.since(pid1_before), all.since(all_before)))
        .collect())
}

/// Context switches so far of PID 1, and of all the supervision processes together.
fn switches(pid1: u32) -> Result<(Switches, Switches), String> {
    let own = Switches::of(pid1)?;
    let all = supervision(pid1)
        .into_iter()
        .try_fold(Switches::default(), |sum, pid| Switches::of(pid).map(|switches| sum.plus(switches)))?;
    Ok((own, all))
}

//! The supervisor part of BENCHMARKS.md (also printed to stdout), after the PID-1 part: one
//! table per measurement with raw numbers and ratios ours/other, and the targets with verdicts
//! computed from those numbers.

use std::time::Duration;

use super::log_rate::{self, LogRate};
use super::measure::Samples;
use super::process::{Memory, Switches};
use super::report::{Table, millis, package_version, ratio, secs, target};
use super::services::{self, ByCount, Results, SERVICE_COUNTS};
use super::supervisors::{SERVICE, Supervisor};

/// Startup: our median at the largest count may be at most this many times the shell floor's.
const STARTUP_MAX_FLOOR_RATIO: f64 = 1.3;
/// VmRSS at the largest count: at most 4 MiB.
const RSS_MAX_KB: u64 = 4096;
/// Log throughput: at least this fraction of `cat`'s.
const LOG_MIN_FRACTION: f64 = 0.5;
/// The count the SIGTERM target and the table's ratio are read at.
const STOP_COUNT: usize = 100;

/// The heading of the supervisor part.
pub const HEADING: &str = "# Supervisor";

/// The whole supervisor part as markdown.
pub fn render(
    supervisors: &[Supervisor],
    results: &Results,
    idle: &[(Switches, Switches)],
    log: &LogRate,
) -> String {
    [
        intro(supervisors),
        startup_section(supervisors, &results.startup),
        memory_section(supervisors, &results.memory),
        idle_section(supervisors, idle),
        log_section(log),
        stop_section(supervisors, &results.stop),
        targets_section(supervisors, results, idle, log),
        notes_section(&results.notes),
    ]
    .join("\n")
}

fn intro(supervisors: &[Supervisor]) -> String {
    let mut table = Table::new(&["supervisor", "version", "invocation"]);
    for supervisor in supervisors {
        table.row(vec![
            supervisor.name.into(),
            package_version(supervisor.package),
            format!("`{}`", supervisor.invocation()),
        ]);
    }
    format!(
        "{HEADING}\n\n\
         nix2gpu-init supervising N services, `{SERVICE}` each, against supervisord, s6-svscan and \
         a plain `sh` script that starts the same N processes in the background and waits (the \
         floor: fork and exec, nothing else). Each runs as PID 1 of fresh namespaces exactly like \
         the PID-1 measurements above (see Notes). Ours gets \
         `processes: {{s0001: {{command: \"exec {SERVICE}\"}}, ...}}`; supervisord one \
         `[program:sNNNN]` per service; s6-svscan a scan directory with one service directory per \
         service whose `run` script is `exec {SERVICE}`.\n\n{}",
        table.render()
    )
}

fn startup_section(supervisors: &[Supervisor], startup: &ByCount<Samples>) -> String {
    let mut header = vec!["supervisor".to_string()];
    header.extend(SERVICE_COUNTS.iter().map(|n| format!("{n} services (median)")));
    header.extend(SERVICE_COUNTS.iter().map(|n| format!("ours/this at {n}")));
    let mut table = table(&header);
    for (index, supervisor) in supervisors.iter().enumerate() {
        let medians: Vec<Duration> = startup.iter().map(|by| median_at(by, index)).collect();
        let mut row = vec![supervisor.name.to_string()];
        row.extend(medians.iter().map(|&median| millis(median)));
        row.extend(startup.iter().zip(&medians).map(|(by, &median)| {
            ours_over(supervisor, by.first().map(|ours| secs(ours.median())), secs(median))
        }));
        table.row(row);
    }
    format!(
        "## 5. Time until N services run\n\n\
         From spawning unshare until N `{SERVICE}` processes exist under it, polling the host's \
         /proc every {} ms; {} runs per supervisor and count, round-robin over the supervisors; \
         medians.\n\n{}",
        services::POLL.as_millis(),
        services::RUNS,
        table.render()
    )
}

fn memory_section(supervisors: &[Supervisor], memory: &ByCount<Memory>) -> String {
    format!(
        "## 6. Memory with N services running\n\n\
         VmRSS once all services run (and {} ms more), summed over the supervising processes (for \
         s6, s6-svscan plus its s6-supervise children, one per service); median of the {} runs of \
         section 5.\n\n{}\n\
         The same memory split into anonymous memory (RssAnon: heap, stacks, what the process \
         allocated) and file-backed pages (RssFile: mostly its executable and libraries, shared \
         with any other process mapping the same files; summed per process for s6, so counted once \
         per s6-supervise), and the proportional set size from /proc/PID/smaps_rollup (Pss: each \
         page divided by the number of processes mapping it, so s6's sum is what its processes use \
         together). Our binary is static, so its code is all file-backed.\n\n{}",
        services::SETTLE.as_millis(),
        services::RUNS,
        rss_table(supervisors, memory).render(),
        split_table(supervisors, memory).render()
    )
}

/// VmRSS per count, and ours/this at the largest count.
fn rss_table(supervisors: &[Supervisor], memory: &ByCount<Memory>) -> Table {
    let mut header = vec!["supervisor".to_string(), "processes".to_string()];
    header.extend(SERVICE_COUNTS.iter().map(|n| format!("VmRSS kB, {n} services")));
    header.push(format!("ours/this at {}", largest_count()));
    let mut table = table(&header);
    let ours = memory_at(memory, LARGEST, 0).map(|m| m.vm_rss as f64);
    for (index, supervisor) in supervisors.iter().enumerate() {
        let mut row = vec![supervisor.name.to_string(), supervisor.processes().to_string()];
        row.extend((0..SERVICE_COUNTS.len()).map(|c| cell(memory_at(memory, c, index).map(|m| m.vm_rss))));
        let largest = memory_at(memory, LARGEST, index).map_or(0.0, |m| m.vm_rss as f64);
        row.push(ours_over(supervisor, ours, largest));
        table.row(row);
    }
    table
}

/// RssAnon / RssFile / Pss per count, and ours/this in Pss at the largest count.
fn split_table(supervisors: &[Supervisor], memory: &ByCount<Memory>) -> Table {
    let mut header = vec!["supervisor".to_string()];
    header.extend(SERVICE_COUNTS.iter().map(|n| format!("RssAnon / RssFile / Pss kB, {n}")));
    header.push(format!("ours/this in Pss at {}", largest_count()));
    let mut table = table(&header);
    let ours = memory_at(memory, LARGEST, 0).map(|m| m.pss as f64);
    for (index, supervisor) in supervisors.iter().enumerate() {
        let mut row = vec![supervisor.name.to_string()];
        row.extend((0..SERVICE_COUNTS.len()).map(|c| {
            memory_at(memory, c, index)
                .map_or("-".into(), |m| format!("{} / {} / {}", m.rss_anon, m.rss_file, m.pss))
        }));
        let largest = memory_at(memory, LARGEST, index).map_or(0.0, |m| m.pss as f64);
        row.push(ours_over(supervisor, ours, largest));
        table.row(row);
    }
    table
}

fn idle_section(supervisors: &[Supervisor], idle: &[(Switches, Switches)]) -> String {
    let mut table = Table::new(&[
        "supervisor",
        "PID 1 voluntary",
        "PID 1 involuntary",
        "PID 1 total",
        "all supervising processes, total",
    ]);
    for (supervisor, (pid1, all)) in supervisors.iter().zip(idle) {
        table.row(vec![
            supervisor.name.into(),
            pid1.voluntary.to_string(),
            pid1.nonvoluntary.to_string(),
            pid1.total().to_string(),
            all.total().to_string(),
        ]);
    }
    format!(
        "## 7. Context switches while idle, {} services\n\n\
         `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from /proc/PID/task/*/status \
         (all threads of the process), read {} s after the last service started and again {} s \
         later; no probes, nothing happening. A supervisor that sleeps in the kernel until \
         something happens has none. All supervisors idle at the same time, each in its own \
         namespace. The last column adds s6's s6-supervise processes.\n\n{}",
        services::IDLE_SERVICES,
        services::IDLE_SETTLE.as_secs(),
        services::IDLE_WINDOW.as_secs(),
        table.render()
    )
}

fn log_section(log: &LogRate) -> String {
    let bytes = log_rate::LOG_BYTES;
    let mut table = Table::new(&["reader", "median", "min", "max", "MB/s (median)", "ours/cat (MB/s)"]);
    let rows = [("`cat > /dev/null`", &log.cat, "-".to_string()), ("nix2gpu-init", &log.ours, fraction(log))];
    for (name, samples, versus_cat) in rows {
        table.row(vec![
            name.into(),
            millis(samples.median()),
            millis(samples.min()),
            millis(samples.max()),
            format!("{:.0}", megabytes_per_second(samples.median())),
            versus_cat,
        ]);
    }
    format!(
        "## 8. Log throughput\n\n\
         One service writing {bytes} bytes (1 GiB in whole lines: {} lines of 100 bytes, \
         fixtures/bench/log_lines.c, 64 KiB writes) through ours, whose stdout is /dev/null, \
         against the same producer piped through `cat > /dev/null`; both as PID 1 of fresh \
         namespaces. Wall time from spawning unshare until it exits (ours exits 0 once its only \
         service has ended and its output is written), {} runs each, alternating. MB = 10^6 \
         bytes.\n\n{}",
        bytes / 100,
        log_rate::LOG_RUNS,
        table.render()
    )
}

fn stop_section(supervisors: &[Supervisor], stop: &ByCount<Option<Samples>>) -> String {
    let mut header = vec!["supervisor".to_string()];
    header.extend(SERVICE_COUNTS.iter().map(|n| format!("{n} services (median)")));
    header.push(format!("min / max at {STOP_COUNT}"));
    header.push(format!("ours/this at {STOP_COUNT}"));
    let mut table = table(&header);
    let at_stop_count = SERVICE_COUNTS.iter().position(|&n| n == STOP_COUNT);
    let ours = at_stop_count.and_then(|i| stop_of(stop, i, 0)).map(|s| secs(s.median()));
    for (index, supervisor) in supervisors.iter().enumerate() {
        if !supervisor.stops_on_sigterm() {
            let mut row = vec![supervisor.name.to_string()];
            row.extend(SERVICE_COUNTS.iter().map(|_| "-".to_string()));
            row.extend(["(ignores SIGTERM as PID 1)".to_string(), "-".to_string()]);
            table.row(row);
            continue;
        }
        let mut row = vec![supervisor.name.to_string()];
        row.extend(
            (0..SERVICE_COUNTS.len())
                .map(|c| stop_of(stop, c, index).map_or("-".into(), |s| millis(s.median()))),
        );
        let at = at_stop_count.and_then(|c| stop_of(stop, c, index));
        row.push(at.map_or("-".into(), |s| format!("{} / {}", millis(s.min()), millis(s.max()))));
        row.push(at.map_or("-".into(), |s| ours_over(supervisor, ours, secs(s.median()))));
        table.row(row);
    }
    format!(
        "## 9. SIGTERM to exit\n\n\
         In the runs of section 5, {} ms after all services run: SIGTERM to the supervisor \
         (PID 1 of the namespace, by its host pid), then the time until unshare exits, which is \
         after the supervisor has exited and the kernel has removed whatever it left in the \
         namespace. {} runs per supervisor and count.\n\n{}",
        services::SETTLE.as_millis(),
        services::RUNS,
        table.render()
    )
}

/// One row per target: threshold, what we measured, PASS or FAIL from the numbers.
fn targets_section(
    supervisors: &[Supervisor],
    results: &Results,
    idle: &[(Switches, Switches)],
    log: &LogRate,
) -> String {
    let mut table = Table::new(&["target", "threshold", "measured", "result"]);
    let count = largest_count();
    let floor = supervisors.iter().position(Supervisor::is_floor);
    let startup = results.startup.get(LARGEST).and_then(|by| {
        let ours = by.first()?;
        let floor = by.get(floor?)?;
        Some(secs(ours.median()) / secs(floor.median()))
    });
    table.row(target(
        format!("time until {count} services run, vs the shell floor"),
        format!("<= {STARTUP_MAX_FLOOR_RATIO:.2}x (median)"),
        startup.map(|r| format!("{r:.2}x")),
        startup.is_some_and(|r| r <= STARTUP_MAX_FLOOR_RATIO),
    ));
    let rss = memory_at(&results.memory, LARGEST, 0).map(|m| m.vm_rss);
    table.row(target(
        format!("VmRSS with {count} services (median)"),
        format!("<= {RSS_MAX_KB} kB"),
        rss.map(|kb| format!("{kb} kB")),
        rss.is_some_and(|kb| kb <= RSS_MAX_KB),
    ));
    let switches = idle.first().map(|(pid1, _)| pid1.total());
    table.row(target(
        format!(
            "context switches of PID 1 in {} s idle, {} services",
            services::IDLE_WINDOW.as_secs(),
            services::IDLE_SERVICES
        ),
        "0".into(),
        switches.map(|s| s.to_string()),
        switches == Some(0),
    ));
    let fraction = log_fraction(log);
    table.row(target(
        "log throughput vs `cat`".into(),
        format!(">= {:.0}%", LOG_MIN_FRACTION * 100.0),
        fraction.map(|f| format!("{:.0}%", f * 100.0)),
        fraction.is_some_and(|f| f >= LOG_MIN_FRACTION),
    ));
    format!("## Targets (supervisor)\n\n{}", table.render())
}

fn notes_section(observed: &[String]) -> String {
    let mut notes = vec![
        "Every run goes through `unshare --pid --fork --mount-proc --kill-child sh -c 'mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var && exec \"$@\"' sh SUPERVISOR ...`, as in the PID-1 part, for all alike; stdin is /dev/null and stdout and stderr go to /dev/null (ours runs with `NIX2GPU_LOG=warn`, supervisord with `loglevel=warn`). Killing unshare at the end of a run takes the namespace down.".to_string(),
        "Counting the services: the poll walks the host's /proc from unshare down (`/proc/PID/task/PID/children`) and counts processes whose `comm` is `sleep`. To stay cheap at 1000 services on two cores it remembers what cannot change during a run: a `sleep 1000` stays one, and a process below the supervisor with a service under it (s6-supervise) starts no other. The times include unshare, the two mounts, the supervisor's own start (the Python interpreter, for supervisord) and up to one poll interval.".into(),
        "supervisord: `-n` (foreground), a `[program:sNNNN]` per service with `command=sleep 1000`, `autorestart=false`, `startsecs=0` (running as soon as started, as in ours) and stdout and stderr to /dev/null; it still reads each program's output through pipes of its own. Its pidfile goes to the namespace's /run.".into(),
        "s6-svscan: `-c N`, because its default limit is 500 services (beyond it, it warns \"too many services\" and starts no more). The scan directory is created afresh under target/bench/supervisor before each run (s6-supervise keeps its state in each service directory), on the host's disk. On SIGTERM, s6-svscan's default (no .s6-svscan/SIGTERM script) is `s6-svscanctl -t`: SIGTERM to every s6-supervise, each of which stops its service and exits, then s6-svscan exits 0 (no .s6-svscan/finish).".into(),
        "Shell floor: `sh floor-N.sh`, N lines `sleep 1000 &` then `wait`, run by dash as PID 1. As PID 1 it ignores SIGTERM (no handler), so it has no SIGTERM row; its runs end with SIGKILL to unshare.".into(),
        "Memory and context switches of s6 are summed over s6-svscan and its s6-supervise processes; VmRSS and RssFile then count the pages of the shared s6 binaries once per process, as the kernel reports them. Ours is one process (two threads: the event loop and the output writer).".into(),
        "supervisord's main loop waits for events with a timeout of one second, which shows as about a second in its start and stop times even with 3 services.".into(),
        "The SIGTERM clock starts just before util-linux's `kill` is spawned, so about a millisecond of `kill` itself is in every number alike.".into(),
        "The machine may be shared (others compiling), so the numbers can be noisy; the runs of all supervisors are interleaved in the same session.".into(),
    ];
    if observed.is_empty() {
        notes.push("Observed: every supervisor exited 0 after SIGTERM, in every run.".into());
    }
    notes.extend(observed.iter().map(|note| format!("Observed: {note}")));
    let list: Vec<String> = notes.iter().map(|note| format!("- {note}")).collect();
    format!("## Notes (supervisor)\n\n{}\n", list.join("\n"))
}

/// Index of the largest service count in SERVICE_COUNTS, where the targets are read.
const LARGEST: usize = SERVICE_COUNTS.len() - 1;

fn largest_count() -> usize {
    SERVICE_COUNTS[LARGEST]
}

/// A table from a header built at run time.
fn table(header: &[String]) -> Table {
    Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>())
}

fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

fn memory_at(memory: &ByCount<Memory>, count: usize, index: usize) -> Option<Memory> {
    memory.get(count)?.get(index).copied()
}

fn median_at(by: &[Samples], index: usize) -> Duration {
    by.get(index).map(Samples::median).unwrap_or_default()
}

fn stop_of(stop: &ByCount<Option<Samples>>, count: usize, index: usize) -> Option<&Samples> {
    stop.get(count)?.get(index)?.as_ref()
}

/// `ours/this` for another supervisor's row (the floor included), `-` for our own.
fn ours_over(supervisor: &Supervisor, ours: Option<f64>, this: f64) -> String {
    match ours {
        Some(ours) if !supervisor.is_ours() => ratio(ours, this),
        _ => "-".into(),
    }
}

fn megabytes_per_second(elapsed: Duration) -> f64 {
    let seconds = secs(elapsed);
    if seconds > 0.0 { log_rate::LOG_BYTES as f64 / seconds / 1e6 } else { 0.0 }
}

/// Our throughput as a fraction of cat's: cat's median time over ours.
fn log_fraction(log: &LogRate) -> Option<f64> {
    let ours = secs(log.ours.median());
    (ours > 0.0).then(|| secs(log.cat.median()) / ours)
}

fn fraction(log: &LogRate) -> String {
    log_fraction(log).map_or("-".into(), |f| format!("{f:.2}x"))
}

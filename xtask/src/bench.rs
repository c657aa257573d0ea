//! `cargo xtask bench`: nix2gpu-init against Debian's tini-static, catatonit and dumb-init as
//! PID 1, then against supervisord, s6-svscan and a plain shell as a supervisor, all measured in
//! one run on the same machine, so the ratios in BENCHMARKS.md compare like with like. The file
//! is generated here from the measured numbers; nothing in it is hand-edited.
//!
//! PID 1: startup overhead of `INIT -- /bin/true` (not PID 1), VmRSS as PID 1 with three
//! sleeping children, time to reap 10,000 orphans as PID 1 plus a zombie count, binary size.
//!
//! Supervisor: time until 3, 100 and 1000 services run, memory with them running, context
//! switches while idle, log throughput against `cat`, and SIGTERM to exit.
//!
//! ELF: `set-interpreter` against patchelf on nvidia-smi; `cargo xtask bench elf` measures only
//! that and replaces its part of BENCHMARKS.md.
//! ld.so.cache: `nix2gpu-init ldcache` against glibc's ldconfig on 1,000 libraries. It also runs
//! alone (`cargo xtask bench ldcache`), replacing only its part of BENCHMARKS.md.
//! GPU node: the whole `gpu` node against the same work done by nix2gpu's shell commands (links,
//! ldconfig, patchelf, its nvidia-smi check); alone: `cargo xtask bench gpu`.
//!
//! Soak: `cargo xtask bench soak` only (ten minutes, never part of the full run): the init's
//! memory and descriptors under restarts, probes, orphans and log traffic; replaces its part.

mod census;
pub mod contenders;
mod elf;
mod gpu;
mod isolated;
mod ldcache;
mod log_rate;
pub mod measure;
pub mod process;
mod report;
mod services;
mod services_report;
pub mod soak;
mod supervisors;

use std::fs;
use std::path::Path;

use contenders::Contender;
use supervisors::Supervisor;

/// Where the generated report goes, relative to the workspace root.
const REPORT_FILE: &str = "BENCHMARKS.md";
/// Where the supervisor runs keep their configurations, relative to the workspace root.
const SUPERVISOR_DIR: &str = "target/bench/supervisor";

/// Heading of the ld.so.cache part of the report.
const LDCACHE_HEADING: &str = "# ld.so.cache";

/// `cargo xtask bench [pid1|supervisor|elf|ldcache|gpu|soak]`: everything but the soak, or one
/// part alone. In
/// the copies of itself that the bench starts in private mount namespaces, measures only what
/// that copy is for (see `isolated` and `ldcache`).
pub fn run(only: Option<&str>) -> Result<(), String> {
    if let Some(ours) = isolated::helper_request() {
        return isolated::serve(ours);
    }
    if let Some(ours) = ldcache::helper_request() {
        return ldcache::serve(&ours);
    }
    if let Some(ours) = gpu::helper_request() {
        return gpu::serve(&ours);
    }
    match only {
        None => run_all(),
        Some("pid1") => run_part(report::HEADING, |ours| {
            let facts = report::Machine::read()?;
            let contenders = contenders::all(ours.to_path_buf())?;
            let storm = measure::build_orphan_storm()?;
            let results = measure_all(&contenders, ours, &storm)?;
            Ok(report::render(&facts, &contenders, &results))
        }),
        Some("supervisor") => run_part(services_report::HEADING, |ours| {
            measure_supervisors(&supervisors::all(ours.to_path_buf())?, ours)
        }),
        Some("elf") => run_part(elf::HEADING, |ours| Ok(elf::render(&elf::measure(ours)?))),
        Some("ldcache") => run_part(LDCACHE_HEADING, |ours| Ok(ldcache::render(&ldcache::measure(ours)?))),
        Some("gpu") => run_part(gpu::HEADING, |ours| Ok(gpu::render(&gpu::measure(ours)?))),
        Some("soak") => run_part(soak::HEADING, |ours| Ok(soak::render(&soak::measure(ours)?))),
        Some(other) => {
            Err(format!("unknown benchmark `{other}` (there are: pid1, supervisor, elf, ldcache, gpu, soak)"))
        }
    }
}

/// Builds our static binary, finds the peers, measures everything and writes BENCHMARKS.md.
fn run_all() -> Result<(), String> {
    let facts = report::Machine::read()?;
    let ours = crate::static_build::build()?;
    let contenders = contenders::all(ours.clone())?;
    let supervisors = supervisors::all(ours.clone())?;
    let storm = measure::build_orphan_storm()?;
    let results = measure_all(&contenders, &ours, &storm)?;
    let text = report::render(&facts, &contenders, &results);
    let text = format!("{text}\n{}", measure_supervisors(&supervisors, &ours)?);
    let text = format!("{text}\n{}", elf::render(&elf::measure(&ours)?));
    let text = format!("{text}\n{}", ldcache::render(&ldcache::measure(&ours)?));
    let text = format!("{text}\n{}", gpu::render(&gpu::measure(&ours)?));
    print!("{text}");
    write_report(&text)
}

/// Measures one part only and puts it in place of its section of the report.
fn run_part(heading: &str, measure: impl Fn(&Path) -> Result<String, String>) -> Result<(), String> {
    let ours = crate::static_build::build()?;
    let section = measure(&ours)?;
    print!("{section}");
    let path = crate::root().join(REPORT_FILE);
    let report = fs::read_to_string(&path).unwrap_or_default();
    write_report(&replace_section(&report, heading, &section))
}

fn write_report(text: &str) -> Result<(), String> {
    let path = crate::root().join(REPORT_FILE);
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// `report` with the part under `heading` (up to the next top-level heading) replaced by
/// `section`, or with `section` appended if it has no such part.
fn replace_section(report: &str, heading: &str, section: &str) -> String {
    let first = report.starts_with(&format!("{heading}\n")).then_some(0);
    let Some(start) = first.or_else(|| report.find(&format!("\n{heading}\n")).map(|at| at + 1)) else {
        return if report.is_empty() { section.to_string() } else { format!("{report}\n{section}") };
    };
    let end =
        report[start + heading.len()..].find("\n# ").map_or(report.len(), |at| start + heading.len() + at);
    format!("{}{section}{}", &report[..start], &report[end..])
}

/// Runs the four measurements in turn, saying on stderr what it is doing (the slow parts take
/// tens of seconds on a small machine).
fn measure_all(contenders: &[Contender], ours: &Path, storm: &Path) -> Result<measure::Results, String> {
    eprintln!(
        "bench: startup, {} interleaved runs per init, in a private mount namespace",
        measure::STARTUP_RUNS
    );
    let (startup, mut notes) = isolated::startup(ours, contenders)?;
    eprintln!("bench: VmRSS as PID 1 with three sleeping children");
    let rss_kb = measure::rss(contenders)?;
    eprintln!("bench: reaping {} orphans as PID 1, {} runs per init", measure::ORPHANS, measure::STORM_RUNS);
    let (storm, zombies, storm_notes) = measure::orphan_storm(contenders, storm)?;
    notes.extend(storm_notes);
    let sizes = measure::sizes(contenders)?;
    let hot_code = crate::static_build::order_coverage()?;
    Ok(measure::Results { startup, rss_kb, storm, zombies, sizes, notes, hot_code })
}

/// The supervisor measurements in turn, rendered as the second part of the report.
fn measure_supervisors(supervisors: &[Supervisor], ours: &Path) -> Result<String, String> {
    let dir = crate::root().join(SUPERVISOR_DIR);
    let runs = services::measure(supervisors, &dir)?;
    eprintln!(
        "bench: context switches over {} s idle with {} services, all supervisors at once",
        services::IDLE_WINDOW.as_secs(),
        services::IDLE_SERVICES
    );
    let idle = services::idle_switches(supervisors, &dir)?;
    eprintln!("bench: log throughput, {} bytes, {} runs per reader", log_rate::LOG_BYTES, log_rate::LOG_RUNS);
    let log = log_rate::measure(ours, &dir)?;
    Ok(services_report::render(supervisors, &runs, &idle, &log))
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    const REPORT: &str = "# Benchmarks\n\nold pid1\n\n# Supervisor\n\nold sup\n\n# Soak\n\nold soak\n";

    #[test]
    fn a_part_is_replaced_in_place_first_middle_or_last() {
        assert_eq!(
            replace_section(REPORT, "# Benchmarks", "# Benchmarks\n\nnew\n"),
            "# Benchmarks\n\nnew\n\n# Supervisor\n\nold sup\n\n# Soak\n\nold soak\n"
        );
        assert_eq!(
            replace_section(REPORT, "# Supervisor", "# Supervisor\n\nnew\n"),
            "# Benchmarks\n\nold pid1\n\n# Supervisor\n\nnew\n\n# Soak\n\nold soak\n"
        );
        assert_eq!(
            replace_section(REPORT, "# Soak", "# Soak\n\nnew\n"),
            "# Benchmarks\n\nold pid1\n\n# Supervisor\n\nold sup\n\n# Soak\n\nnew\n"
        );
    }

    #[test]
    fn a_missing_part_is_appended() {
        assert_eq!(replace_section("", "# GPU node", "# GPU node\n"), "# GPU node\n");
        assert_eq!(
            replace_section("# Benchmarks\n", "# GPU node", "# GPU node\n"),
            "# Benchmarks\n\n# GPU node\n"
        );
    }
}

//! `cargo xtask bench`: nix2gpu-init against Debian's tini-static, catatonit and dumb-init, all
//! measured in one run on the same machine, so the ratios in BENCHMARKS.md compare like with
//! like. The file is generated here from the measured numbers; nothing in it is hand-edited.
//!
//! Measurements: startup overhead of `INIT -- /bin/true` (not PID 1), VmRSS as PID 1 with three
//! sleeping children, time to reap 10,000 orphans as PID 1 plus a zombie count, binary size.

mod contenders;
mod isolated;
mod measure;
mod process;
mod report;

use std::fs;
use std::path::Path;

use contenders::Contender;

/// Where the generated report goes, relative to the workspace root.
const REPORT_FILE: &str = "BENCHMARKS.md";

/// Builds our static binary, finds the peers, measures everything and writes BENCHMARKS.md.
/// In the copy of itself that the bench starts in a private mount namespace, measures startup
/// only (see `isolated`).
pub fn run() -> Result<(), String> {
    if let Some(ours) = isolated::helper_request() {
        return isolated::serve(ours);
    }
    let facts = report::Machine::read()?;
    let ours = crate::static_build::build()?;
    let contenders = contenders::all(ours.clone())?;
    let storm = measure::build_orphan_storm()?;
    let results = measure_all(&contenders, &ours, &storm)?;
    let text = report::render(&facts, &contenders, &results);
    print!("{text}");
    let path = crate::root().join(REPORT_FILE);
    fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
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
    Ok(measure::Results { startup, rss_kb, storm, zombies, sizes, notes })
}

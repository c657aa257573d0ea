//! `cargo xtask hot-code`: which functions the init runs at start-up and while it supervises,
//! written to src/hot-code.order for the linker to place together (see the init's build.rs).
//!
//! The kernel maps a binary's code 64 kB at a time around each page that faults. Code that runs
//! at start-up but lies all over the binary costs a fault per 64 kB window and makes the whole
//! binary resident, which the init's start-up time and its resident memory both pay for.
//!
//! The list is found by running the init's own scenarios under fixtures/hot-code/first_calls.c,
//! which records each function the first time any of the init's tasks enters it. The names are
//! the linker's own (from the map it writes at each link), so the list matches this toolchain
//! and lock file; after either changes, `cargo xtask build-static` says how much of the list
//! still matches, and running this task again brings it up to date.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::{contenders, measure, process, soak};
use crate::{root, static_build};

/// The ordering file, relative to the workspace root.
pub const ORDER: &str = "src/hot-code.order";
/// Bound on one traced scenario (a trap per function is cheap; the scenarios take under a second).
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// Runs of each scenario: which functions run depends a little on timing (how reads and wake-ups
/// fall), so the list is the union of several runs.
const RUNS: usize = 3;
/// The kernel's fault-around window: the unit in which code becomes resident.
const WINDOW: u64 = 64 * 1024;

/// Functions of the linked binary by address: every symbol name at that address.
pub type Functions = BTreeMap<u64, Vec<String>>;

/// Traces the scenarios, writes the order, links again with it and reports the layout before
/// and after.
pub fn generate() -> Result<(), String> {
    let binary = static_build::build()?;
    let functions = text_functions(&required_map()?)?;
    let entered = trace_scenarios(&binary, &functions)?;
    let before = windows(&functions, &entered);
    let order = order_file(&functions, &entered);
    let path = root().join(ORDER);
    fs::write(&path, &order).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    static_build::build()?;
    let names = ordered_names(&order);
    let after = windows_by_name(&text_functions(&required_map()?)?, &names);
    println!(
        "hot-code: {} functions written to {ORDER}; they spanned {before} windows of 64 kB, {after} now",
        names.len()
    );
    Ok(())
}

/// The last static link's map, which this task cannot do without.
fn required_map() -> Result<String, String> {
    static_build::link_map()?
        .ok_or_else(|| "no link map: this rustc does not link with lld (see the warning of build.rs)".into())
}

/// Every scenario, `RUNS` times, under the tracer: the functions' addresses in the order first
/// entered, scenario after scenario (repeats included; the order file drops them).
fn trace_scenarios(binary: &Path, functions: &Functions) -> Result<Vec<u64>, String> {
    let work = root().join("target/hot-code");
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let addresses = work.join("functions.txt");
    let listing: String = functions.keys().map(|address| format!("{address:x}\n")).collect();
    fs::write(&addresses, listing).map_err(|e| format!("cannot write {}: {e}", addresses.display()))?;
    let tracer = measure::compile_fixture("fixtures/hot-code/first_calls.c", "first_calls")?;
    let mut entered = Vec::new();
    for Scenario { name, command, code } in scenarios(binary, &work)? {
        for run in 1..=RUNS {
            let out = work.join(format!("{name}-{run}.txt"));
            let traced = process::run_timed(traced(&tracer, &addresses, &out, &command), SCENARIO_LIMIT)?;
            if traced.status.code() != Some(code) {
                let stderr = traced.stderr.trim();
                return Err(format!("scenario {name}: {}, expected code {code} ({stderr})", traced.status));
            }
            let text = fs::read_to_string(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
            let first = parse_addresses(&text)?;
            println!("hot-code: scenario {name}, run {run}: {} functions", first.len());
            entered.extend(first);
        }
    }
    Ok(entered)
}

/// How much of the order names functions of this link: (found, listed).
pub fn coverage(functions: &Functions, order: &str) -> (usize, usize) {
    let present: HashSet<&str> = functions.values().flatten().map(String::as_str).collect();
    let names = ordered_names(order);
    (names.iter().filter(|name| present.contains(name.as_str())).count(), names.len())
}

/// The symbols of the `.text` output section in lld's map (`-Map`, with `--no-demangle`).
///
/// Each line has the columns VMA, LMA, size and alignment, then a name indented by what it is:
/// an output section at 0, an input section at 8, a symbol at 16 spaces.
pub fn text_functions(map: &str) -> Result<Functions, String> {
    let mut functions = Functions::new();
    let mut in_text = false;
    for (number, line) in map.lines().enumerate().skip(1) {
        let Some((address, name)) = map_line(line) else {
            return Err(format!("link map line {}: not VMA LMA Size Align Name: {line:?}", number + 1));
        };
        match name.len() - name.trim_start().len() {
            0 => in_text = name == ".text",
            16 if in_text => functions.entry(address).or_default().push(name.trim_start().to_owned()),
            _ => {}
        }
    }
    if functions.is_empty() {
        return Err("the link map lists no symbols in .text".into());
    }
    Ok(functions)
}

/// A map line's address and its name column, indentation kept.
fn map_line(line: &str) -> Option<(u64, &str)> {
    let mut rest = line;
    let mut address = None;
    for column in 0..4 {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ')?;
        if column == 0 {
            address = Some(u64::from_str_radix(&trimmed[..end], 16).ok()?);
        }
        rest = &trimmed[end..];
    }
    Some((address?, rest.strip_prefix(' ')?))
}

/// The tracer's output: hexadecimal addresses, one per line, in the order first entered.
fn parse_addresses(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .map(|line| u64::from_str_radix(line.trim(), 16).map_err(|e| format!("tracer output {line:?}: {e}")))
        .collect()
}

/// The ordering file: a comment saying what it is, then every name of every entered function,
/// in the order first entered (lld skips lines that start with `#`).
fn order_file(functions: &Functions, entered: &[u64]) -> String {
    let mut text = String::from(
        "# The functions nix2gpu-init runs at start-up and while it supervises, in the order they\n\
         # first run: lld places them first in .text (see build.rs). Generated by\n\
         # `cargo xtask hot-code`; do not edit by hand.\n",
    );
    let mut written = HashSet::new();
    for address in entered {
        for name in functions.get(address).into_iter().flatten() {
            if written.insert(name) {
                let _ = writeln!(text, "{name}");
            }
        }
    }
    text
}

/// The names of an ordering file, comments and blank lines left out (no symbol name holds a `#`).
fn ordered_names(order: &str) -> Vec<String> {
    order
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How many 64 kB windows of code the functions at these addresses start in.
fn windows(functions: &Functions, addresses: &[u64]) -> usize {
    addresses.iter().filter(|a| functions.contains_key(a)).map(|a| a / WINDOW).collect::<HashSet<_>>().len()
}

/// The same for functions given by name.
fn windows_by_name(functions: &Functions, names: &[String]) -> usize {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let addresses: Vec<u64> = functions
        .iter()
        .filter(|(_, symbols)| symbols.iter().any(|symbol| wanted.contains(symbol.as_str())))
        .map(|(address, _)| *address)
        .collect();
    windows(functions, &addresses)
}

/// A traced run: its name, its command and the exit code it ends with.
struct Scenario {
    name: &'static str,
    command: Command,
    code: i32,
}

/// What the benches and users run, each ending by itself: start-up not as PID 1 (the startup
/// bench); PID 1 with a shell and sleeping children (the memory bench, which runs ours at warn;
/// the same at the default level, and with an empty and a large environment); PID 1 supervising
/// services (see `services_config`) until a SIGTERM to the init is forwarded to the main process
/// and ends it (128 + 15); then the tools.
fn scenarios(binary: &Path, work: &Path) -> Result<Vec<Scenario>, String> {
    let init = binary.as_os_str().to_owned();
    let mut startup = contenders::in_private_mounts(&[init.clone(), "--".into(), "/bin/true".into()]);
    startup.envs(contenders::OUR_ENV.iter().copied());
    let sleepers_argv = contenders::argv(&[
        init.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "sleep 0.2 & sleep 0.2 & sleep 0.2 & wait".as_ref(),
    ]);
    let sleepers = contenders::as_pid1(&sleepers_argv);
    let mut quiet_sleepers = contenders::as_pid1(&sleepers_argv);
    quiet_sleepers.envs(contenders::OUR_ENV.iter().copied());
    // The environment's size decides which of the collections' code runs (a map that grows or
    // shrinks past a node's capacity splits or merges nodes).
    let mut bare_env_sleepers = contenders::as_pid1(&sleepers_argv);
    bare_env_sleepers.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut large_env_sleepers = contenders::as_pid1(&sleepers_argv);
    large_env_sleepers.envs((0..200).map(|n| (format!("HOT_CODE_{n}"), n.to_string())));
    let config = work.join("services.yaml");
    fs::write(&config, services_config(binary, soak::free_port()?))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let services = contenders::as_pid1(&contenders::argv(&[
        init.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "sleep 1; kill -TERM 1; sleep 5".as_ref(),
    ]));
    let tools = tool_scenarios(&init, work);
    Ok([
        Scenario { name: "startup", command: startup, code: 0 },
        Scenario { name: "sleepers", command: sleepers, code: 0 },
        Scenario { name: "quiet-sleepers", command: quiet_sleepers, code: 0 },
        Scenario { name: "bare-env-sleepers", command: bare_env_sleepers, code: 0 },
        Scenario { name: "large-env-sleepers", command: large_env_sleepers, code: 0 },
        Scenario { name: "services", command: services, code: 128 + 15 },
    ]
    .into_iter()
    .chain(tools)
    .collect())
}

/// The init's tools, whose start-up the ELF and ld.so.cache benches time: a loader cache for the
/// system's library directory, and the interpreter of a copy of /bin/true set and printed. They
/// come after the PID-1 scenarios, so their code goes after the init's.
fn tool_scenarios(init: &OsStr, work: &Path) -> Vec<Scenario> {
    let tool = |name, args: &[&OsStr]| {
        let mut command = Command::new(init);
        command.args(args);
        Scenario { name, command, code: 0 }
    };
    let cache = work.join("ld.so.cache");
    let rewritten = work.join("true");
    vec![
        tool(
            "ldcache",
            &[
                "ldcache".as_ref(),
                "--output".as_ref(),
                cache.as_os_str(),
                "/usr/lib/x86_64-linux-gnu".as_ref(),
            ],
        ),
        tool(
            "set-interpreter",
            &[
                "set-interpreter".as_ref(),
                "--interpreter".as_ref(),
                "/lib64/ld-linux-x86-64.so.2".as_ref(),
                "--output".as_ref(),
                rewritten.as_os_str(),
                "/bin/true".as_ref(),
            ],
        ),
        tool("print-interpreter", &["print-interpreter".as_ref(), "/bin/true".as_ref()]),
    ]
}

/// Services that log, wait for each other, are probed in every way (exec, http_get against
/// Python's web server, tcp_socket), crash and are restarted, and one that asks the init for its
/// status and logs through the control socket.
fn services_config(binary: &Path, port: u16) -> String {
    let init = binary.display();
    format!(
        r#"processes:
  web:
    command: "while :; do echo request served; sleep 0.05; done"
  worker:
    command: "echo worker up; exec sleep 100"
    depends_on: {{web: {{condition: process_started}}}}
  server:
    entrypoint: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    readiness_probe: {{http_get: {{port: {port}, path: /}}, period_seconds: 0.1}}
    liveness_probe: {{tcp_socket: {{port: {port}}}, period_seconds: 0.1}}
  checked:
    command: exec sleep 100
    readiness_probe: {{exec: {{command: "true"}}, period_seconds: 0.1}}
  crasher:
    command: "echo crashing; exit 1"
    availability: {{restart: on_failure, backoff_seconds: 0.05, max_restarts: 3}}
  ask:
    command: "sleep 0.5; {init} status; {init} logs -n 3 web"
    depends_on: {{worker: {{condition: process_started}}, server: {{condition: process_healthy}}}}
"#
    )
}

/// `command` (as built for running directly) run under the tracer instead.
fn traced(tracer: &Path, functions: &Path, out: &Path, command: &Command) -> Command {
    let mut traced = Command::new(tracer);
    traced.arg(functions).arg(out).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => traced.env(key, value),
            None => traced.env_remove(key),
        };
    }
    traced.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    traced
}

/// Where the map of the last static link is: the init's build script directory (see build.rs).
/// None if no link wrote one (a rustc that does not link with lld, where build.rs warns).
pub fn map_path(target: &Path) -> Option<PathBuf> {
    let build = target.join("x86_64-unknown-linux-gnu/release/build");
    fs::read_dir(build)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("nix2gpu-init-"))
        .map(|entry| entry.path().join("out/nix2gpu-init.map"))
        .filter_map(|map| Some((fs::metadata(&map).and_then(|m| m.modified()).ok()?, map)))
        .max()
        .map(|(_, map)| map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
             VMA              LMA     Size Align Out     In      Symbol
          200270           200270       20     4 .note.ABI-tag
          200270           200270       20     1                 __abi_tag
          2e5480           2e5480   271ee8    64 .text
          2e5480           2e5480       31    16         crt1.o:(.text)
          2e5480           2e5480       22     1                 _start
          2e5620           2e5620      15b     1                 handle_amd
          2e5620           2e5620      15b     1                 handle_amd_alias
          323aae           323aae    120aa     1         x.o:(.text._ZN12nix2gpu_init4main17hd1c187b4d33cd845E)
          323aae           323aae    120aa     1                 _ZN12nix2gpu_init4main17hd1c187b4d33cd845E
          560000           560000       10     8 .data
          560000           560000       10     1                 some_data
";

    #[test]
    fn the_map_gives_the_text_symbols_by_address_and_nothing_else() {
        let functions = text_functions(MAP).unwrap();
        assert_eq!(functions.len(), 3);
        assert_eq!(functions[&0x2e5480], ["_start"]);
        assert_eq!(functions[&0x2e5620], ["handle_amd", "handle_amd_alias"]);
        assert_eq!(functions[&0x323aae], ["_ZN12nix2gpu_init4main17hd1c187b4d33cd845E"]);
    }

    #[test]
    fn a_line_that_is_not_a_map_line_is_an_error_with_its_number() {
        let error = text_functions("VMA LMA Size Align Out In Symbol\n200 200 garbage\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn the_order_lists_every_name_once_in_first_entered_order_after_its_comment() {
        let functions = text_functions(MAP).unwrap();
        let text = order_file(&functions, &[0x323aae, 0x2e5620, 0x323aae]);
        assert!(text.starts_with("# "));
        assert_eq!(
            ordered_names(&text),
            ["_ZN12nix2gpu_init4main17hd1c187b4d33cd845E", "handle_amd", "handle_amd_alias"]
        );
    }

    #[test]
    fn coverage_counts_the_listed_names_this_link_has() {
        let functions = text_functions(MAP).unwrap();
        assert_eq!(coverage(&functions, "# comment\n_start\ngone_since\n\nhandle_amd\n"), (2, 3));
    }

    /// The tracer on fixtures/hot-code/calls.c: each function entered is listed once, in the
    /// order first entered, including one that starts a byte after the one entered before it;
    /// a function never entered is not listed.
    #[test]
    fn the_tracer_lists_functions_in_the_order_first_entered() {
        let dir = std::env::temp_dir().join(format!("hot-code-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let program = dir.join("calls");
        // Functions side by side: gcc would align each to 16 bytes.
        let flags = ["-O1", "-static", "-no-pie", "-falign-functions=1"];
        measure::compile("fixtures/hot-code/calls.c", &program, &flags).unwrap();
        let symbols = Command::new("nm").arg(&program).output().expect("nm (binutils)");
        let address = |name: &str| -> u64 {
            let listing = String::from_utf8_lossy(&symbols.stdout);
            let line = listing.lines().find(|line| line.ends_with(&format!(" T {name}"))).unwrap();
            u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
        };
        let [start, main, first, second, never] = ["_start", "main", "first", "second", "never"].map(address);
        assert_eq!(second, first + 1, "calls.c should put second right after first");
        let functions = dir.join("functions.txt");
        fs::write(&functions, format!("{start:x}\n{main:x}\n{first:x}\n{second:x}\n{never:x}\n")).unwrap();
        let tracer = measure::compile_fixture("fixtures/hot-code/first_calls.c", "first_calls").unwrap();
        let out = dir.join("entered.txt");
        let status = Command::new(&tracer).arg(&functions).arg(&out).arg(&program).status().unwrap();
        assert!(status.success(), "{status}");
        let entered = parse_addresses(&fs::read_to_string(&out).unwrap()).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(entered, [start, main, first, second]);
    }

    #[test]
    fn windows_count_64k_windows_of_function_starts() {
        let functions: Functions =
            [(0x10000, vec!["a".into()]), (0x1ffff, vec!["b".into()]), (0x20000, vec!["c".into()])].into();
        assert_eq!(windows(&functions, &[0x10000, 0x1ffff]), 1);
        assert_eq!(windows_by_name(&functions, &["a".into(), "c".into()]), 2);
    }
}

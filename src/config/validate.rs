//! The rules a configuration must follow beyond its types: the dependency graph as a whole
//! (names, conditions, cycles), and the checks of single values that the planner applies while
//! it converts them (signals, hosts, ports, exit codes, ...). Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use nix::sys::signal::Signal;

use super::builtins::{self, BuiltinTraits};
use super::locate::KeyPath;
use super::provenance::Issue;
use super::schema::{port_out_of_range, signal_out_of_range};
use super::{Condition, Config, Process, SignalName, suggest};

/// Process names that belong to the init, each with what uses it.
const RESERVED: &[(&str, &str)] = &[
    ("init", "the init's own log lines use that name"),
    ("main", "the `-- CMD` main process uses that name"),
];

/// Every problem of the dependency graph and of process names. `broken` processes (with
/// structural errors) still count as defined, but their settings are not trusted for the
/// conditions that depend on them. `builtins` are the enabled built-in nodes: dependencies on
/// them are checked like those on processes; one on a built-in that is not enabled is met at
/// once (a `gpu` dependency on a machine without a GPU waits for nothing).
pub(super) fn graph(config: &Config, broken: &BTreeSet<String>, builtins: &[BuiltinTraits]) -> Vec<Issue> {
    let mut issues = reserved_names(config);
    for (name, process) in &config.processes {
        issues.extend(dependencies(config, name, process, broken, builtins));
    }
    issues.extend(cycles(config));
    issues
}

fn processes_path(name: &str) -> KeyPath {
    KeyPath::root().key("processes").key(name)
}

fn reserved_names(config: &Config) -> Vec<Issue> {
    let reserved =
        RESERVED.iter().filter(|(name, _)| config.processes.contains_key(*name)).map(|(name, why)| {
            Issue::key(processes_path(name), format!("`{name}` is reserved: {why}; pick another name"))
        });
    let builtins = config.processes.keys().filter(|name| builtins::is_builtin(name)).map(|name| {
        let message = format!(
            "`{name}` is the name of the built-in {name} node; to run your own instead, turn the \
             built-in off with `{}: false` and give yours another name",
            builtins::enable_key(name)
        );
        Issue::key(processes_path(name), message)
    });
    reserved.chain(builtins).collect()
}

/// Undefined and self dependencies, and conditions the dependency cannot meet.
fn dependencies(
    config: &Config,
    name: &str,
    process: &Process,
    broken: &BTreeSet<String>,
    builtins: &[BuiltinTraits],
) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (dependency, spec) in &process.depends_on {
        let path = processes_path(name).key("depends_on").key(dependency);
        if dependency == name {
            issues.push(Issue::key(path, format!("`{name}` depends on itself")));
            continue;
        }
        let (has_readiness_probe, has_ready_log_line) = if builtins::is_builtin(dependency) {
            match builtins.iter().find(|b| b.name == dependency) {
                Some(builtin) => (builtin.can_be_healthy, builtin.has_ready_log_line),
                None => continue,
            }
        } else {
            let Some(target) = config.processes.get(dependency) else {
                let hint = suggest::closest(dependency, config.processes.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                issues.push(Issue::key(
                    path,
                    format!("`{name}` depends on `{dependency}`, which is not defined{hint}"),
                ));
                continue;
            };
            if broken.contains(dependency) {
                continue;
            }
            // A notify process is healthy once it said READY=1.
            (target.readiness_probe.is_some() || target.notify, target.ready_log_line.is_some())
        };
        let unmet = match spec.condition {
            Condition::ProcessHealthy if !has_readiness_probe => Some(format!(
                "`{name}` waits for `{dependency}` to be healthy, but `{dependency}` has no readiness_probe"
            )),
            Condition::ProcessLogReady if !has_ready_log_line => Some(format!(
                "`{name}` waits for a ready line from `{dependency}`, but `{dependency}` has no ready_log_line"
            )),
            _ => None,
        };
        issues.extend(unmet.map(|message| Issue::value(path.key("condition"), message)));
    }
    issues
}

/// One issue per dependency cycle found by a depth-first search (self-dependencies are
/// reported apart), located at the first edge of the cycle: `a -> b -> a` at
/// `processes.a.depends_on.b`.
fn cycles(config: &Config) -> Vec<Issue> {
    let names: Vec<&str> = config.processes.keys().map(String::as_str).collect();
    let ids: BTreeMap<&str, usize> = names.iter().enumerate().map(|(id, name)| (*name, id)).collect();
    let edges: Vec<Vec<usize>> = config
        .processes
        .iter()
        .map(|(name, process)| {
            process
                .depends_on
                .keys()
                .filter(|d| *d != name)
                .filter_map(|d| ids.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    find_cycles(&edges)
        .into_iter()
        .filter_map(|cycle| {
            let (first, second) = (names.get(*cycle.first()?)?, names.get(*cycle.get(1)?)?);
            let mut shown: Vec<&str> = cycle.iter().filter_map(|id| names.get(*id).copied()).collect();
            shown.push(first);
            let path = processes_path(first).key("depends_on").key(second);
            Some(Issue::key(path, format!("dependency cycle: {}", shown.join(" -> "))))
        })
        .collect()
}

/// The cycles closed by back edges of an iterative depth-first search (no recursion: a long
/// chain of processes must not overflow PID 1's stack). Each cycle is listed from the node the
/// back edge returns to.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnStack,
        Done,
    }
    let mut state = vec![State::New; edges.len()];
    let mut cycles = Vec::new();
    for root in 0..edges.len() {
        if state[root] != State::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = State::OnStack;
        while let Some((node, next)) = stack.last_mut() {
            let Some(&to) = edges.get(*node).and_then(|out| out.get(*next)) else {
                state[*node] = State::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match state.get(to) {
                Some(State::New) => {
                    state[to] = State::OnStack;
                    stack.push((to, 0));
                }
                Some(State::OnStack) => {
                    let start = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    cycles.push(stack[start..].iter().map(|(n, _)| *n).collect());
                }
                _ => {}
            }
        }
    }
    cycles
}

/// A signal by number (1..=31) or name (`SIGTERM`, `TERM`, `term`).
pub(super) fn signal(signal: &SignalName) -> Result<i32, String> {
    match signal {
        SignalName::Number(number) if (1..=31).contains(number) => Ok(*number),
        SignalName::Number(number) => Err(signal_out_of_range(number)),
        SignalName::Name(name) => {
            let upper = name.trim().to_ascii_uppercase();
            let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
            Signal::from_str(&full).map(|signal| signal as i32).map_err(|_| {
                let hint = suggest::closest(&full, Signal::iterator().map(Signal::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                format!("unknown signal `{name}`{hint}")
            })
        }
    }
}

/// A `KEY=VALUE` entry of `environment`.
pub(super) fn env_entry(entry: &str) -> Result<(&str, &str), String> {
    match entry.split_once('=') {
        Some(("", _)) => Err(format!("`{entry}`: the variable name before `=` is empty")),
        Some(pair) => Ok(pair),
        None => Err(format!("`{entry}` is not KEY=VALUE: add `=` (`{entry}=` for an empty value)")),
    }
}

/// An exit code of `success_exit_codes`.
pub(super) fn exit_code(code: i32) -> Result<i32, String> {
    if (0..=255).contains(&code) {
        Ok(code)
    } else {
        Err(format!("exit code {code} is out of range: expected 0..=255"))
    }
}

/// A probe threshold: consecutive results, so at least one.
pub(super) fn threshold(value: u32) -> Result<u32, String> {
    if value >= 1 {
        Ok(value)
    } else {
        Err("must be at least 1 (it counts consecutive probe results)".into())
    }
}

/// The probe's host: an IP address, or `localhost` (127.0.0.1). PID 1 does no DNS: a name
/// lookup would need NSS (see `accounts.rs`) and could hang.
pub(super) fn host(host: &str) -> Result<IpAddr, String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().map_err(|_| {
        format!("host `{host}` is not an IP address or `localhost`: probes do no DNS lookups (PID 1 has no resolver)")
    })
}

/// `nix2gpu.health.listen`: an IP address and a port (`0.0.0.0:8080`, `[::]:8080`). No host
/// names: PID 1 does no DNS. Port 0 (any free port) is refused: nobody could find the endpoint.
pub(super) fn listen(listen: &str) -> Result<SocketAddr, String> {
    const EXAMPLES: &str = "such as `0.0.0.0:8080`, `127.0.0.1:9100` or `[::]:8080`";
    if let Ok(address) = listen.parse::<SocketAddr>() {
        return if address.port() == 0 { Err(port_out_of_range(0)) } else { Ok(address) };
    }
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, ""));
    match port.parse::<u64>() {
        Ok(port) if port > u64::from(u16::MAX) => Err(port_out_of_range(port)),
        Ok(_) if !host.is_empty() && !host.contains([':', '[']) && host.parse::<IpAddr>().is_err() => {
            Err(format!(
                "`{host}` in `{listen}` is not an IP address: the endpoint does no DNS lookups (PID 1 has no \
                 resolver); write an address, {EXAMPLES}"
            ))
        }
        _ => Err(format!("`{listen}` is not an IP address and a port: expected `address:port`, {EXAMPLES}")),
    }
}

/// A port written as text (after expansion).
pub(super) fn port_text(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u64>() {
        Ok(number) => port_number(number),
        Err(_) => Err(format!("port `{text}` is not a number: expected 1..=65535")),
    }
}

/// A port number.
pub(super) fn port_number(number: u64) -> Result<u16, String> {
    u16::try_from(number).ok().filter(|port| *port != 0).ok_or_else(|| port_out_of_range(number))
}

/// The scheme of an HTTP probe: only plain HTTP.
pub(super) fn scheme(scheme: &str) -> Result<(), String> {
    if scheme.eq_ignore_ascii_case("http") {
        Ok(())
    } else {
        Err(format!(
            "scheme `{scheme}` is not supported: probes speak plain HTTP only; probe a plain-HTTP port, or use \
             an `exec` probe (for example with curl)"
        ))
    }
}

/// The path of an HTTP probe.
pub(super) fn http_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') { Ok(()) } else { Err(format!("path `{path}` must start with `/`")) }
}

/// The status code an HTTP probe expects.
pub(super) fn status_code(code: u16) -> Result<u16, String> {
    if (100..=599).contains(&code) {
        Ok(code)
    } else {
        Err(format!("status code {code} is out of range: expected 100..=599"))
    }
}

/// `ready_log_line`, compiled. process-compose matches it anywhere in a line, as
/// `Regex::is_match` does.
pub(super) fn ready_log_line(pattern: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::Regex::new(pattern).map_err(|error| {
        let error = error.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        format!("`ready_log_line` is not a valid regular expression: {error}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        serde_yaml::from_str(text).unwrap()
    }

    fn messages(text: &str) -> Vec<String> {
        graph(&config(text), &BTreeSet::new(), &[]).into_iter().map(|issue| issue.to_string()).collect()
    }

    #[test]
    fn dependency_problems() {
        let text = "processes:
  web: {command: x, depends_on: {dbb: {}, web: {}, db: {condition: process_healthy}, log: {condition: process_log_ready}}}
  db: {command: x}
  log: {command: x}
";
        assert_eq!(
            messages(text),
            [
                "processes.web.depends_on.db.condition: `web` waits for `db` to be healthy, but `db` has no readiness_probe",
                "processes.web.depends_on.dbb: `web` depends on `dbb`, which is not defined; did you mean `db`?",
                "processes.web.depends_on.log.condition: `web` waits for a ready line from `log`, but `log` has no ready_log_line",
                "processes.web.depends_on.web: `web` depends on itself",
            ]
        );
    }

    #[test]
    fn cycles_are_printed() {
        let text = "processes:
  a: {command: x, depends_on: {b: {}}}
  b: {command: x, depends_on: {c: {}}}
  c: {command: x, depends_on: {a: {}}}
  d: {command: x, depends_on: {e: {}}}
  e: {command: x, depends_on: {d: {}, a: {}}}
";
        assert_eq!(
            messages(text),
            [
                "processes.a.depends_on.b: dependency cycle: a -> b -> c -> a",
                "processes.d.depends_on.e: dependency cycle: d -> e -> d",
            ]
        );
    }

    #[test]
    fn long_chains_do_not_recurse() {
        let edges: Vec<Vec<usize>> = (0..100_000).map(|i| vec![(i + 1) % 100_000]).collect();
        assert_eq!(find_cycles(&edges).len(), 1);
    }

    #[test]
    fn reserved_names_explain_themselves() {
        assert_eq!(
            messages("processes:\n  init: {command: x}\n  sshd: {command: x}\n"),
            [
                "processes.init: `init` is reserved: the init's own log lines use that name; pick another name",
                "processes.sshd: `sshd` is the name of the built-in sshd node; to run your own instead, turn the \
                 built-in off with `nix2gpu.ssh.enable: false` and give yours another name",
            ]
        );
    }

    #[test]
    fn signals_by_name_or_number() {
        for name in ["SIGTERM", "TERM", "term", "sigterm"] {
            assert_eq!(signal(&SignalName::Name(name.into())), Ok(15), "{name}");
        }
        assert_eq!(signal(&SignalName::Number(2)), Ok(2));
        assert_eq!(
            signal(&SignalName::Name("SIGTREM".into())),
            Err("unknown signal `SIGTREM`; did you mean `SIGTERM`?".into())
        );
        assert_eq!(signal(&SignalName::Name("nonsense".into())), Err("unknown signal `nonsense`".into()));
        assert_eq!(signal(&SignalName::Number(0)), Err(signal_out_of_range(0)));
        assert_eq!(signal(&SignalName::Number(32)), Err(signal_out_of_range(32)));
    }

    #[test]
    fn values() {
        assert_eq!(env_entry("A=b=c"), Ok(("A", "b=c")));
        assert_eq!(env_entry("A="), Ok(("A", "")));
        assert!(env_entry("A").is_err() && env_entry("=x").is_err());
        assert!(exit_code(255).is_ok() && exit_code(256).is_err() && exit_code(-1).is_err());
        assert!(threshold(0).is_err() && threshold(1).is_ok());
        assert_eq!(host("localhost"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(host("[::1]"), Ok("::1".parse().unwrap()));
        assert!(host("db.internal").is_err());
        assert_eq!(port_text("8080"), Ok(8080));
        assert_eq!(port_text("0"), Err(port_out_of_range(0)));
        assert_eq!(port_text("http"), Err("port `http` is not a number: expected 1..=65535".into()));
        assert!(port_number(65536).is_err());
        assert!(scheme("HTTP").is_ok() && scheme("https").is_err());
        assert!(http_path("/x").is_ok() && http_path("x").is_err());
        assert!(status_code(200).is_ok() && status_code(99).is_err());
        assert!(ready_log_line("ready|listening on \\d+").is_ok());
        assert_eq!(listen("0.0.0.0:8080"), Ok("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(listen("[::1]:9100"), Ok("[::1]:9100".parse().unwrap()));
        assert_eq!(listen("127.0.0.1:0"), Err(port_out_of_range(0)));
        assert_eq!(listen("127.0.0.1:70000"), Err(port_out_of_range(70000)));
        assert!(
            listen("localhost:8080").unwrap_err().starts_with("`localhost` in `localhost:8080` is not an IP")
        );
        for bad in ["0.0.0.0", ":8080", "::1:8080", "8080", "", "0.0.0.0:http"] {
            assert!(listen(bad).unwrap_err().contains("is not an IP address and a port"), "{bad}");
        }
        assert!(
            ready_log_line("(unclosed")
                .unwrap_err()
                .starts_with("`ready_log_line` is not a valid regular expression: ")
        );
    }
}

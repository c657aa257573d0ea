//! The plan: a checked configuration turned into what the runtime executes.
//!
//! Everything the runtime needs is resolved here, once, where errors can still be reported
//! with file, line and column: dependency names become node ids, `${VAR}`s are expanded,
//! users are looked up, probes get their addresses, defaults are filled in. The only I/O is
//! reading the account files and `env_file`s.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::accounts::AccountFiles;
use crate::graph::{NodeSpec, Thresholds};

use super::builtins::{Builtins, StashedSecret};
use super::expand::expand;
use super::locate::KeyPath;
use super::probe::{self, ProbePlan};
use super::provenance::Issue;
use super::user::{self, AccountDb};
use super::{Config, ConfigError, NotifyAccess, Process, direct, env_file, sorted, validate};
use crate::accounts::Credentials;

/// Lines of output kept per process when `log_length` is not set.
pub const DEFAULT_LOG_LENGTH: usize = 1000;
/// The first restart delay when `availability.backoff_seconds` is not set.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Time between the stop request and SIGKILL when `shutdown.timeout_seconds` is not set.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The signal that stops a process when `shutdown.signal` is not set (SIGTERM).
pub const DEFAULT_STOP_SIGNAL: i32 = 15;

/// What the runtime runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One per process, sorted by name; a service's index is its graph node id.
    pub services: Vec<Service>,
    /// Lines of output kept in memory per process (`log_length`, default 1000).
    pub log_length: usize,
    /// Changes to the environment every process gets: variables removed (secrets), then set.
    pub base_env: BaseEnv,
    /// Secrets to move from the init's environment into root-only files before nodes start.
    pub secrets: Vec<StashedSecret>,
}

/// Changes the plan makes to the environment the init gives every process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseEnv {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
}

impl BaseEnv {
    /// Applies the changes to `env`.
    pub fn apply<K: From<String> + Ord, V: From<String>>(&self, env: &mut BTreeMap<K, V>) {
        for name in &self.remove {
            env.remove(&K::from(name.clone()));
        }
        for (name, value) in &self.set {
            env.insert(K::from(name.clone()), V::from(value.clone()));
        }
    }
}

/// One process, ready to start.
#[derive(Debug, Clone)]
pub struct Service {
    /// The graph's view: dependencies as ids (indices in [`Plan::services`]), restart policy,
    /// probe thresholds, timeouts. `main` is always false here.
    pub spec: NodeSpec,
    /// The shell and `command` (`/bin/sh -c CMD` unless `shell` says otherwise), or the
    /// `entrypoint`; expanded.
    pub argv: Vec<String>,
    /// The top-level `environment`, then `env_file`, then the process's `environment`, expanded,
    /// one entry per variable (the last value wins, at the place of the first). The init's own
    /// environment is not included: the runtime layers these on top of it.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// `None`: the init's own user.
    pub user: Option<Credentials>,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
    pub ready_log_line: Option<regex_lite::Regex>,
    /// The shell and `shutdown.command`, when set: run instead of sending the signal.
    pub shutdown_command: Option<Vec<String>>,
    pub shutdown_signal: i32,
    /// Whose notifications count, when `spec.notify` is set.
    pub notify_access: NotifyAccess,
}

/// Turns `config` into a [`Plan`], or every error found: the dependency graph's, each process's
/// values, users (looked up in `accounts`) and `env_file`s. `init_env` is the environment the
/// init gives its processes; `${VAR}`s are expanded against it and the config's environments.
pub fn plan(
    config: &Config,
    init_env: &BTreeMap<OsString, OsString>,
    accounts: &AccountFiles,
) -> Result<Plan, Vec<ConfigError>> {
    plan_trusting(config, init_env, accounts, &BTreeSet::new())
}

/// [`plan`], skipping the checks of the `broken` processes (which already have structural
/// errors that their checks would only repeat). The plan is meaningful only without them.
pub(super) fn plan_trusting(
    config: &Config,
    init_env: &BTreeMap<OsString, OsString>,
    accounts: &AccountFiles,
    broken: &BTreeSet<String>,
) -> Result<Plan, Vec<ConfigError>> {
    let vars = strings(init_env);
    let mut issues = Vec::new();
    let builtins = Builtins::resolve(config, &vars, &mut issues);
    issues.extend(validate::graph(config, broken, &builtins.traits()));
    if let Some(listen) = &config.nix2gpu.health.listen {
        let path = KeyPath::root().key("nix2gpu").key("health").key("listen");
        check(validate::listen(listen), &path, &mut issues);
    }
    let base_env = BaseEnv { remove: builtins.scrub.clone(), set: builtins.env.clone() };
    let mut base_vars = vars;
    base_env.apply(&mut base_vars);
    let planner = Planner::new(config, base_vars, &builtins, accounts, &mut issues);
    let mut services = Vec::with_capacity(config.processes.len() + builtins.nodes.len());
    for (name, process) in config.processes.iter().filter(|(name, _)| !broken.contains(*name)) {
        let mut process_issues = Vec::new();
        let service = planner.service(name, process, &mut process_issues);
        issues.extend(process_issues);
        services.extend(service);
    }
    services.extend(builtins.services());
    if !issues.is_empty() {
        let errors = issues.into_iter().map(|issue| config.provenance.locate(issue)).collect();
        let files: Vec<PathBuf> = config.provenance.paths().map(Path::to_path_buf).collect();
        return Err(sorted(errors, &files));
    }
    Ok(Plan {
        services,
        log_length: config.log_length.unwrap_or(DEFAULT_LOG_LENGTH),
        base_env,
        secrets: builtins.secrets,
    })
}

/// The environment as text (a variable that is not UTF-8 is read lossily).
fn strings(env: &BTreeMap<OsString, OsString>) -> BTreeMap<String, String> {
    env.iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}

/// What all processes share.
struct Planner<'a> {
    /// The shell and its argument, before a command string.
    shell: Vec<String>,
    ids: BTreeMap<&'a str, usize>,
    /// The top-level `environment`, expanded.
    global_env: Vec<(String, String)>,
    /// The init's environment with `global_env` applied: where each process's starts.
    base_vars: BTreeMap<String, String>,
    accounts: AccountDb<'a>,
}

/// Records the error of `result` in `issues` (as a problem with the value at `path`) and gives
/// the value if there was none.
pub(super) fn check<T>(result: Result<T, String>, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<T> {
    result.map_err(|message| issues.push(Issue::value(path.clone(), message))).ok()
}

impl<'a> Planner<'a> {
    fn new(
        config: &'a Config,
        mut base_vars: BTreeMap<String, String>,
        builtins: &Builtins,
        accounts: &'a AccountFiles,
        issues: &mut Vec<Issue>,
    ) -> Self {
        let global_path = KeyPath::root().key("environment");
        let global_env = environment_entries(&config.environment, &global_path, &mut base_vars, issues);
        let names =
            config.processes.keys().map(String::as_str).chain(builtins.nodes.iter().map(|node| node.name()));
        Self {
            shell: shell(config),
            ids: names.enumerate().map(|(id, name)| (name, id)).collect(),
            global_env,
            base_vars,
            accounts: AccountDb::new(accounts),
        }
    }

    /// One service, with its problems added to `issues` (`None` when a part it cannot do
    /// without failed; the plan as a whole is only used when there are no problems at all).
    fn service(&self, name: &str, process: &Process, issues: &mut Vec<Issue>) -> Option<Service> {
        let path = KeyPath::root().key("processes").key(name);
        let (env, vars) = self.environment(process, &path, issues);
        let argv = self.argv(process, &path, &vars, issues);
        let working_dir = process.working_dir.as_ref().and_then(|dir| {
            let dir = check(expand(dir, &vars), &path.key("working_dir"), issues)?;
            check(non_empty(dir, "`working_dir`"), &path.key("working_dir"), issues).map(PathBuf::from)
        });
        let user = process
            .user
            .as_ref()
            .and_then(|spec| check(user::resolve(spec, &self.accounts), &path.key("user"), issues));
        let probes = probe::Context { shell: &self.shell, vars: &vars, working_dir: working_dir.as_deref() };
        let readiness = process
            .readiness_probe
            .as_ref()
            .and_then(|p| probes.plan(p, &path.key("readiness_probe"), issues));
        let liveness =
            process.liveness_probe.as_ref().and_then(|p| probes.plan(p, &path.key("liveness_probe"), issues));
        let ready_log_line = self.ready_log_line(process, &path, issues);
        let shutdown_command = process.shutdown.command.as_ref().and_then(|command| {
            check(self.shell_argv(command, &vars), &path.key("shutdown").key("command"), issues)
        });
        let shutdown_signal = match &process.shutdown.signal {
            Some(signal) => check(validate::signal(signal), &path.key("shutdown").key("signal"), issues),
            None => Some(DEFAULT_STOP_SIGNAL),
        };
        let env = if [argv.as_ref().filter(|_| process.command.is_some()), shutdown_command.as_ref()]
            .into_iter()
            .flatten()
            .any(|argv| !argv.starts_with(&self.shell))
        {
            with_pwd(env, working_dir.as_deref())
        } else {
            env
        };
        let watchdog = notify_settings(process, &path, issues);
        let spec = self.node_spec(name, process, &path, readiness.as_ref(), liveness.as_ref(), issues);
        Some(Service {
            spec: NodeSpec { watchdog: watchdog?, ..spec? },
            argv: argv?,
            env,
            working_dir,
            user,
            readiness: readiness.map(|(plan, _)| plan),
            liveness: liveness.map(|(plan, _)| plan),
            ready_log_line,
            shutdown_command,
            shutdown_signal: shutdown_signal?,
            notify_access: process.notify_access.unwrap_or_default(),
        })
    }

    /// The process's environment entries (for [`Service::env`]) and all variables it sees (for
    /// expansion): the init's, the global entries, `env_file`, then its own.
    fn environment(
        &self,
        process: &Process,
        path: &KeyPath,
        issues: &mut Vec<Issue>,
    ) -> (Vec<(String, String)>, BTreeMap<String, String>) {
        let mut vars = self.base_vars.clone();
        let mut entries = self.global_env.clone();
        if let Some(file) = &process.env_file {
            let location = env_file_path(file, process.working_dir.as_deref(), &self.base_vars);
            let file_path = path.key("env_file");
            for (key, value) in check(env_file::read(&location), &file_path, issues).unwrap_or_default() {
                if let Some(value) = check(expand(&value, &vars), &file_path, issues) {
                    vars.insert(key.clone(), value.clone());
                    entries.push((key, value));
                }
            }
        }
        entries.extend(environment_entries(
            &process.environment,
            &path.key("environment"),
            &mut vars,
            issues,
        ));
        (deduplicate(entries), vars)
    }

    /// The argv: the shell and `command`, or the `entrypoint`.
    fn argv(
        &self,
        process: &Process,
        path: &KeyPath,
        vars: &BTreeMap<String, String>,
        issues: &mut Vec<Issue>,
    ) -> Option<Vec<String>> {
        match (&process.command, &process.entrypoint) {
            (Some(_), Some(_)) => {
                let message = "set either `command` (run by the shell) or `entrypoint` (an argv), not both";
                issues.push(Issue::key(path.key("entrypoint"), message));
                None
            }
            (None, None) => {
                let message = "a process needs `command` (run by the shell) or `entrypoint` (an argv)";
                issues.push(Issue::key(path.clone(), message));
                None
            }
            (Some(command), None) => check(self.shell_argv(command, vars), &path.key("command"), issues),
            (None, Some(entrypoint)) => entrypoint_argv(entrypoint, &path.key("entrypoint"), vars, issues),
        }
    }

    /// The shell and an expanded command string; with the default shell, just the string's
    /// words when that is all the shell would execute (see [`direct`]).
    fn shell_argv(&self, command: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
        let command = non_empty(expand(command, vars)?, "the command")?;
        let words = (self.shell == DEFAULT_SHELL).then(|| direct::argv(&command)).flatten();
        Ok(words.unwrap_or_else(|| self.shell.iter().cloned().chain([command]).collect()))
    }

    fn ready_log_line(
        &self,
        process: &Process,
        path: &KeyPath,
        issues: &mut Vec<Issue>,
    ) -> Option<regex_lite::Regex> {
        let pattern = process.ready_log_line.as_ref()?;
        if process.readiness_probe.is_some() {
            let message = "`ready_log_line` and `readiness_probe` cannot be used together (as in process-compose): \
                           readiness comes from one or the other";
            issues.push(Issue::key(path.key("ready_log_line"), message));
            return None;
        }
        check(validate::ready_log_line(pattern), &path.key("ready_log_line"), issues)
    }

    fn node_spec(
        &self,
        name: &str,
        process: &Process,
        path: &KeyPath,
        readiness: Option<&(ProbePlan, Thresholds)>,
        liveness: Option<&(ProbePlan, Thresholds)>,
        issues: &mut Vec<Issue>,
    ) -> Option<NodeSpec> {
        let depends_on = process
            .depends_on
            .iter()
            .filter_map(|(dependency, spec)| Some((*self.ids.get(dependency.as_str())?, spec.condition)))
            .collect();
        let backoff = match process.availability.backoff_seconds {
            Some(seconds) => {
                check(positive(seconds.0), &path.key("availability").key("backoff_seconds"), issues)
            }
            None => Some(DEFAULT_BACKOFF),
        };
        let success_exit_codes = success_exit_codes(process, path, issues);
        Some(NodeSpec {
            name: name.to_string(),
            depends_on,
            restart: process.availability.restart,
            backoff: backoff?,
            max_restarts: process.availability.max_restarts.filter(|max| *max > 0),
            exit_on_end: process.availability.exit_on_end,
            success_exit_codes: success_exit_codes?,
            readiness: readiness.map(|(_, thresholds)| *thresholds),
            liveness: liveness.map(|(_, thresholds)| *thresholds),
            has_ready_log_line: process.ready_log_line.is_some(),
            notify: process.notify,
            watchdog: None,
            shutdown_timeout: process.shutdown.timeout_seconds.map_or(DEFAULT_STOP_TIMEOUT, |s| s.0),
            disabled: process.disabled,
            main: false,
        })
    }
}

/// Checks the notify extension's keys and gives the watchdog period (`Some(None)`: no
/// watchdog). Readiness comes from one source, and the other keys only mean something with
/// `notify: true`.
fn notify_settings(process: &Process, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<Option<Duration>> {
    let before = issues.len();
    if process.notify {
        let others = [
            ("readiness_probe", process.readiness_probe.is_some()),
            ("ready_log_line", process.ready_log_line.is_some()),
        ];
        for (other, _) in others.iter().filter(|(_, set)| *set) {
            let message = format!(
                "`notify` and `{other}` cannot be used together: readiness comes from one or the other"
            );
            issues.push(Issue::key(path.key("notify"), message));
        }
    } else {
        if process.notify_access.is_some() {
            let message =
                "`notify_access` needs `notify: true`: it says who may send the process's notifications";
            issues.push(Issue::key(path.key("notify_access"), message));
        }
        if process.watchdog_seconds.is_some() {
            let message = "`watchdog_seconds` needs `notify: true`: the watchdog is fed by the process's \
                           WATCHDOG=1 notifications";
            issues.push(Issue::key(path.key("watchdog_seconds"), message));
        }
    }
    let watchdog = match process.watchdog_seconds {
        Some(seconds) if process.notify => check(positive(seconds.0), &path.key("watchdog_seconds"), issues),
        _ => None,
    };
    (issues.len() == before).then_some(watchdog)
}

/// The shell that runs command strings when none is configured.
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The shell that runs command strings: `shell.shell_command` (default `/bin/sh`) and
/// `shell.shell_argument` (default `-c`; an empty one is left out).
fn shell(config: &Config) -> Vec<String> {
    let shell = config.shell.as_ref();
    let program = shell.and_then(|s| s.shell_command.clone()).unwrap_or_else(|| DEFAULT_SHELL[0].into());
    let argument = shell.and_then(|s| s.shell_argument.clone()).unwrap_or_else(|| DEFAULT_SHELL[1].into());
    std::iter::once(program).chain(Some(argument).filter(|a| !a.is_empty())).collect()
}

/// `env` with `PWD` as the shell would have exported it (the absolute working directory),
/// for a command executed without the shell; a `PWD` the configuration sets stays.
fn with_pwd(mut env: Vec<(String, String)>, working_dir: Option<&Path>) -> Vec<(String, String)> {
    if env.iter().any(|(key, _)| key == "PWD") {
        return env;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let dir = working_dir.map_or_else(|| cwd.clone(), |dir| cwd.join(dir));
    // Exactly one more: the list lives as long as the service, and a push into an empty list
    // reserves four entries (192 bytes per service, mostly unused).
    env.reserve_exact(1);
    env.push(("PWD".into(), dir.to_string_lossy().into_owned()));
    env
}

/// `KEY=VALUE` entries, each expanded against `vars` and then added to them, in order.
fn environment_entries(
    entries: &[String],
    path: &KeyPath,
    vars: &mut BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = path.index(index);
        let Some((key, value)) = check(validate::env_entry(entry), &entry_path, issues) else { continue };
        let Some(value) = check(expand(value, vars), &entry_path, issues) else { continue };
        vars.insert(key.to_string(), value.clone());
        out.push((key.to_string(), value));
    }
    out
}

/// One entry per variable: the last value, at the place of the first.
fn deduplicate(entries: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match position.get(&key) {
            Some(&index) => out[index].1 = value,
            None => {
                position.insert(key.clone(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// Where `env_file` is: relative to `working_dir` (expanded with the init's and the global
/// environment, since the file's own variables cannot be known before it is read).
fn env_file_path(file: &str, working_dir: Option<&str>, vars: &BTreeMap<String, String>) -> PathBuf {
    let file = Path::new(file);
    match working_dir.and_then(|dir| expand(dir, vars).ok()) {
        Some(dir) if file.is_relative() => Path::new(&dir).join(file),
        _ => file.to_path_buf(),
    }
}

fn entrypoint_argv(
    entrypoint: &[String],
    path: &KeyPath,
    vars: &BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) -> Option<Vec<String>> {
    if entrypoint.is_empty() {
        issues
            .push(Issue::value(path.clone(), "`entrypoint` is empty: it needs at least the program to run"));
        return None;
    }
    let before = issues.len();
    let argv: Vec<String> = entrypoint
        .iter()
        .enumerate()
        .filter_map(|(index, item)| check(expand(item, vars), &path.index(index), issues))
        .collect();
    if issues.len() > before {
        return None;
    }
    match argv.first() {
        Some(program) if program.is_empty() => {
            issues.push(Issue::value(path.index(0), "the program (the first item of `entrypoint`) is empty"));
            None
        }
        _ => Some(argv),
    }
}

fn success_exit_codes(process: &Process, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<Vec<i32>> {
    let Some(codes) = &process.success_exit_codes else { return Some(vec![0]) };
    let path = path.key("success_exit_codes");
    if codes.is_empty() {
        issues.push(Issue::value(
            path,
            "`success_exit_codes` is empty: list at least one code, or leave it out for [0]",
        ));
        return None;
    }
    let before = issues.len();
    let codes: Vec<i32> = codes
        .iter()
        .enumerate()
        .filter_map(|(index, code)| check(validate::exit_code(*code), &path.index(index), issues))
        .collect();
    (issues.len() == before).then_some(codes)
}

/// A duration that must not be zero (a zero backoff or probe period would spin).
pub(super) fn positive(duration: Duration) -> Result<Duration, String> {
    if duration.is_zero() { Err("must be more than 0 seconds".into()) } else { Ok(duration) }
}

fn non_empty(text: String, what: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err(format!("{what} is empty (after `${{VAR}}` expansion)"))
    } else {
        Ok(text)
    }
}

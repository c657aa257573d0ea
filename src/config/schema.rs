//! The serde types of the configuration file: process-compose's schema where the features
//! overlap, plus the `nix2gpu:` section. Every struct denies unknown fields so a typo is an
//! error with a location instead of a silently ignored setting. The JSON Schema printed by
//! `nix2gpu-init schema` is derived from these same types.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::DEFAULT_SHUTDOWN_TIMEOUT;

/// The whole configuration, as one file or the merge of several.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// process-compose's schema version; accepted for compatibility, not interpreted.
    pub version: Option<String>,
    /// process-compose's project name; accepted, shown nowhere.
    pub name: Option<String>,
    /// Verbosity of the init's own messages; `$NIX2GPU_LOG` overrides it.
    pub log_level: Option<LogLevel>,
    /// Lines of output kept in memory per process for `nix2gpu-init logs` (default 1000).
    pub log_length: Option<usize>,
    /// process-compose's log file; accepted, but output always goes to stdout (docker logs).
    pub log_location: Option<String>,
    /// process-compose's switch for dependency-ordered shutdown; accepted, the init always
    /// stops in reverse dependency order.
    pub ordered_shutdown: Option<bool>,
    /// process-compose's TUI switch; accepted, the init has no TUI.
    pub is_tui_disabled: Option<bool>,
    /// `KEY=VALUE` entries given to every process.
    #[serde(default)]
    pub environment: Vec<String>,
    /// The services, by name.
    #[serde(default)]
    pub processes: BTreeMap<String, Process>,
    /// The shell that runs `command` (default `/bin/sh -c`).
    pub shell: Option<Shell>,
    /// Settings of the init itself and its built-in nodes.
    #[serde(default)]
    pub nix2gpu: Nix2gpu,
}

/// process-compose's `shell`: how `command` strings are run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// The shell program (default `/bin/sh`).
    pub shell_command: Option<String>,
    /// The argument before the command string (default `-c`).
    pub shell_argument: Option<String>,
}

/// One service: `processes.<name>`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// A command line run by the shell. Exactly one of `command` and `entrypoint` is required.
    pub command: Option<String>,
    /// An argv run directly, without a shell.
    pub entrypoint: Option<Vec<String>>,
    /// Free text; accepted, shown in no output.
    pub description: Option<String>,
    /// The working directory (default: the init's).
    pub working_dir: Option<String>,
    /// `KEY=VALUE` entries, after the global ones and `env_file`.
    #[serde(default)]
    pub environment: Vec<String>,
    /// A file of `KEY=VALUE` lines (`#` comments), relative to `working_dir`.
    pub env_file: Option<String>,
    /// What must have happened to other processes before this one starts.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Dependency>,
    /// A regular expression; the process is log-ready when a line of its output matches it.
    pub ready_log_line: Option<String>,
    /// Decides when the process is `ready`.
    pub readiness_probe: Option<Probe>,
    /// Restarts the process (under its restart policy) when it fails.
    pub liveness_probe: Option<Probe>,
    /// Restart policy.
    #[serde(default)]
    pub availability: Availability,
    /// Exit codes that count as success (default `[0]`).
    pub success_exit_codes: Option<Vec<i32>>,
    /// How the process is stopped.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// A disabled process never starts; processes that depend on it are skipped.
    #[serde(default)]
    pub disabled: bool,
    /// Run as this user: a name from /etc/passwd, or `uid[:gid]`.
    pub user: Option<String>,
}

/// `depends_on.<name>`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// Default `process_started`.
    #[serde(default)]
    pub condition: Condition,
}

/// When a dependency counts as met.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The dependency has been started.
    #[default]
    ProcessStarted,
    /// The dependency's readiness probe has passed.
    ProcessHealthy,
    /// The dependency has ended, whatever its exit code, and will not be restarted.
    ProcessCompleted,
    /// The dependency has ended with a success code and will not be restarted.
    ProcessCompletedSuccessfully,
    /// The dependency printed a line matching its `ready_log_line`.
    ProcessLogReady,
}

/// A readiness or liveness probe: exactly one of `exec`, `http_get`, `tcp_socket`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub exec: Option<ExecProbe>,
    pub http_get: Option<HttpProbe>,
    /// A TCP connect probe (beyond process-compose).
    pub tcp_socket: Option<TcpProbe>,
    /// Wait before the first probe (default 0).
    pub initial_delay_seconds: Option<Seconds>,
    /// Time between probes (default 10).
    pub period_seconds: Option<Seconds>,
    /// A probe that takes longer fails (default 1).
    pub timeout_seconds: Option<Seconds>,
    /// Consecutive successes needed to pass (default 1).
    pub success_threshold: Option<u32>,
    /// Consecutive failures needed to fail (default 3).
    pub failure_threshold: Option<u32>,
}

/// `exec`: a command run by the shell; exit 0 passes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecProbe {
    pub command: String,
    pub working_dir: Option<String>,
}

/// `http_get`: a GET request; a 2xx/3xx answer (or `status_code`) passes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// Default 127.0.0.1. An IP address or `localhost` (no DNS in PID 1).
    pub host: Option<String>,
    /// Only `http`.
    pub scheme: Option<String>,
    /// Default `/`.
    pub path: Option<String>,
    pub port: Port,
    /// The exact status that passes, instead of any 2xx/3xx.
    pub status_code: Option<u16>,
}

/// `tcp_socket`: a connection that opens passes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// Default 127.0.0.1. An IP address or `localhost`.
    pub host: Option<String>,
    pub port: Port,
}

/// A port, as a number or a string (process-compose allows both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Text(String),
}

/// `availability`: what happens when the process ends.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    #[serde(default)]
    pub restart: RestartPolicy,
    /// First restart delay; it doubles with each consecutive restart up to a cap (default 1).
    pub backoff_seconds: Option<Seconds>,
    /// Restarts allowed before the process is left failed (default: unlimited; 0 = unlimited
    /// as in process-compose).
    pub max_restarts: Option<u32>,
    /// When the process ends, the init stops everything and exits with its code.
    #[serde(default)]
    pub exit_on_end: bool,
}

/// `availability.restart`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart whenever it ends.
    Always,
    /// Restart when it ends with a code outside `success_exit_codes`.
    OnFailure,
    /// When it fails, stop everything and exit with its code.
    ExitOnFailure,
}

/// `shutdown`: how the process is stopped.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// A command run (by the shell, with the process's environment) instead of a signal.
    pub command: Option<String>,
    /// The signal sent to the process group (default SIGTERM): a number or a name.
    pub signal: Option<SignalName>,
    /// Time before SIGKILL (default 10).
    pub timeout_seconds: Option<Seconds>,
}

/// A signal, as a number (process-compose) or a name such as `SIGINT` or `INT`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SignalName {
    Number(i32),
    Name(String),
}

/// The `nix2gpu:` section: settings of the init itself.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nix2gpu {
    /// Grace period between SIGTERM and SIGKILL for processes left behind at shutdown.
    pub shutdown_timeout_seconds: Option<Seconds>,
    /// Where signals received by the init are forwarded: the main process or its whole group.
    pub forward_signals_to: Option<ForwardTo>,
    /// How output reaches stdout.
    #[serde(default)]
    pub log: LogSettings,
}

/// `nix2gpu.log`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (`NAME | line`, default) or `json` (one object per line).
    pub format: Option<LogFormat>,
    /// Prefix text lines with an RFC 3339 UTC timestamp (JSON lines always carry `ts`).
    pub timestamps: Option<bool>,
}

/// `nix2gpu.log.format`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A non-negative number of seconds, fractions allowed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(try_from = "f64")]
pub struct Seconds(#[schemars(with = "f64")] pub Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Duration::try_from_secs_f64(value)
            .map(Seconds)
            .map_err(|_| format!("expected a non-negative number of seconds, got {value}"))
    }
}

/// The level of the init's own log messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    #[serde(alias = "warning")]
    Warn,
    Error,
}

impl LogLevel {
    /// Parses a level as written in `$NIX2GPU_LOG` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(Self::Trace),
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// The target of forwarded signals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForwardTo {
    /// The main process only, as tini does by default.
    #[default]
    Process,
    /// The main process's whole process group (tini's `-g`).
    Group,
}

impl Config {
    /// Overlays `later` on `self`: settings `later` makes win; a process defined again replaces
    /// the earlier definition whole.
    pub fn merge(&mut self, later: Config) {
        let Config {
            version,
            name,
            log_level,
            log_length,
            log_location,
            ordered_shutdown,
            is_tui_disabled,
            environment,
            processes,
            shell,
            nix2gpu,
        } = later;
        self.version = version.or(self.version.take());
        self.name = name.or(self.name.take());
        self.log_level = log_level.or(self.log_level);
        self.log_length = log_length.or(self.log_length);
        self.log_location = log_location.or(self.log_location.take());
        self.ordered_shutdown = ordered_shutdown.or(self.ordered_shutdown);
        self.is_tui_disabled = is_tui_disabled.or(self.is_tui_disabled);
        self.environment.extend(environment);
        self.processes.extend(processes);
        self.shell = shell.or(self.shell.take());
        let Nix2gpu { shutdown_timeout_seconds, forward_signals_to, log } = nix2gpu;
        self.nix2gpu.shutdown_timeout_seconds = shutdown_timeout_seconds.or(self.nix2gpu.shutdown_timeout_seconds);
        self.nix2gpu.forward_signals_to = forward_signals_to.or(self.nix2gpu.forward_signals_to);
        self.nix2gpu.log.format = log.format.or(self.nix2gpu.log.format);
        self.nix2gpu.log.timestamps = log.timestamps.or(self.nix2gpu.log.timestamps);
    }

    /// The grace period for leftover processes at shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        self.nix2gpu.shutdown_timeout_seconds.map_or(DEFAULT_SHUTDOWN_TIMEOUT, |s| s.0)
    }

    /// Where forwarded signals go.
    pub fn forward_to(&self) -> ForwardTo {
        self.nix2gpu.forward_signals_to.unwrap_or_default()
    }
}

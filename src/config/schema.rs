//! The serde types of the configuration file: process-compose's schema where the features
//! overlap, plus the `nix2gpu:` section. The JSON Schema printed by `nix2gpu-init schema` is
//! derived from these same types, and so are the sets of known keys.
//!
//! Unknown keys are not rejected by serde here (`deny_unknown_fields` is a schemars-only
//! attribute): serde would stop at the first one, while `nix2gpu-init check` must report all of
//! them. The walk in `unknown_keys.rs` reads the JSON Schema (`additionalProperties: false`) and
//! reports every unknown key with its location before these types are ever trusted; `parse` runs
//! both, so strictness is not lost.
//!
//! Numbers that need a range check (seconds, ports, signals) have hand-written visitors: an error
//! raised inside a visitor carries the value's line and column, while one raised after
//! deserializing (`try_from`, `untagged`) only gets the enclosing mapping's.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::DEFAULT_SHUTDOWN_TIMEOUT;
use super::provenance::Provenance;

/// The whole configuration, as one file or the merge of several.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields, extend("patternProperties" = { "^x-": {} }))]
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
    /// The files these settings were read from, so that errors found after merging (by `plan`)
    /// still name file, line and column. Not part of the file format.
    #[serde(skip)]
    #[schemars(skip)]
    pub provenance: Provenance,
}

/// process-compose's `shell`: how `command` strings are run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Shell {
    /// The shell program (default `/bin/sh`).
    pub shell_command: Option<String>,
    /// The argument before the command string (default `-c`).
    pub shell_argument: Option<String>,
}

/// One service: `processes.<name>`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields, extend("patternProperties" = { "^x-": {} }))]
pub struct Process {
    /// A command line run by the shell. Exactly one of `command` and `entrypoint` is required.
    /// `$VAR` and `${VAR}` are expanded first (`$$` is a literal `$`).
    pub command: Option<String>,
    /// An argv run directly, without a shell (`${VAR}`s expanded in each item).
    pub entrypoint: Option<Vec<String>>,
    /// Free text; accepted, shown in no output.
    pub description: Option<String>,
    /// The working directory (default: the init's).
    pub working_dir: Option<String>,
    /// `KEY=VALUE` entries, after the global ones and `env_file` (later entries win; values may
    /// use `${VAR}`, including variables set before them).
    #[serde(default)]
    pub environment: Vec<String>,
    /// A file of `KEY=VALUE` lines (`#` comments), relative to `working_dir`; read by `check`
    /// and at start.
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
    /// Run as this user: a name from /etc/passwd or a uid, optionally followed by `:` and a group
    /// (a name from /etc/group or a gid).
    pub user: Option<String>,
    /// nix2gpu extension: the process says itself when it is ready, with systemd's notify
    /// protocol. The init sets `NOTIFY_SOCKET` for it and counts `READY=1` as ready (what
    /// `process_healthy` waits for); `STATUS=...` is shown by `status`. Not with
    /// `readiness_probe` or `ready_log_line`.
    #[serde(default)]
    pub notify: bool,
    /// nix2gpu extension: who may notify for the process: `main` (default), only the process the
    /// init started; `all`, any process of its session or process group (a helper such as
    /// `systemd-notify` run by its shell). Needs `notify`.
    pub notify_access: Option<NotifyAccess>,
    /// nix2gpu extension: the process must send `WATCHDOG=1` at least this often (the init sets
    /// `WATCHDOG_USEC`); when it does not, it is stopped and restarted under its restart policy,
    /// as after a failed liveness probe. Needs `notify`.
    pub watchdog_seconds: Option<Seconds>,
}

/// `notify_access`: whose notifications count for a process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyAccess {
    /// Only the process the init started.
    #[default]
    Main,
    /// Any process of its session or process group.
    All,
}

/// `depends_on.<name>`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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
#[schemars(deny_unknown_fields)]
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
#[schemars(deny_unknown_fields)]
pub struct ExecProbe {
    pub command: String,
    pub working_dir: Option<String>,
}

/// `http_get`: a GET request; a 2xx/3xx answer (or `status_code`) passes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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
#[schemars(deny_unknown_fields)]
pub struct TcpProbe {
    /// Default 127.0.0.1. An IP address or `localhost`.
    pub host: Option<String>,
    pub port: Port,
}

/// A port, as a number or a string (process-compose allows both; a string may hold `${VAR}`,
/// checked after expansion).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Text(String),
}

/// `availability`: what happens when the process ends.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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
#[schemars(deny_unknown_fields)]
pub struct Shutdown {
    /// A command run (by the shell, with the process's environment) instead of a signal.
    pub command: Option<String>,
    /// The signal sent to the process group (default SIGTERM): a number or a name.
    pub signal: Option<SignalName>,
    /// Time before SIGKILL (default 10).
    pub timeout_seconds: Option<Seconds>,
}

/// A signal, as a number (process-compose) or a name such as `SIGINT` or `INT`.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum SignalName {
    Number(i32),
    Name(String),
}

/// The `nix2gpu:` section: settings of the init itself.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Nix2gpu {
    /// Grace period between SIGTERM and SIGKILL for processes left behind at shutdown.
    pub shutdown_timeout_seconds: Option<Seconds>,
    /// Where signals received by the init are forwarded: the main process or its whole group.
    pub forward_signals_to: Option<ForwardTo>,
    /// How output reaches stdout.
    #[serde(default)]
    pub log: LogSettings,
    /// The HTTP endpoint.
    #[serde(default)]
    pub health: HealthSettings,
    /// The built-in `gpu` node.
    #[serde(default)]
    pub gpu: GpuSettings,
    /// The built-in `sshd` node.
    #[serde(default)]
    pub ssh: SshSettings,
    /// The built-in `tailscale` node.
    #[serde(default)]
    pub tailscale: TailscaleSettings,
}

/// Whether a built-in node runs: `auto` (the default) decides from what the container was
/// given; `true` and `false` decide for it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Enable {
    #[default]
    Auto,
    On,
    Off,
}

impl JsonSchema for Enable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Enable".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "anyOf": [{ "type": "boolean" }, { "const": "auto" }] })
    }
}

impl<'de> Deserialize<'de> for Enable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EnableVisitor)
    }
}

struct EnableVisitor;

impl Visitor<'_> for EnableVisitor {
    type Value = Enable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false or auto")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Enable, E> {
        Ok(if value { Enable::On } else { Enable::Off })
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Enable, E> {
        match value {
            "auto" => Ok(Enable::Auto),
            "true" => Ok(Enable::On),
            "false" => Ok(Enable::Off),
            _ => Err(E::custom(format!("expected true, false or auto, got `{value}`"))),
        }
    }
}

/// `nix2gpu.gpu`: wait for the NVIDIA driver, make it visible, fix nvidia-smi, probe.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GpuSettings {
    /// `auto` (default): the node runs, and does its work only when a GPU was requested
    /// (`NVIDIA_VISIBLE_DEVICES`) or driver files are present; `false`: no `gpu` node.
    pub enable: Option<Enable>,
    /// How long to wait for the driver libraries and /dev/nvidiactl (default 30).
    pub wait_seconds: Option<Seconds>,
    /// Copy nvidia-smi and rewrite its interpreter when it cannot run as injected (default true).
    pub patch_nvidia_smi: Option<bool>,
    /// The image's dynamic loader for the rewritten nvidia-smi (default: discovered).
    pub loader: Option<String>,
    /// Where soname links to the driver libraries go (default `/run/opengl-driver/lib`, the
    /// directory Nix-built CUDA programs search).
    pub driver_link_dir: Option<String>,
    /// Directories searched for the driver libraries, before the NVIDIA toolkit's defaults.
    pub library_dirs: Option<Vec<String>>,
    /// A failed `gpu` node stops the container with its code (default false: dependents are
    /// skipped and the rest runs).
    pub required: Option<bool>,
}

/// `nix2gpu.ssh`: the built-in OpenSSH server.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SshSettings {
    /// `auto` (default): run sshd when keys (in a variable, or `authorized_keys_file`), a root
    /// password or `allow_empty_password` were given.
    pub enable: Option<Enable>,
    /// The port sshd listens on (default 22).
    pub port: Option<Port>,
    /// Environment variables holding public keys, one or more per line (default
    /// `SSH_PUBLIC_KEYS`, `PUBLIC_KEY` (RunPod), `SSH_PUBLIC_KEY` (vast.ai)).
    pub authorized_keys_env: Option<Vec<String>>,
    /// A file of public keys (e.g. a mounted secret), merged after the variables' keys. Root's
    /// authorized_keys is rewritten from these sources at every start of sshd.
    pub authorized_keys_file: Option<String>,
    /// A file holding root's password (else `$ROOT_PASSWORD_FILE`, else `$ROOT_PASSWORD`).
    pub root_password_file: Option<String>,
    /// Allow password logins (default: only when a root password was given). Root logs in with
    /// a password only when one was given (or `allow_empty_password`).
    pub password_auth: Option<bool>,
    /// Let root log in with an empty password, as nix2gpu did; warned about at every boot.
    pub allow_empty_password: Option<bool>,
    /// Where host keys are kept (default `/etc/ssh`; put it on a volume to keep the identity).
    /// Missing ones (ed25519, rsa) are generated with ssh-keygen.
    pub host_key_dir: Option<String>,
    /// The sshd binary: a path, or a name looked up on PATH (default `sshd`). ssh-keygen is
    /// looked for beside it first.
    pub sshd: Option<String>,
}

/// `nix2gpu.tailscale`: tailscaled, logged in through its LocalAPI.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TailscaleSettings {
    /// `auto` (default): run tailscale when an auth key was given.
    pub enable: Option<Enable>,
    /// A file holding the auth key (else `$TAILSCALE_AUTHKEY_FILE`, else the variable
    /// `auth_key_env` names).
    pub auth_key_file: Option<String>,
    /// The variable holding the auth key when no file is given (default `TAILSCALE_AUTHKEY`).
    pub auth_key_env: Option<String>,
    /// The machine name on the tailnet (default: the container's hostname).
    pub hostname: Option<String>,
    /// tailscaled's state directory (default `/var/lib/tailscale`).
    pub state_dir: Option<String>,
    /// tailscaled's LocalAPI socket (default `/run/tailscale/tailscaled.sock`).
    pub socket: Option<String>,
    /// Userspace networking, no /dev/net/tun needed (default true).
    pub userspace_networking: Option<bool>,
    /// Tailscale SSH (default false).
    pub ssh: Option<bool>,
    /// ACL tags to advertise, such as `tag:gpu`.
    pub tags: Option<Vec<String>>,
    /// Accept subnet routes from the tailnet (default false).
    pub accept_routes: Option<bool>,
    /// The tailscaled binary (default: `tailscaled` on PATH).
    pub tailscaled: Option<String>,
}

/// `nix2gpu.health`: the HTTP endpoint, served only when `listen` is set.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HealthSettings {
    /// `address:port` to serve `/healthz`, `/readyz`, `/status` and `/metrics` on, such as
    /// `0.0.0.0:8080` or `127.0.0.1:9100` (`[::]:8080` for IPv6): an IP address, not a name
    /// (no DNS in PID 1). Not set (the default): no endpoint.
    pub listen: Option<String>,
}

/// `nix2gpu.log`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
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
#[derive(Debug, Clone, Copy, PartialEq, JsonSchema)]
pub struct Seconds(#[schemars(with = "f64", range(min = 0))] pub Duration);

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
    /// The grace period for leftover processes at shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        self.nix2gpu.shutdown_timeout_seconds.map_or(DEFAULT_SHUTDOWN_TIMEOUT, |s| s.0)
    }

    /// Where forwarded signals go.
    pub fn forward_to(&self) -> ForwardTo {
        self.nix2gpu.forward_signals_to.unwrap_or_default()
    }
}

/// The message for a port outside 1..=65535, shared by the parser (numbers that do not even fit
/// a u16) and the planner (0, and strings after expansion).
pub(super) fn port_out_of_range(port: impl fmt::Display) -> String {
    format!("port {port} is out of range: expected 1..=65535")
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecondsVisitor)
    }
}

struct SecondsVisitor;

impl Visitor<'_> for SecondsVisitor {
    type Value = Seconds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative number of seconds")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Seconds, E> {
        Ok(Seconds(Duration::from_secs(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Seconds, E> {
        u64::try_from(value).map(|secs| Seconds(Duration::from_secs(secs))).map_err(|_| negative(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Seconds, E> {
        Duration::try_from_secs_f64(value).map(Seconds).map_err(|_| negative(value))
    }
}

fn negative<E: de::Error>(value: impl fmt::Display) -> E {
    E::custom(format!("expected a non-negative number of seconds, got {value}"))
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = Port;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number or a string")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Port, E> {
        u16::try_from(value).map(Port::Number).map_err(|_| E::custom(port_out_of_range(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Port, E> {
        u16::try_from(value).map(Port::Number).map_err(|_| E::custom(port_out_of_range(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Port, E> {
        Ok(Port::Text(value.to_string()))
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SignalVisitor)
    }
}

struct SignalVisitor;

impl Visitor<'_> for SignalVisitor {
    type Value = SignalName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a signal number or name")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<SignalName, E> {
        i32::try_from(value).map(SignalName::Number).map_err(|_| E::custom(signal_out_of_range(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<SignalName, E> {
        i32::try_from(value).map(SignalName::Number).map_err(|_| E::custom(signal_out_of_range(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SignalName, E> {
        Ok(SignalName::Name(value.to_string()))
    }
}

/// The message for a signal number outside 1..=31, shared by the parser and the validator.
pub(super) fn signal_out_of_range(number: impl fmt::Display) -> String {
    format!("signal {number} is out of range: expected 1..=31 or a name such as SIGTERM")
}

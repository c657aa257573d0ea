//! The serde types of the configuration file. Every struct denies unknown fields so a typo is
//! an error with a location instead of a silently ignored setting.

use std::time::Duration;

use serde::Deserialize;

use super::DEFAULT_SHUTDOWN_TIMEOUT;

/// The whole configuration, as one file or the merge of several.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// process-compose's schema version; accepted for compatibility, not interpreted.
    pub version: Option<String>,
    /// Verbosity of the init's own messages; `$NIX2GPU_LOG` overrides it.
    pub log_level: Option<LogLevel>,
    #[serde(default)]
    pub nix2gpu: Nix2gpu,
}

/// The `nix2gpu:` section: settings of the init itself.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nix2gpu {
    /// Grace period between SIGTERM and SIGKILL for processes left behind at shutdown.
    pub shutdown_timeout_seconds: Option<Seconds>,
    /// Where signals received by the init are forwarded: the main process or its whole group.
    pub forward_signals_to: Option<ForwardTo>,
}

/// A non-negative number of seconds, fractions allowed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Seconds(Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Duration::try_from_secs_f64(value)
            .map(Seconds)
            .map_err(|_| format!("expected a non-negative number of seconds, got {value}"))
    }
}

/// The level of the init's own log messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardTo {
    /// The main process only, as tini does by default.
    #[default]
    Process,
    /// The main process's whole process group (tini's `-g`).
    Group,
}

impl Config {
    /// Overlays `later` on `self`: every setting `later` makes wins, the rest is kept.
    pub fn merge(&mut self, later: Config) {
        let Config { version, log_level, nix2gpu } = later;
        self.version = version.or(self.version.take());
        self.log_level = log_level.or(self.log_level);
        let Nix2gpu { shutdown_timeout_seconds, forward_signals_to } = nix2gpu;
        self.nix2gpu.shutdown_timeout_seconds =
            shutdown_timeout_seconds.or(self.nix2gpu.shutdown_timeout_seconds);
        self.nix2gpu.forward_signals_to = forward_signals_to.or(self.nix2gpu.forward_signals_to);
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

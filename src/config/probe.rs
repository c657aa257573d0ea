//! Readiness and liveness probes, resolved: argv, socket address, timings, thresholds.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::graph::Thresholds;

use super::expand::expand;
use super::locate::KeyPath;
use super::plan::{check, positive};
use super::provenance::Issue;
use super::{ExecProbe, HttpProbe, Port, Probe, TcpProbe, validate};

/// Time between probes when `period_seconds` is not set.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// A probe's time limit when `timeout_seconds` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive successes to pass when `success_threshold` is not set.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Consecutive failures to fail when `failure_threshold` is not set.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The host probed when `host` is not set.
const DEFAULT_HOST: &str = "127.0.0.1";

/// How and when to probe (the thresholds are in the graph's `NodeSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub check: ProbeCheck,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
}

/// One probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// Run this argv (the shell and the command); exit 0 passes.
    Exec { argv: Vec<String>, working_dir: Option<PathBuf> },
    /// `GET path` from `addr` with this Host header; `status`, or else any 2xx/3xx, passes.
    Http { addr: SocketAddr, path: String, host_header: String, status: Option<u16> },
    /// A TCP connection to `addr` that opens passes.
    Tcp { addr: SocketAddr },
}

/// What a probe's values are resolved with: the process's shell, variables and directory.
pub(super) struct Context<'a> {
    pub shell: &'a [String],
    pub vars: &'a BTreeMap<String, String>,
    pub working_dir: Option<&'a Path>,
}

impl Context<'_> {
    /// The probe at `path`, or `None` with its problems added to `issues`.
    pub(super) fn plan(
        &self,
        probe: &Probe,
        path: &KeyPath,
        issues: &mut Vec<Issue>,
    ) -> Option<(ProbePlan, Thresholds)> {
        let check = self.check(probe, path, issues);
        let thresholds = thresholds(probe, path, issues);
        let initial_delay = probe.initial_delay_seconds.map_or(Duration::ZERO, |s| s.0);
        let period =
            duration(probe.period_seconds.map(|s| s.0), DEFAULT_PERIOD, &path.key("period_seconds"), issues);
        let timeout = duration(
            probe.timeout_seconds.map(|s| s.0),
            DEFAULT_TIMEOUT,
            &path.key("timeout_seconds"),
            issues,
        );
        Some((ProbePlan { check: check?, initial_delay, period: period?, timeout: timeout? }, thresholds?))
    }

    fn check(&self, probe: &Probe, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<ProbeCheck> {
        match (&probe.exec, &probe.http_get, &probe.tcp_socket) {
            (Some(exec), None, None) => self.exec(exec, &path.key("exec"), issues),
            (None, Some(http), None) => self.http(http, &path.key("http_get"), issues),
            (None, None, Some(tcp)) => self.tcp(tcp, &path.key("tcp_socket"), issues),
            (exec, http, tcp) => {
                let present: Vec<&str> =
                    [("exec", exec.is_some()), ("http_get", http.is_some()), ("tcp_socket", tcp.is_some())]
                        .into_iter()
                        .filter_map(|(name, set)| set.then_some(name))
                        .collect();
                let found = if present.is_empty() { "none".to_string() } else { present.join(" and ") };
                let message = format!(
                    "a probe needs exactly one of `exec`, `http_get` and `tcp_socket` (found {found})"
                );
                issues.push(Issue::key(path.clone(), message));
                None
            }
        }
    }

    fn exec(&self, exec: &ExecProbe, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<ProbeCheck> {
        let command =
            check(self.expand_non_empty(&exec.command, "the probe command"), &path.key("command"), issues);
        let working_dir = match &exec.working_dir {
            Some(dir) => {
                Some(PathBuf::from(check(expand(dir, self.vars), &path.key("working_dir"), issues)?))
            }
            None => self.working_dir.map(Path::to_path_buf),
        };
        let argv = self.shell.iter().cloned().chain([command?]).collect();
        Some(ProbeCheck::Exec { argv, working_dir })
    }

    fn http(&self, http: &HttpProbe, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<ProbeCheck> {
        let scheme = match &http.scheme {
            Some(scheme) => check(validate::scheme(scheme), &path.key("scheme"), issues),
            None => Some(()),
        };
        let host = self.host(http.host.as_deref(), path, issues);
        let port = self.port(&http.port, &path.key("port"), issues);
        let request_path = http.path.as_deref().unwrap_or("/");
        let request_path = check(expand(request_path, self.vars), &path.key("path"), issues)
            .and_then(|p| check(validate::http_path(&p).map(|()| p), &path.key("path"), issues));
        let status = match http.status_code {
            Some(code) => Some(Some(check(validate::status_code(code), &path.key("status_code"), issues)?)),
            None => Some(None),
        };
        scheme?;
        let ((written, ip), port) = (host?, port?);
        let host_header = match ip {
            IpAddr::V6(_) if !written.starts_with('[') => format!("[{written}]:{port}"),
            _ => format!("{written}:{port}"),
        };
        Some(ProbeCheck::Http {
            addr: SocketAddr::new(ip, port),
            path: request_path?,
            host_header,
            status: status?,
        })
    }

    fn tcp(&self, tcp: &TcpProbe, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<ProbeCheck> {
        let host = self.host(tcp.host.as_deref(), path, issues);
        let port = self.port(&tcp.port, &path.key("port"), issues);
        Some(ProbeCheck::Tcp { addr: SocketAddr::new(host?.1, port?) })
    }

    /// The host as written (expanded) and its address.
    fn host(&self, host: Option<&str>, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<(String, IpAddr)> {
        let path = path.key("host");
        let written = check(expand(host.unwrap_or(DEFAULT_HOST), self.vars), &path, issues)?;
        let ip = check(validate::host(&written), &path, issues)?;
        Some((written, ip))
    }

    fn port(&self, port: &Port, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<u16> {
        let port = match port {
            Port::Number(number) => validate::port_number(u64::from(*number)),
            Port::Text(text) => expand(text, self.vars).and_then(|text| validate::port_text(&text)),
        };
        check(port, path, issues)
    }

    fn expand_non_empty(&self, text: &str, what: &str) -> Result<String, String> {
        let expanded = expand(text, self.vars)?;
        if expanded.trim().is_empty() { Err(format!("{what} is empty")) } else { Ok(expanded) }
    }
}

fn thresholds(probe: &Probe, path: &KeyPath, issues: &mut Vec<Issue>) -> Option<Thresholds> {
    let one = |value: Option<u32>, default: u32, key: &str, issues: &mut Vec<Issue>| match value {
        Some(value) => check(validate::threshold(value), &path.key(key), issues),
        None => Some(default),
    };
    let success = one(probe.success_threshold, DEFAULT_SUCCESS_THRESHOLD, "success_threshold", issues);
    let failure = one(probe.failure_threshold, DEFAULT_FAILURE_THRESHOLD, "failure_threshold", issues);
    Some(Thresholds { success: success?, failure: failure? })
}

fn duration(
    value: Option<Duration>,
    default: Duration,
    path: &KeyPath,
    issues: &mut Vec<Issue>,
) -> Option<Duration> {
    match value {
        Some(value) => check(positive(value), path, issues),
        None => Some(default),
    }
}

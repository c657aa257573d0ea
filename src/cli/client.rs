//! The client side of the control socket: `status`, `health`, `logs`, `start`, `stop`,
//! `restart`. Plain blocking I/O: a short-lived command needs no event loop.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::control::protocol::{Envelope, VERSION};
use crate::control::{NodeReport, ReloadReport, Request, Response, StatusReport};
use crate::control::{http, socket};
use crate::exit_code;

/// How long a one-answer request may take before the client gives up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code of a client command that could not get an answer (no init, no permission).
pub const UNREACHABLE: i32 = 1;

/// Sends `request` to the running init and hands each answer line to `each`; stops at `Done`,
/// `Error` or a one-shot answer. Errors are phrased for a person.
pub fn ask(request: Request, follow: bool, mut each: impl FnMut(Response)) -> Result<(), String> {
    let path = socket::path();
    let stream = UnixStream::connect(&path).map_err(|e| unreachable(&path, &e))?;
    if !follow {
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
    }
    let mut line = serde_json::to_vec(&Envelope { v: VERSION, request }).map_err(|e| e.to_string())?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(|e| format!("cannot send the request: {e}"))?;
    for answer in BufReader::new(&stream).lines() {
        let answer = answer.map_err(|e| format!("no answer from the init: {e}"))?;
        let response: Response =
            serde_json::from_str(&answer).map_err(|e| format!("unreadable answer from the init: {e}"))?;
        let last = !matches!(response, Response::Log(_));
        each(response);
        if last {
            return Ok(());
        }
    }
    Ok(())
}

fn unreachable(path: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!(
            "no init is running, or it has no control socket: {} does not exist (the init's log says why; set {} if it uses another socket)",
            path.display(),
            socket::PATH_ENV
        ),
        io::ErrorKind::ConnectionRefused => format!(
            "no init is running: nothing answers on {} (set {} if it uses another socket)",
            path.display(),
            socket::PATH_ENV
        ),
        io::ErrorKind::PermissionDenied => {
            format!("permission denied on {}: the control socket is for root only", path.display())
        }
        _ => format!("cannot reach the init on {}: {error}", path.display()),
    }
}

/// `nix2gpu-init status [--json]`.
pub fn status(json: bool) -> i32 {
    let mut code = 0;
    let result = ask(Request::Status, false, |response| match response {
        Response::Status(report) if json => print!("{}", http::status_json(&report)),
        Response::Status(report) => print!("{}", table(&report)),
        other => code = refused(other),
    });
    finish(result, code)
}

/// `nix2gpu-init health`: 0 when ready, 1 when not, with one line saying why.
pub fn health() -> i32 {
    let mut code = 1;
    let result = ask(Request::Health, false, |response| match response {
        Response::Health(report) if report.ready => {
            println!("ready");
            code = 0;
        }
        Response::Health(report) => println!("not ready: {}", report.reasons.join("; ")),
        other => code = refused(other),
    });
    finish(result, code)
}

/// `nix2gpu-init logs [NAME] [-n N] [-f]`.
pub fn logs(name: Option<String>, lines: usize, follow: bool) -> i32 {
    let mut code = 0;
    let stdout = io::stdout();
    let result = ask(Request::Logs { name, lines, follow }, follow, |response| match response {
        Response::Log(line) => {
            let _ = writeln!(stdout.lock(), "{} | {}", line.name, line.msg);
        }
        Response::Done { .. } => {}
        other => code = refused(other),
    });
    finish(result, code)
}

/// `nix2gpu-init start|stop|restart NAME`.
pub fn control(request: Request) -> i32 {
    let mut code = 0;
    let result = ask(request, false, |response| match response {
        Response::Done { message } => println!("{message}"),
        other => code = refused(other),
    });
    finish(result, code)
}

/// `nix2gpu-init reload [--dry-run]`: the plan, one line per node; 78 with every error when
/// the configuration is invalid (then nothing changed).
pub fn reload(dry_run: bool) -> i32 {
    let mut code = 0;
    let result = ask(Request::Reload { dry_run }, false, |response| match response {
        Response::Reload(report) => print!("{}", reload_plan(&report)),
        Response::InvalidConfig { errors } => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s); nothing was changed", errors.len());
            code = exit_code::CONFIG;
        }
        other => code = refused(other),
    });
    finish(result, code)
}

/// `restart  web` lines, then what was done (or, for a dry run, that nothing was).
pub fn reload_plan(report: &ReloadReport) -> String {
    let mut out = String::new();
    let mut counts = [("start", 0), ("stop", 0), ("restart", 0), ("unchanged", 0)];
    for planned in &report.changes {
        out.push_str(&format!("{:<9}  {}\n", planned.change, planned.name));
        if let Some((_, count)) = counts.iter_mut().find(|(change, _)| *change == planned.change) {
            *count += 1;
        }
    }
    let [start, stop, restart, unchanged] = counts.map(|(_, count)| count);
    if report.applied {
        out.push_str(&format!(
            "reloaded: {start} started, {stop} stopped, {restart} restarted, {unchanged} unchanged\n"
        ));
    } else {
        out.push_str(&format!(
            "dry run: {start} to start, {stop} to stop, {restart} to restart, {unchanged} unchanged; \
             nothing was changed\n"
        ));
    }
    out
}

fn refused(response: Response) -> i32 {
    match response {
        Response::Error { message } => eprintln!("nix2gpu-init: {message}"),
        other => eprintln!("nix2gpu-init: unexpected answer: {other:?}"),
    }
    1
}

fn finish(result: Result<(), String>, code: i32) -> i32 {
    match result {
        Ok(()) => code,
        Err(message) => {
            eprintln!("nix2gpu-init: {message}");
            UNREACHABLE
        }
    }
}

/// The status as a table a person reads at a glance, then the platform, GPU and tailscale lines.
/// A `STATUS` column (what notify processes said with `STATUS=`) comes last, when any has one.
pub fn table(report: &StatusReport) -> String {
    let mut header = vec!["NAME", "STATE", "PID", "RESTARTS", "UPTIME", "READY", "LAST EXIT", "REASON"];
    let mut rows: Vec<Vec<String>> = report.nodes.iter().map(|node| row(node).to_vec()).collect();
    if report.nodes.iter().any(|node| node.status_text.is_some()) {
        header.push("STATUS");
        for (row, node) in rows.iter_mut().zip(&report.nodes) {
            row.push(node.status_text.clone().unwrap_or_default());
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let line: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in &rows {
        push_row(row);
    }
    let platform = report.platform.as_ref().map_or("-".to_string(), ToString::to_string);
    // The gpu node's verdict in words; its whole report is in `status --json`.
    let gpu = report.gpu.as_ref().and_then(|gpu| gpu["message"].as_str()).unwrap_or("-");
    out.push_str(&format!("platform: {platform}\ngpu: {gpu}\n"));
    if let Some(tailscale) = &report.tailscale {
        out.push_str(&format!("tailscale: {}\n", tailscale_line(tailscale)));
    }
    out
}

/// The `tailscale` node's report in one line: `Running, tailnet example.com, 100.64.0.7`.
fn tailscale_line(report: &serde_json::Value) -> String {
    let text = |key: &str| report[key].as_str().map(str::to_string);
    let ips: Vec<&str> =
        report["ips"].as_array().into_iter().flatten().filter_map(|ip| ip.as_str()).collect();
    let parts = [
        text("backend_state"),
        text("tailnet").map(|name| format!("tailnet {name}")),
        (!ips.is_empty()).then(|| ips.join(" ")),
        text("error").map(|error| format!("error: {error}")),
    ];
    parts.into_iter().flatten().collect::<Vec<_>>().join(", ")
}

fn row(node: &NodeReport) -> [String; 8] {
    let dash = || "-".to_string();
    [
        node.name.clone(),
        node.state.clone(),
        node.pid.map_or_else(dash, |pid| pid.to_string()),
        node.restarts.to_string(),
        node.uptime_seconds.map_or_else(dash, duration),
        if node.ready { "yes" } else { "no" }.to_string(),
        node.exit_code.map_or_else(dash, |code| code.to_string()),
        node.reason.clone().unwrap_or_default(),
    ]
}

/// `3h02m`, `5m03s`, `42s`: as precise as a glance needs.
fn duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, _) => format!("{minutes}m{secs:02}s"),
        _ => format!("{hours}h{minutes:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_shows_dashes() {
        let report = StatusReport {
            nodes: vec![
                NodeReport {
                    name: "db".into(),
                    state: "ready".into(),
                    pid: Some(12),
                    restarts: 0,
                    exit_code: None,
                    ready: true,
                    reason: None,
                    status_text: None,
                    uptime_seconds: Some(303.0),
                },
                NodeReport {
                    name: "migrate".into(),
                    state: "completed".into(),
                    pid: None,
                    restarts: 1,
                    exit_code: Some(0),
                    ready: true,
                    reason: None,
                    status_text: None,
                    uptime_seconds: None,
                },
            ],
            platform: None,
            gpu: None,
            tailscale: Some(serde_json::json!({
                "backend_state": "Running", "tailnet": "example.com", "ips": ["100.64.0.7", "fd7a::7"]
            })),
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME     STATE      PID  RESTARTS  UPTIME  READY  LAST EXIT  REASON");
        assert_eq!(lines[1], "db       ready      12   0         5m03s   yes    -");
        assert_eq!(lines[2], "migrate  completed  -    1         -       yes    0");
        assert_eq!(lines[3], "platform: -");
        assert_eq!(lines[5], "tailscale: Running, tailnet example.com, 100.64.0.7 fd7a::7");
    }

    #[test]
    fn a_status_column_shows_what_notify_processes_said() {
        let report = StatusReport {
            nodes: vec![
                NodeReport {
                    status_text: Some("serving 3 models".into()),
                    ..crate::control::metrics::tests::node("llm", "ready")
                },
                crate::control::metrics::tests::node("web", "pending"),
            ],
            platform: None,
            gpu: None,
            tailscale: None,
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("REASON  STATUS"), "{text}");
        assert!(lines[1].starts_with("llm") && lines[1].ends_with("  serving 3 models"), "{text}");
        assert!(!lines[2].ends_with(' '), "{text}");
    }

    #[test]
    fn the_reload_plan_lists_every_node_and_sums_up() {
        let changes = [("web", "restart"), ("db", "unchanged"), ("new", "start"), ("old", "stop")]
            .map(|(name, change)| crate::control::PlannedChange { name: name.into(), change: change.into() })
            .to_vec();
        let report = ReloadReport { applied: false, changes };
        assert_eq!(
            reload_plan(&report),
            "restart    web\nunchanged  db\nstart      new\nstop       old\n\
             dry run: 1 to start, 1 to stop, 1 to restart, 1 unchanged; nothing was changed\n"
        );
        let report = ReloadReport { applied: true, changes: Vec::new() };
        assert_eq!(reload_plan(&report), "reloaded: 0 started, 0 stopped, 0 restarted, 0 unchanged\n");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(3723.0), "1h02m");
    }
}

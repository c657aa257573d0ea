//! Answers to control requests, built from the graph's status and the nodes' recent output.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::Node;
use crate::config::builtins;
use crate::control::socket::{FOLLOW_BUFFER, log_line};
use crate::control::{Answer, HealthReport, LogLine, NodeReport, Response, StatusReport};
use crate::graph::{NodeState, NodeStatus};
use crate::logs::Batch;
use crate::runtime::Platform;

/// The status contract's report.
pub fn status(statuses: Vec<NodeStatus>, now: Instant, platform: Option<&Platform>) -> StatusReport {
    let has = |name: &str| statuses.iter().any(|s| s.name == name);
    let gpu = has(builtins::GPU).then(|| report(builtins::GPU_REPORT)).flatten();
    let tailscale = has(builtins::TAILSCALE).then(|| report(builtins::TAILSCALE_REPORT)).flatten();
    let nodes = statuses
        .into_iter()
        .map(|status| NodeReport {
            uptime_seconds: status.since.map(|since| now.saturating_duration_since(since).as_secs_f64()),
            name: status.name,
            state: status.state.as_str().to_string(),
            pid: status.pid,
            restarts: status.restarts,
            exit_code: status.exit_code,
            ready: status.ready,
            reason: status.reason,
            status_text: status.status_text,
        })
        .collect();
    StatusReport { nodes, platform: platform.cloned(), gpu, tailscale }
}

/// A built-in node's report file (written by the node, a child), as JSON; `None` before it
/// wrote one, or when it cannot be read: status then shows nothing rather than fail.
fn report(file: &str) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Ready when every node is ready, has completed successfully, or is disabled; otherwise one
/// reason per node that is not.
pub fn health(statuses: &[NodeStatus]) -> HealthReport {
    let reasons: Vec<String> = statuses
        .iter()
        .filter(|s| !(s.ready || matches!(s.state, NodeState::Completed | NodeState::Disabled)))
        .map(|s| match &s.reason {
            Some(reason) => format!("{}: {} ({reason})", s.name, s.state.as_str()),
            None => format!("{}: {}", s.name, s.state.as_str()),
        })
        .collect();
    HealthReport { ready: reasons.is_empty(), reasons }
}

/// The last `lines` lines of one node (or of all, interleaved by time), and when following,
/// a stream of the lines to come.
pub fn logs(
    nodes: &[&Node],
    name: Option<&str>,
    lines: usize,
    live: Option<broadcast::Receiver<Arc<Batch>>>,
) -> Answer {
    let chosen: Vec<&Node> = match name {
        Some(name) => match nodes.iter().find(|node| &*node.name == name) {
            Some(node) => vec![*node],
            None => return Answer::One(unknown_node(nodes, name)),
        },
        None => nodes.to_vec(),
    };
    let mut history: Vec<(std::time::SystemTime, LogLine)> = Vec::new();
    for node in &chosen {
        let Ok(recent) = node.recent.lock() else { continue };
        for (batch, text) in recent.last(lines) {
            history
                .push((batch.time, log_line(&node.name, batch.stream.as_str(), batch.time, text.as_bytes())));
        }
    }
    history.sort_by_key(|(time, _)| *time);
    let skip = history.len().saturating_sub(lines);
    let history = history.into_iter().skip(skip).map(|(_, line)| line).collect();
    let follow = live.map(|receiver| follow(receiver, name.map(str::to_string)));
    Answer::Lines { history, follow }
}

/// Forwards new lines (of `name`, or of everyone) to a client until it goes away. A client that
/// falls behind loses lines, never the init's memory.
fn follow(mut live: broadcast::Receiver<Arc<Batch>>, name: Option<String>) -> mpsc::Receiver<LogLine> {
    let (sender, receiver) = mpsc::channel(FOLLOW_BUFFER);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                () = sender.closed() => return,
                batch = live.recv() => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if name.as_deref().is_some_and(|name| name != &*batch.name) {
                continue;
            }
            for text in batch.lines() {
                let line = log_line(&batch.name, batch.stream.as_str(), batch.time, text);
                if sender.try_send(line).is_err() && sender.is_closed() {
                    return;
                }
            }
        }
    });
    receiver
}

/// The refusal for a name that is not a node, listing the names that are.
pub fn unknown_node(nodes: &[&Node], name: &str) -> Response {
    let known: Vec<&str> = nodes.iter().map(|node| &*node.name).collect();
    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    Response::Error { message: format!("no node named `{name}`; the nodes are: {known}") }
}

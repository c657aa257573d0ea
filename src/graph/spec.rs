//! What the graph needs to know about each node: a resolved, validated description with no
//! I/O concerns (how to launch the process is the runtime's business, not the graph's).

use std::time::Duration;

pub use crate::config::{Condition, RestartPolicy};

/// Index of a node in the graph (its position in the `Vec<NodeSpec>` given to `Graph::new`).
pub type NodeId = usize;

/// One node of the dependency graph.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// Dependencies by node id, each with the condition that gates this node's start.
    pub depends_on: Vec<(NodeId, Condition)>,
    pub restart: RestartPolicy,
    /// First restart delay; doubles per consecutive restart, capped at [`BACKOFF_CAP`].
    pub backoff: Duration,
    /// Restarts allowed before the node stays failed; `None` = unlimited.
    pub max_restarts: Option<u32>,
    /// The init exits (after stopping everything) when this node ends.
    pub exit_on_end: bool,
    /// Exit codes that count as success (never empty; default `[0]`).
    pub success_exit_codes: Vec<i32>,
    /// Readiness is decided by a readiness probe with these thresholds.
    pub readiness: Option<Thresholds>,
    /// A liveness probe with these thresholds runs while the node runs.
    pub liveness: Option<Thresholds>,
    /// Readiness is (also) a log line; `process_log_ready` needs it.
    pub has_ready_log_line: bool,
    /// Readiness is the process's own `READY=1` notification (systemd's notify protocol).
    pub notify: bool,
    /// The process must send `WATCHDOG=1` at least this often while it runs, or it is stopped
    /// (and restarted by its policy) as after a failed liveness probe.
    pub watchdog: Option<Duration>,
    /// Time between the stop request (signal or shutdown command) and SIGKILL.
    pub shutdown_timeout: Duration,
    /// Never started; dependents are skipped.
    pub disabled: bool,
    /// The `-- CMD` main process: never restarted, its end ends the init with its code.
    pub main: bool,
}

/// How many consecutive probe results flip a probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes to pass (at least 1).
    pub success: u32,
    /// Consecutive failures to fail (at least 1).
    pub failure: u32,
}

/// The longest restart delay, however many restarts came before.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// A node that stayed up this long has its backoff reset (a crash loop keeps backing off even
/// if it briefly became ready).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

//! What the graph remembers about each node, and how that is shown to people (`status`).

use std::time::Instant;

use serde::Serialize;

use super::spec::NodeSpec;

/// A node's state. The names ([`NodeState::as_str`]) are a contract (DESIGN.md "Status and
/// health").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Waiting for its dependencies' conditions.
    Pending,
    /// Being spawned, or spawned and not yet ready (it has a readiness probe or a ready line).
    Starting,
    /// Up. Ready too when it has no readiness criterion; not ready when it lost its readiness.
    Running,
    /// Up and its readiness criterion passed.
    Ready,
    /// Ended with a success code and will not be restarted.
    Completed,
    /// Ended in failure and will not be restarted.
    Failed,
    /// Ended; waiting for its restart delay.
    Backoff,
    /// Asked to stop (shutdown, a failed liveness probe, or the operator); waiting for its exit.
    Stopping,
    /// Stopped by the shutdown or by the operator, or never started because the shutdown (or
    /// the operator) came first. Outside shutdown only the operator stops a node, and it can
    /// start it again.
    Stopped,
    /// Never started: a dependency's condition can never be met.
    Skipped,
    /// Never started: disabled in the config.
    Disabled,
}

impl NodeState {
    /// The contract name, as shown by `status` and the health endpoint.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Ready => "ready",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Skipped => "skipped",
            Self::Disabled => "disabled",
        }
    }

    /// Started and not asked to stop: its process runs (or is being spawned).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Ready)
    }

    /// A live node, or one whose process is still on its way out: the shutdown waits for these.
    pub(super) fn is_active(self) -> bool {
        self.is_live() || self == Self::Stopping
    }

    /// Nothing more will happen to the node on its own (the natural end needs all nodes here).
    /// `Completed` and `Failed` are only ever final: a restart goes through `Backoff`. `Stopped`
    /// is not at rest: outside shutdown only the operator stops a node, and the init stays up,
    /// idle, so that it can be started again.
    pub fn is_at_rest(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Skipped | Self::Disabled)
    }
}

/// One node as shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub state: NodeState,
    /// The process's pid while it has one.
    pub pid: Option<i32>,
    /// Restarts so far, by the restart policy or the operator's `restart` (never reset).
    pub restarts: u32,
    /// The code of the node's last end (128+N for signal N), kept across restarts.
    pub exit_code: Option<i32>,
    /// `ready` state, or `running` without any readiness criterion.
    pub ready: bool,
    /// Why it is skipped, failed, restarting, stopped by the operator or not ready; for people.
    pub reason: Option<String>,
    /// The last `STATUS=` text the current process sent (notify nodes).
    pub status_text: Option<String>,
    /// When the current process was spawned (the `Spawned` event's time); `None` while no
    /// process runs. The runtime shows the uptime from it.
    #[serde(skip)]
    pub since: Option<Instant>,
}

/// The operator stopped the node (`stop` or `restart`); what happens when its process is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OperatorStop {
    /// `stop`: it ends `stopped` and stays so, whatever its restart policy.
    Stay,
    /// `restart`: it is spawned again at once, without backoff.
    Restart,
}

/// A health check whose failure stopped the node; its end then counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailedCheck {
    Liveness,
    Watchdog,
}

impl FailedCheck {
    /// How the end is described: `exited with code 0 after failing its liveness probe`.
    pub fn after(self) -> &'static str {
        match self {
            Self::Liveness => "after failing its liveness probe",
            Self::Watchdog => "after its watchdog ran out",
        }
    }
}

/// Consecutive results of one probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Streak {
    pub oks: u32,
    pub fails: u32,
}

impl Streak {
    /// Counts one result; a result of the other kind breaks the streak.
    pub fn record(&mut self, ok: bool) {
        if ok {
            self.oks = self.oks.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.oks = 0;
        }
    }
}

/// A node's spec and everything that happened to it.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub spec: NodeSpec,
    pub state: NodeState,
    /// Set from `Spawned` to the exit. `Starting`/`Stopping` without a pid means the spawn was
    /// asked for and not answered yet (see [`Node::awaiting_spawn`]).
    pub pid: Option<i32>,
    pub restarts: u32,
    /// Restarts decided by the restart policy: what `max_restarts` bounds (the operator's
    /// `restart` counts in `restarts`, not here).
    pub policy_restarts: u32,
    /// Restarts since the process last stayed up `BACKOFF_RESET_AFTER`: the backoff exponent.
    pub consecutive: u32,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// When the current process was spawned; `None` from the `Spawn` until `Spawned`.
    pub spawned_at: Option<Instant>,
    /// Sticky facts the dependency conditions are decided on.
    pub ever_spawned: bool,
    pub ever_ready: bool,
    pub ever_log_ready: bool,
    pub readiness: Streak,
    pub liveness: Streak,
    /// It is stopping because a health check failed: its exit counts as a failure.
    pub check_failed: Option<FailedCheck>,
    /// The last `STATUS=` text of the current process.
    pub status_text: Option<String>,
    /// When the watchdog of the current process runs out (each `WATCHDOG=1` moves it). A
    /// watchdog timer that fires before it is stale and ignored.
    pub watchdog_deadline: Option<Instant>,
    /// SIGKILL was sent while stopping: the next kill timer gives up on it (during shutdown).
    pub killed: bool,
    /// Set by the operator's `stop` or `restart` until the node is spawned again.
    pub operator_stop: Option<OperatorStop>,
    /// A reload removed or redefined the node: what happens once its process is gone.
    pub fate: Option<Fate>,
}

/// What a reload decided for a node whose process must go first.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fate {
    /// Removed from the configuration: it leaves the graph.
    Remove,
    /// Its definition changed: it starts afresh with this spec.
    Replace(Box<NodeSpec>),
}

impl Fate {
    /// For messages: `web is being removed by a reload`.
    pub fn doing(&self) -> &'static str {
        match self {
            Self::Remove => "being removed",
            Self::Replace(_) => "being redefined",
        }
    }
}

impl Node {
    pub fn new(spec: NodeSpec) -> Self {
        Self {
            spec,
            state: NodeState::Pending,
            pid: None,
            restarts: 0,
            policy_restarts: 0,
            consecutive: 0,
            exit_code: None,
            reason: None,
            spawned_at: None,
            ever_spawned: false,
            ever_ready: false,
            ever_log_ready: false,
            readiness: Streak::default(),
            liveness: Streak::default(),
            check_failed: None,
            status_text: None,
            watchdog_deadline: None,
            killed: false,
            operator_stop: None,
            fate: None,
        }
    }

    pub fn has_probes(&self) -> bool {
        self.spec.readiness.is_some() || self.spec.liveness.is_some()
    }

    /// A readiness probe, a ready log line or the process's `READY=1` decides when it is ready;
    /// without any it is ready as soon as it runs.
    pub fn has_readiness_criterion(&self) -> bool {
        self.spec.readiness.is_some() || self.spec.has_ready_log_line || self.spec.notify
    }

    pub fn is_ready(&self) -> bool {
        match self.state {
            NodeState::Ready => true,
            NodeState::Running => !self.has_readiness_criterion(),
            _ => false,
        }
    }

    /// A `Spawn` went out and neither `Spawned` nor `SpawnFailed` came back yet.
    pub fn awaiting_spawn(&self) -> bool {
        self.pid.is_none() && matches!(self.state, NodeState::Starting | NodeState::Stopping)
    }

    /// Its probes were started (at `Spawned`) and not stopped yet.
    pub fn probes_running(&self) -> bool {
        self.pid.is_some() && self.state.is_live() && self.has_probes()
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            name: self.spec.name.clone(),
            state: self.state,
            pid: self.pid,
            restarts: self.restarts,
            exit_code: self.exit_code,
            ready: self.is_ready(),
            reason: self.reason.clone(),
            status_text: self.status_text.clone(),
            since: self.pid.and(self.spawned_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_contract() {
        let all = [
            (NodeState::Pending, "pending"),
            (NodeState::Starting, "starting"),
            (NodeState::Running, "running"),
            (NodeState::Ready, "ready"),
            (NodeState::Completed, "completed"),
            (NodeState::Failed, "failed"),
            (NodeState::Backoff, "backoff"),
            (NodeState::Stopping, "stopping"),
            (NodeState::Stopped, "stopped"),
            (NodeState::Skipped, "skipped"),
            (NodeState::Disabled, "disabled"),
        ];
        for (state, name) in all {
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(state).ok(), Some(serde_json::Value::from(name)));
        }
    }

    #[test]
    fn a_streak_is_broken_by_the_other_result() {
        let mut streak = Streak::default();
        streak.record(true);
        streak.record(true);
        assert_eq!(streak, Streak { oks: 2, fails: 0 });
        streak.record(false);
        assert_eq!(streak, Streak { oks: 0, fails: 1 });
    }
}

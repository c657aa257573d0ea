//! The graph as a state machine: [`Graph::handle`] takes one [`Event`] and the time it happened,
//! updates the nodes and returns the [`Action`]s for the runtime, in order.
//!
//! This file holds the start of nodes (conditions, spawning, readiness, liveness); what an end
//! leads to is in `exits.rs`, shutdown in `shutdown.rs`, the operator's commands in `control.rs`.
//!
//! Semantics in short (each handler documents its part):
//! - `Start` marks disabled nodes `disabled` and spawns every node whose conditions are met
//!   (`starting`). `Spawned` makes a node `running`, or keeps it `starting` until ready when it
//!   has a readiness probe or a ready log line; a node with no readiness criterion counts as
//!   ready (and healthy, for `process_healthy`) as soon as it runs.
//! - Conditions gate only the start and are sticky; unmeetable ones skip the dependent, and the
//!   skip cascades (see `conditions.rs`).
//! - After each event, the graph settles: pending nodes are started or skipped, a shutdown
//!   advances, and `Finished` goes out exactly once when everything is at rest.
//! - Events the graph does not expect (unknown node ids or pids, probe results for a node that
//!   is not running, stale timers) change nothing and return no actions.

use std::time::Instant;

use super::conditions::{self, Gate};
use super::event::{Action, Event, NoteLevel, Notice, ProbeKind, TimerId};
use super::notes::{self, note};
use super::spec::{NodeId, NodeSpec};
use super::state::{FailedCheck, Node, NodeState, NodeStatus};

/// The dependency graph of services, as a state machine with no I/O.
///
/// The runtime feeds every [`Event`] to [`Graph::handle`] with the time it happened and executes
/// the returned [`Action`]s in order. The contract, in full:
///
/// **Start.** `Start` makes disabled nodes `disabled` and spawns (`starting`) every node whose
/// dependency conditions are met. The runtime answers each `Spawn` with `Spawned` or
/// `SpawnFailed` before executing the next action. `Spawned` starts the node's probes (if it has
/// any) and makes it `running`, unless it has a readiness probe or a ready log line: then it
/// stays `starting` until ready. A node without readiness criterion is ready, and counts as
/// healthy for `process_healthy`, as soon as it runs.
///
/// **Readiness.** `success` consecutive ok readiness results make the node `ready`; once ready,
/// `failure` consecutive failures make it `running` and not ready, and successes make it ready
/// again. Readiness never restarts a node. Without a readiness probe, `LogReady` makes a
/// `starting` node with a ready line `ready`; with one, the log line only meets
/// `process_log_ready`.
///
/// **Liveness.** `failure` consecutive failures stop the node (`stopping`, `Stop`, a `Kill` timer
/// of its `shutdown_timeout`); its exit then counts as a failure for the restart policy,
/// whatever its code. Liveness results are ignored during shutdown.
///
/// **Conditions** gate only the start and are sticky once met: `process_started` (the
/// dependency was spawned once), `process_healthy` (ready once), `process_log_ready` (printed
/// its ready line once), `process_completed` (ended for good, any code),
/// `process_completed_successfully` (ended for good, `completed`). One that can never be met
/// skips the dependent, with a reason naming the dependency, and the skip cascades.
///
/// **Ends.** Success means the code is in `success_exit_codes`. `no`: ends for good (`completed`
/// or `failed`); `always`: restarts; `on_failure`: restarts failures; `exit_on_failure`: a
/// failure shuts the init down with its code. With `max_restarts: n`, the end after the n-th
/// restart by the policy is final (the operator's restarts do not count). A restart is `backoff` and a `Restart` timer of `backoff * 2^(k-1)` capped
/// at [`BACKOFF_CAP`](super::BACKOFF_CAP), `k` counting consecutive restarts and starting over
/// when the process had stayed up [`BACKOFF_RESET_AFTER`](super::BACKOFF_RESET_AFTER).
/// `exit_on_end` shuts down with 0 for a success, else the code. The main process is never
/// restarted; its end shuts down with its `status.code()`. A node whose end shuts down ends
/// `completed`/`failed`, not restarted. A failure that shuts down by `exit_on_failure` or
/// `exit_on_end` never makes the init exit 0: its code 0 (not a success code, or after a failed
/// liveness probe) becomes 1.
///
/// **Shutdown** (`Stop`, or an end as above): the first trigger decides the exit code (`Stop`:
/// 0). Restart timers are cancelled; `pending` and `backoff` nodes become `stopped`. A live node
/// is stopped (`StopProbes`, `Stop`, `Kill` timer) once none of its dependents is live or
/// stopping; independent nodes stop in parallel. The kill timer sends `Kill`; a node still there
/// [`AFTER_KILL`](crate::pid1::drain::AFTER_KILL) later is given up on (`stopped`). Nodes that
/// end on their own are not restarted. A second `Stop` kills everything left at once.
///
/// **Control.** [`Graph::control`] carries out the operator's `start`, `stop` and `restart` of
/// one node, outside shutdown (see its documentation). A node the operator stopped ends
/// `stopped` and is not restarted, whatever its policy, and its end shuts nothing down (except
/// the main process's, as always); `restart` spawns it again as soon as it has exited, without
/// backoff. Control commands never touch the node's dependents.
///
/// **Finish.** `Finished` goes out exactly once: during shutdown when nothing is live or
/// stopping (with the decided code); otherwise when every node is `completed`, `failed`,
/// `skipped` or `disabled`: 0 if none failed or was skipped, else 1. A node the operator
/// stopped (`stopped` outside shutdown) is not at rest: it keeps the init up, idle, so that it
/// can be started again. An empty graph finishes only on `Stop`. After `Finished` every event
/// is ignored.
///
/// **Robustness.** Events for unknown nodes, nodes without a process, probe kinds a node does not
/// have, and stale timers change nothing and return no actions. Nothing here panics.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Every node the graph ever had, by id. Ids are stable: a reload appends new nodes, and a
    /// node it removed stays here, out of [`Graph::order`], once its process is gone (so events
    /// still in flight for it find nothing to act on).
    pub(super) nodes: Vec<Node>,
    /// The nodes that are part of the graph, in the order `status` shows them.
    pub(super) order: Vec<NodeId>,
    /// For each node, the nodes that depend on it: the shutdown stops these first.
    pub(super) dependents: Vec<Vec<NodeId>>,
    pub(super) started: bool,
    /// Set by the first shutdown trigger, with the exit code it decided.
    pub(super) shutdown: Option<i32>,
    /// `Stop` events so far: the second one kills.
    pub(super) stop_requests: u32,
    /// `Finished` went out; nothing happens any more.
    pub(super) finished: bool,
}

impl Graph {
    /// `specs` are validated already: dependencies exist, there are no cycles, and a node's id
    /// is its position. (Should that not hold, nothing panics: a missing dependency makes its
    /// dependent skipped, nodes in a cycle stay pending.)
    pub fn new(specs: Vec<NodeSpec>) -> Self {
        let mut graph = Self {
            order: (0..specs.len()).collect(),
            nodes: specs.into_iter().map(Node::new).collect(),
            dependents: Vec::new(),
            started: false,
            shutdown: None,
            stop_requests: 0,
            finished: false,
        };
        graph.find_dependents();
        graph
    }

    /// Fills [`Graph::dependents`] from the specs of the nodes in the graph.
    pub(super) fn find_dependents(&mut self) {
        let mut dependents = vec![Vec::new(); self.nodes.len()];
        for &id in &self.order {
            let Some(node) = self.nodes.get(id) else { continue };
            for &(dep, _) in &node.spec.depends_on {
                if let Some(list) = dependents.get_mut(dep)
                    && !list.contains(&id)
                {
                    list.push(id);
                }
            }
        }
        self.dependents = dependents;
    }

    /// The nodes in the graph, in order.
    pub(super) fn present(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.order.iter().filter_map(|&id| self.nodes.get(id).map(|node| (id, node)))
    }

    /// Whether `id` is a node of the graph (not one a reload removed).
    pub(super) fn is_present(&self, id: NodeId) -> bool {
        self.order.contains(&id)
    }

    /// Decides what to do about one event that happened at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match event {
            Event::Start => self.on_start(&mut out),
            Event::Spawned { node, pid } => self.on_spawned(node, pid, now, &mut out),
            Event::SpawnFailed { node, code, reason } => {
                self.on_spawn_failed(node, code, &reason, now, &mut out);
            }
            Event::Exited { node, status } => self.on_exited(node, status, now, &mut out),
            Event::Probe { node, kind: ProbeKind::Readiness, ok } => {
                self.on_readiness(node, ok, &mut out);
            }
            Event::Probe { node, kind: ProbeKind::Liveness, ok } => self.on_liveness(node, ok, &mut out),
            Event::LogReady { node } => self.on_log_ready(node, &mut out),
            Event::Notify { node, notice } => self.on_notice(node, notice, now, &mut out),
            Event::Timer(TimerId::Restart(node)) => self.on_restart_timer(node, &mut out),
            Event::Timer(TimerId::Kill(node)) => self.on_kill_timer(node, &mut out),
            Event::Timer(TimerId::Watchdog(node)) => self.on_watchdog_timer(node, now, &mut out),
            Event::Stop => self.on_stop(&mut out),
        }
        self.settle(&mut out);
        out
    }

    /// Every node of the graph, in order.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.present().map(|(_, node)| node.status()).collect()
    }

    /// The ids of the nodes in the graph, in the order of [`Graph::status`].
    pub fn ids(&self) -> &[NodeId] {
        &self.order
    }

    /// The node whose current process has this pid.
    pub fn node_by_pid(&self, pid: i32) -> Option<NodeId> {
        self.nodes.iter().position(|node| node.pid == Some(pid))
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.present().find(|(_, node)| node.spec.name == name).map(|(id, _)| id)
    }

    /// The node's name; `?` for an id that is not in the graph.
    pub fn name(&self, node: NodeId) -> &str {
        self.nodes.get(node).map_or("?", |node| node.spec.name.as_str())
    }

    /// `Finished` went out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// After each event (and control command): start or skip what became startable, advance the
    /// shutdown, and finish when everything is at rest.
    pub(super) fn settle(&mut self, out: &mut Vec<Action>) {
        if self.finished {
            return;
        }
        if let Some(code) = self.shutdown {
            self.resolve_fates(out);
            self.advance_shutdown(out);
            if !self.nodes.iter().any(|node| node.state.is_active()) {
                self.finish(code, out);
            }
        } else if self.started {
            self.resolve_fates(out);
            self.advance_retirement(out);
            self.advance_pending(out);
            if let Some(code) = self.natural_end() {
                self.finish(code, out);
            }
        }
    }

    /// Without a shutdown, the init ends when every node is at rest: 0 if all of them completed
    /// (or are disabled), else 1 (DESIGN.md "Exit codes"; process-compose exits 0 here, its
    /// issue #424). An empty graph never ends on its own: the init idles until stopped. Nor does
    /// a graph with a node the operator stopped (`stopped` is not at rest outside shutdown): the
    /// operator may start it again.
    fn natural_end(&self) -> Option<i32> {
        if self.order.is_empty() || !self.present().all(|(_, node)| node.state.is_at_rest()) {
            return None;
        }
        let clean =
            self.present().all(|(_, node)| matches!(node.state, NodeState::Completed | NodeState::Disabled));
        Some(if clean { 0 } else { 1 })
    }

    fn finish(&mut self, code: i32, out: &mut Vec<Action>) {
        self.finished = true;
        out.push(Action::Finished { code });
    }

    /// Disabled nodes become `disabled`; the rest is started by [`Self::settle`]. A `Start` after
    /// the first, or after a shutdown began, is ignored.
    fn on_start(&mut self, out: &mut Vec<Action>) {
        if self.started || self.shutdown.is_some() {
            return;
        }
        self.started = true;
        for (id, node) in self.nodes.iter_mut().enumerate() {
            disable_if_configured(id, node, out);
        }
    }

    /// Spawns every pending node whose conditions are met and skips every one that can never
    /// start, until nothing changes (a skip can make dependents unmeetable in turn).
    fn advance_pending(&mut self, out: &mut Vec<Action>) {
        loop {
            let mut skipped_any = false;
            for index in 0..self.order.len() {
                let Some(&id) = self.order.get(index) else { break };
                let gate = match self.nodes.get(id) {
                    Some(node) if node.state == NodeState::Pending => conditions::gate(node, &self.nodes),
                    _ => continue,
                };
                match gate {
                    Gate::Open => self.spawn(id, out),
                    Gate::Wait => {}
                    Gate::Never(reason) => {
                        self.skip(id, reason, out);
                        skipped_any = true;
                    }
                }
            }
            if !skipped_any {
                return;
            }
        }
    }

    fn skip(&mut self, id: NodeId, reason: String, out: &mut Vec<Action>) {
        if let Some(node) = self.nodes.get_mut(id) {
            note(out, id, NoteLevel::Warn, format!("skipped: {reason}"));
            node.state = NodeState::Skipped;
            node.reason = Some(reason);
        }
    }

    pub(super) fn spawn(&mut self, id: NodeId, out: &mut Vec<Action>) {
        if let Some(node) = self.nodes.get_mut(id) {
            node.state = NodeState::Starting;
            node.pid = None;
            node.spawned_at = None;
            node.check_failed = None;
            node.killed = false;
            node.operator_stop = None;
            out.push(Action::Spawn { node: id });
        }
    }

    /// The process exists. Probes start now (the runtime applies their initial delay); without
    /// a readiness criterion the node is `running` and ready at once. If the shutdown reached
    /// the node between the `Spawn` and its answer (another node's answer to a `Spawn` earlier
    /// in the same batch began it), the process is stopped (or killed) right away.
    fn on_spawned(&mut self, id: NodeId, pid: i32, now: Instant, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id).filter(|node| node.awaiting_spawn()) else {
            return;
        };
        node.pid = Some(pid);
        node.spawned_at = Some(now);
        node.ever_spawned = true;
        node.readiness = Default::default();
        node.liveness = Default::default();
        node.reason = None;
        node.status_text = None;
        note(out, id, NoteLevel::Info, format!("started (pid {pid})"));
        if node.state == NodeState::Stopping {
            out.push(if node.killed { Action::Kill { node: id } } else { Action::Stop { node: id } });
            return;
        }
        if node.has_probes() {
            out.push(Action::StartProbes { node: id });
        }
        if let Some(period) = node.spec.watchdog {
            node.watchdog_deadline = Some(now + period);
            out.push(Action::ArmTimer { timer: TimerId::Watchdog(id), after: period });
        }
        if !node.has_readiness_criterion() {
            node.state = NodeState::Running;
            node.ever_ready = true;
        }
    }

    /// Counts a readiness result. `success` consecutive oks make a starting (or not-ready
    /// running) node `ready`; `failure` consecutive failures make a ready node `running` and not
    /// ready. Readiness failures never restart a node by themselves.
    fn on_readiness(&mut self, id: NodeId, ok: bool, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id).filter(|node| node.probes_running()) else {
            return;
        };
        let Some(thresholds) = node.spec.readiness else {
            return;
        };
        node.readiness.record(ok);
        if ok && node.state != NodeState::Ready && node.readiness.oks >= thresholds.success {
            become_ready(id, node, out);
        } else if !ok && node.state == NodeState::Ready && node.readiness.fails >= thresholds.failure {
            node.state = NodeState::Running;
            let why = format!("readiness probe failed {} times in a row", node.readiness.fails);
            note(out, id, NoteLevel::Warn, format!("not ready: {why}"));
            node.reason = Some(why);
        }
    }

    /// Counts a liveness result. `failure` consecutive failures stop the node (its exit then
    /// counts as a failure for the restart policy). Ignored during shutdown, which stops every
    /// node in its own order anyway.
    fn on_liveness(&mut self, id: NodeId, ok: bool, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            return;
        }
        let Some(node) = self.nodes.get_mut(id).filter(|node| node.probes_running()) else {
            return;
        };
        let Some(thresholds) = node.spec.liveness else {
            return;
        };
        node.liveness.record(ok);
        if ok || node.liveness.fails < thresholds.failure {
            return;
        }
        let message = format!("liveness probe failed {} times in a row; stopping it", node.liveness.fails);
        self.stop_failed(id, FailedCheck::Liveness, &message, out);
    }

    /// A health check failed: the node is stopped, and its end will count as a failure for the
    /// restart policy, whatever its code.
    fn stop_failed(&mut self, id: NodeId, check: FailedCheck, message: &str, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        note(out, id, NoteLevel::Warn, message);
        node.check_failed = Some(check);
        if node.probes_running() {
            out.push(Action::StopProbes { node: id });
        }
        if node.watchdog_deadline.take().is_some() {
            out.push(Action::CancelTimer { timer: TimerId::Watchdog(id) });
        }
        node.state = NodeState::Stopping;
        out.push(Action::Stop { node: id });
        out.push(Action::ArmTimer { timer: TimerId::Kill(id), after: node.spec.shutdown_timeout });
    }

    /// A notification from the node's process (the runtime checked the sender). `READY=1` makes
    /// a starting (or no longer ready) node `ready`; `STATUS=` is kept for `status`;
    /// `WATCHDOG=1` moves the watchdog's deadline; `STOPPING=1` makes a ready node not ready.
    /// Only nodes with `notify` that run a process take notifications.
    fn on_notice(&mut self, id: NodeId, notice: Notice, now: Instant, out: &mut Vec<Action>) {
        let Some(node) = self
            .nodes
            .get_mut(id)
            .filter(|node| node.spec.notify && node.pid.is_some() && node.state.is_live())
        else {
            return;
        };
        match notice {
            Notice::Ready if node.state != NodeState::Ready => become_ready(id, node, out),
            Notice::Ready => {}
            Notice::Status(text) => node.status_text = Some(text),
            Notice::Watchdog => {
                if let Some(period) = node.spec.watchdog {
                    node.watchdog_deadline = Some(now + period);
                    out.push(Action::ArmTimer { timer: TimerId::Watchdog(id), after: period });
                }
            }
            Notice::Stopping if node.state == NodeState::Ready => {
                node.state = NodeState::Running;
                let why = "the process said it is stopping (STOPPING=1)";
                note(out, id, NoteLevel::Info, format!("not ready: {why}"));
                node.reason = Some(why.to_string());
            }
            Notice::Stopping => {}
        }
    }

    /// The watchdog ran out: no `WATCHDOG=1` within `watchdog` of the last one (or of the
    /// start). A timer that fires before the deadline is stale (a ping re-armed it meanwhile);
    /// during shutdown nothing is restarted, so the watchdog is ignored too.
    fn on_watchdog_timer(&mut self, id: NodeId, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            return;
        }
        let Some(node) = self.nodes.get(id).filter(|node| node.pid.is_some() && node.state.is_live()) else {
            return;
        };
        let (Some(deadline), Some(period)) = (node.watchdog_deadline, node.spec.watchdog) else {
            return;
        };
        if now < deadline {
            return;
        }
        if let Some(node) = self.nodes.get_mut(id) {
            node.watchdog_deadline = None;
        }
        let message = format!("no WATCHDOG=1 within {}; stopping it", notes::secs(period));
        self.stop_failed(id, FailedCheck::Watchdog, &message, out);
    }

    /// The node printed its ready line: it counts for `process_log_ready`, and makes the node
    /// ready when it has no readiness probe (with one, the probe decides readiness).
    fn on_log_ready(&mut self, id: NodeId, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        if !node.spec.has_ready_log_line || node.pid.is_none() || !node.state.is_live() {
            return;
        }
        node.ever_log_ready = true;
        if node.spec.readiness.is_none() && node.state == NodeState::Starting {
            become_ready(id, node, out);
        }
    }

    /// The backoff is over: spawn again (its conditions were met once, and they are sticky).
    fn on_restart_timer(&mut self, id: NodeId, out: &mut Vec<Action>) {
        if self.shutdown.is_none() && self.nodes.get(id).is_some_and(|node| node.state == NodeState::Backoff)
        {
            self.spawn(id, out);
        }
    }
}

/// A pending node that is `disabled` in its spec becomes `disabled` (at `Start`, or when a
/// reload adds or redefines it).
pub(super) fn disable_if_configured(id: NodeId, node: &mut Node, out: &mut Vec<Action>) {
    if node.spec.disabled && node.state == NodeState::Pending {
        node.state = NodeState::Disabled;
        node.reason = Some("disabled".to_string());
        note(out, id, NoteLevel::Info, "disabled");
    }
}

fn become_ready(id: NodeId, node: &mut Node, out: &mut Vec<Action>) {
    node.state = NodeState::Ready;
    node.ever_ready = true;
    node.reason = None;
    note(out, id, NoteLevel::Info, "ready");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::spec::Condition::{
        ProcessCompleted as Completed, ProcessCompletedSuccessfully as Succeeded, ProcessHealthy as Healthy,
        ProcessLogReady as LogReady, ProcessStarted as Started,
    };
    use crate::graph::spec::RestartPolicy;
    use crate::graph::testkit::*;

    #[test]
    fn a_chain_starts_in_order_each_after_its_dependency_spawned() {
        let mut h = Harness::new(vec![spec("a"), after("b", &[(0, Started)]), after("c", &[(1, Started)])]);
        assert_eq!(h.start(), vec![spawn(0)]);
        assert_eq!(
            (h.state(0), h.state(1), h.state(2)),
            (NodeState::Starting, NodeState::Pending, NodeState::Pending)
        );
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), spawn(1)]);
        assert_eq!(h.spawned(1, 11), vec![info(1, "started (pid 11)"), spawn(2)]);
        assert_eq!(h.spawned(2, 12), vec![info(2, "started (pid 12)")]);
        for node in 0..3 {
            let status = h.status(node);
            assert_eq!((status.state, status.ready), (NodeState::Running, true));
        }
    }

    #[test]
    fn node_order_need_not_be_dependency_order() {
        let mut h = Harness::new(vec![after("app", &[(1, Started)]), spec("db")]);
        assert_eq!(h.start(), vec![spawn(1)]);
        assert_eq!(h.spawned(1, 20), vec![info(1, "started (pid 20)"), spawn(0)]);
    }

    #[test]
    fn a_diamond_starts_the_sides_together_and_the_bottom_after_both() {
        let mut h = Harness::new(vec![
            spec("a"),
            after("b", &[(0, Started)]),
            after("c", &[(0, Started)]),
            after("d", &[(1, Started), (2, Started)]),
        ]);
        assert_eq!(h.start(), vec![spawn(0)]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), spawn(1), spawn(2)]);
        assert_eq!(h.spawned(1, 11), vec![info(1, "started (pid 11)")]);
        assert_eq!(h.state(3), NodeState::Pending);
        assert_eq!(h.spawned(2, 12), vec![info(2, "started (pid 12)"), spawn(3)]);
    }

    #[test]
    fn healthy_waits_for_the_readiness_probe() {
        let db = spec_with("db", |s| s.readiness = thresholds(1, 1));
        let mut h = Harness::new(vec![db, after("app", &[(0, Healthy)])]);
        assert_eq!(h.start(), vec![spawn(0)]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), Action::StartProbes { node: 0 }]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Starting, false));
        assert_eq!(h.ready_probe(0, false), vec![]);
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready"), spawn(1)]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Ready, true));
    }

    #[test]
    fn a_dependency_without_readiness_criterion_is_healthy_once_running() {
        let mut h = Harness::started(vec![spec("db"), after("app", &[(0, Healthy)])]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), spawn(1)]);
    }

    #[test]
    fn healthy_stays_met_when_the_dependency_loses_readiness_or_restarts() {
        let db = spec_with("db", |s| {
            s.readiness = thresholds(1, 1);
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![db, after("app", &[(0, Healthy)]), after("web", &[(1, Started)])]);
        h.spawned(0, 10);
        h.ready_probe(0, true);
        assert_eq!(quiet(h.ready_probe(0, false)), vec![]);
        assert_eq!(quiet(h.exit(0, 1)), vec![Action::StopProbes { node: 0 }, arm_restart(0, secs(1))]);
        assert_eq!(
            h.spawned(1, 11),
            vec![info(1, "started (pid 11)"), spawn(2)],
            "app started once, and stays"
        );
    }

    #[test]
    fn log_ready_makes_a_node_ready_and_meets_its_condition() {
        let db = spec_with("db", |s| s.has_ready_log_line = true);
        let mut h = Harness::started(vec![db, after("app", &[(0, LogReady)])]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)")]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Starting, false));
        assert_eq!(h.ev(Event::LogReady { node: 0 }), vec![info(0, "ready"), spawn(1)]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Ready, true));
        assert_eq!(h.ev(Event::LogReady { node: 0 }), vec![], "a second line changes nothing");
    }

    #[test]
    fn with_a_readiness_probe_the_log_line_meets_log_ready_but_the_probe_decides_readiness() {
        let db = spec_with("db", |s| {
            s.has_ready_log_line = true;
            s.readiness = thresholds(1, 1);
        });
        let mut h = Harness::started(vec![db, after("app", &[(0, LogReady)])]);
        h.spawned(0, 10);
        assert_eq!(h.ev(Event::LogReady { node: 0 }), vec![spawn(1)]);
        assert_eq!(h.state(0), NodeState::Starting);
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready")]);
    }

    #[test]
    fn completed_waits_for_the_final_end_whatever_the_code() {
        let db = spec_with("db", |s| {
            s.restart = RestartPolicy::Always;
            s.max_restarts = Some(1);
        });
        let mut h = Harness::started(vec![db, after("app", &[(0, Completed)])]);
        h.spawned(0, 10);
        assert_eq!(quiet(h.exit(0, 1)), vec![arm_restart(0, secs(1))]);
        assert_eq!(h.state(1), NodeState::Pending, "a restart is not the end");
        assert_eq!(h.fire(TimerId::Restart(0)), vec![spawn(0)]);
        h.spawned(0, 11);
        assert_eq!(quiet(h.exit(0, 1)), vec![spawn(1)]);
        assert_eq!(h.state(0), NodeState::Failed);
    }

    #[test]
    fn completed_successfully_starts_after_a_success() {
        let mut h = Harness::started(vec![spec("migrate"), after("app", &[(0, Succeeded)])]);
        h.spawned(0, 10);
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0"), spawn(1)]);
        assert_eq!(h.state(0), NodeState::Completed);
    }

    #[test]
    fn a_failed_dependency_skips_its_dependents_and_the_skip_cascades() {
        let mut h = Harness::started(vec![
            spec("db"),
            after("app", &[(0, Succeeded)]),
            after("web", &[(1, Started)]),
            spec("other"),
        ]);
        h.spawned(0, 10);
        h.spawned(3, 13);
        assert_eq!(
            h.exit(0, 1),
            vec![
                error(0, "exited with code 1"),
                warn(1, "skipped: dependency `db` failed with exit code 1"),
                warn(2, "skipped: dependency `app` was skipped"),
            ]
        );
        let app = h.status(1);
        assert_eq!(app.state, NodeState::Skipped);
        assert_eq!(app.reason.as_deref(), Some("dependency `db` failed with exit code 1"));
        assert_eq!(h.state(2), NodeState::Skipped);
        assert_eq!(h.exit(3, 0), vec![info(3, "exited with code 0"), Action::Finished { code: 1 }]);
    }

    #[test]
    fn the_cascade_does_not_depend_on_node_order() {
        let mut h = Harness::started(vec![
            after("web", &[(2, Started)]),
            spec("db"),
            after("app", &[(1, Succeeded)]),
        ]);
        h.spawned(1, 10);
        assert_eq!(
            notes(&h.exit(1, 2)),
            vec![
                (1, "exited with code 2"),
                (2, "skipped: dependency `db` failed with exit code 2"),
                (0, "skipped: dependency `app` was skipped"),
            ]
        );
    }

    #[test]
    fn a_disabled_dependency_skips_its_dependents() {
        let db = spec_with("db", |s| s.disabled = true);
        let mut h = Harness::new(vec![db, after("app", &[(0, Started)])]);
        assert_eq!(
            h.start(),
            vec![
                info(0, "disabled"),
                warn(1, "skipped: dependency `db` is disabled"),
                Action::Finished { code: 1 },
            ]
        );
        assert_eq!(h.status(0).reason.as_deref(), Some("disabled"));
    }

    #[test]
    fn healthy_is_unmeetable_when_the_dependency_ends_without_becoming_ready() {
        let db = spec_with("db", |s| s.readiness = thresholds(1, 1));
        let mut h = Harness::started(vec![db, after("app", &[(0, Healthy)])]);
        h.spawned(0, 10);
        assert_eq!(
            notes(&h.exit(0, 0)),
            vec![(0, "exited with code 0"), (1, "skipped: dependency `db` ended without becoming healthy")]
        );
    }

    #[test]
    fn started_is_unmeetable_when_the_dependency_could_not_be_spawned() {
        let mut h = Harness::started(vec![spec("db"), after("app", &[(0, Started)])]);
        let actions = h.ev(Event::SpawnFailed { node: 0, code: 127, reason: "`dbd` not found".to_string() });
        assert_eq!(
            actions,
            vec![
                error(0, "could not start: `dbd` not found (exit code 127)"),
                warn(1, "skipped: dependency `db` failed with exit code 127"),
                Action::Finished { code: 1 },
            ]
        );
        assert_eq!(h.status(0).exit_code, Some(127));
    }

    #[test]
    fn log_ready_on_a_dependency_without_a_ready_line_is_skipped_at_once() {
        let mut h = Harness::new(vec![spec("db"), after("app", &[(0, LogReady)])]);
        assert_eq!(h.start(), vec![spawn(0), warn(1, "skipped: dependency `db` has no ready_log_line")]);
    }

    #[test]
    fn readiness_needs_success_threshold_consecutive_oks_and_failure_threshold_to_lose_it() {
        let mut h = Harness::started(vec![spec_with("api", |s| s.readiness = thresholds(3, 2))]);
        h.spawned(0, 10);
        for ok in [true, true, false, true, true] {
            assert_eq!(h.ready_probe(0, ok), vec![]);
        }
        assert_eq!(h.state(0), NodeState::Starting, "a failure reset the count");
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready")]);
        for ok in [false, true, false] {
            assert_eq!(h.ready_probe(0, ok), vec![]);
        }
        assert_eq!(
            h.ready_probe(0, false),
            vec![warn(0, "not ready: readiness probe failed 2 times in a row")]
        );
        let status = h.status(0);
        assert_eq!((status.state, status.ready), (NodeState::Running, false));
        assert_eq!(status.reason.as_deref(), Some("readiness probe failed 2 times in a row"));
        assert_eq!(h.ready_probe(0, false), vec![], "readiness failures never stop or restart a node");
        assert_eq!(h.ready_probe(0, true), vec![]);
        assert_eq!(h.ready_probe(0, true), vec![]);
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready")]);
        assert_eq!(h.status(0).reason, None);
    }

    #[test]
    fn readiness_counts_start_afresh_with_each_process() {
        let api = spec_with("api", |s| {
            s.readiness = thresholds(2, 1);
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![api]);
        h.spawned(0, 10);
        h.ready_probe(0, true);
        h.exit(0, 1);
        h.fire(TimerId::Restart(0));
        assert_eq!(h.spawned(0, 11), vec![info(0, "started (pid 11)"), Action::StartProbes { node: 0 }]);
        assert_eq!(h.ready_probe(0, true), vec![], "the old process's ok does not count");
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready")]);
    }

    #[test]
    fn liveness_failures_stop_the_node_and_its_exit_counts_as_a_failure() {
        let svc = spec_with("svc", |s| {
            s.liveness = thresholds(1, 2);
            s.restart = RestartPolicy::OnFailure;
        });
        let mut h = Harness::started(vec![svc]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), Action::StartProbes { node: 0 }]);
        assert_eq!(h.state(0), NodeState::Running, "liveness is no readiness criterion");
        for ok in [false, true, false] {
            assert_eq!(h.live_probe(0, ok), vec![]);
        }
        assert_eq!(
            h.live_probe(0, false),
            vec![
                warn(0, "liveness probe failed 2 times in a row; stopping it"),
                Action::StopProbes { node: 0 },
                Action::Stop { node: 0 },
                arm_kill(0, secs(10)),
            ]
        );
        assert_eq!(h.state(0), NodeState::Stopping);
        assert_eq!(h.live_probe(0, false), vec![], "results after the stop are ignored");
        assert_eq!(
            h.exit(0, 0),
            vec![
                Action::CancelTimer { timer: TimerId::Kill(0) },
                warn(0, "exited with code 0 after failing its liveness probe"),
                info(0, "restarting in 1s (restart 1)"),
                arm_restart(0, secs(1)),
            ]
        );
        assert_eq!(h.fire(TimerId::Restart(0)), vec![spawn(0)]);
        h.spawned(0, 11);
        assert_eq!(h.live_probe(0, false), vec![], "the count starts afresh");
    }

    #[test]
    fn a_node_stopped_by_liveness_is_killed_after_its_timeout() {
        let svc = spec_with("svc", |s| s.liveness = thresholds(1, 1));
        let mut h = Harness::started(vec![svc]);
        h.spawned(0, 10);
        h.live_probe(0, false);
        assert_eq!(
            h.fire(TimerId::Kill(0)),
            vec![
                warn(0, "did not stop within 10s, killing"),
                Action::Kill { node: 0 },
                arm_kill(0, crate::pid1::drain::AFTER_KILL),
            ]
        );
        assert_eq!(h.fire(TimerId::Kill(0)), vec![], "outside shutdown the graph waits for the exit");
        assert_eq!(
            h.signalled(0, 9),
            vec![
                Action::CancelTimer { timer: TimerId::Kill(0) },
                error(0, "killed by SIGKILL after failing its liveness probe"),
                Action::Finished { code: 1 },
            ]
        );
        assert_eq!(h.status(0).exit_code, Some(137));
    }

    fn notify(node: NodeId, notice: Notice) -> Event {
        Event::Notify { node, notice }
    }

    fn arm_watchdog(node: NodeId, after: std::time::Duration) -> Action {
        Action::ArmTimer { timer: TimerId::Watchdog(node), after }
    }

    #[test]
    fn ready_1_makes_a_notify_node_ready_and_starts_its_healthy_dependents_then() {
        let db = spec_with("db", |s| s.notify = true);
        let mut h = Harness::new(vec![db, after("app", &[(0, Healthy)]), after("web", &[(0, Started)])]);
        assert_eq!(h.start(), vec![spawn(0)]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), spawn(2)]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Starting, false));
        h.advance(secs(3));
        assert_eq!(h.ev(notify(0, Notice::Status("loading".into()))), vec![]);
        assert_eq!(h.status(0).status_text.as_deref(), Some("loading"));
        assert_eq!(h.state(1), NodeState::Pending, "not ready yet");
        assert_eq!(h.ev(notify(0, Notice::Ready)), vec![info(0, "ready"), spawn(1)]);
        assert_eq!((h.state(0), h.status(0).ready), (NodeState::Ready, true));
        assert_eq!(h.ev(notify(0, Notice::Ready)), vec![], "a second READY=1 changes nothing");
    }

    #[test]
    fn stopping_1_takes_readiness_away_and_ready_1_gives_it_back() {
        let mut h = Harness::started(vec![spec_with("db", |s| s.notify = true)]);
        h.spawned(0, 10);
        h.ev(notify(0, Notice::Ready));
        assert_eq!(
            h.ev(notify(0, Notice::Stopping)),
            vec![info(0, "not ready: the process said it is stopping (STOPPING=1)")]
        );
        let status = h.status(0);
        assert_eq!((status.state, status.ready), (NodeState::Running, false));
        assert_eq!(h.ev(notify(0, Notice::Ready)), vec![info(0, "ready")]);
        assert_eq!(h.status(0).reason, None);
    }

    #[test]
    fn notifications_count_only_for_notify_nodes_with_a_process() {
        let mut h = Harness::started(vec![spec_with("db", |s| s.notify = true), spec("plain")]);
        assert_eq!(h.ev(notify(0, Notice::Ready)), vec![], "the spawn is not answered yet");
        assert_eq!(h.state(0), NodeState::Starting);
        h.spawned(1, 11);
        assert_eq!(h.ev(notify(1, Notice::Status("hi".into()))), vec![]);
        assert_eq!(h.status(1).status_text, None, "`plain` does not take notifications");
        assert_eq!(h.ev(notify(9, Notice::Ready)), vec![]);
    }

    #[test]
    fn the_status_text_belongs_to_the_current_process() {
        let db = spec_with("db", |s| {
            s.notify = true;
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![db]);
        h.spawned(0, 10);
        h.ev(notify(0, Notice::Status("serving 3 clients".into())));
        h.exit(0, 1);
        assert_eq!(h.status(0).status_text.as_deref(), Some("serving 3 clients"), "kept after the end");
        h.fire(TimerId::Restart(0));
        h.spawned(0, 11);
        assert_eq!(h.status(0).status_text, None);
    }

    #[test]
    fn a_watchdog_without_pings_stops_the_node_and_its_end_counts_as_a_failure() {
        let db = spec_with("db", |s| {
            s.notify = true;
            s.watchdog = Some(secs(5));
            s.restart = RestartPolicy::OnFailure;
        });
        let mut h = Harness::started(vec![db]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), arm_watchdog(0, secs(5))]);
        h.advance(secs(4));
        assert_eq!(h.ev(notify(0, Notice::Watchdog)), vec![arm_watchdog(0, secs(5))]);
        h.advance(secs(4));
        assert_eq!(h.fire(TimerId::Watchdog(0)), vec![], "a stale timer: the ping moved the deadline");
        h.advance(secs(1));
        assert_eq!(
            h.fire(TimerId::Watchdog(0)),
            vec![
                warn(0, "no WATCHDOG=1 within 5s; stopping it"),
                Action::Stop { node: 0 },
                arm_kill(0, secs(10)),
            ]
        );
        assert_eq!(h.state(0), NodeState::Stopping);
        assert_eq!(h.ev(notify(0, Notice::Watchdog)), vec![], "too late");
        assert_eq!(
            h.exit(0, 0),
            vec![
                Action::CancelTimer { timer: TimerId::Kill(0) },
                warn(0, "exited with code 0 after its watchdog ran out"),
                info(0, "restarting in 1s (restart 1)"),
                arm_restart(0, secs(1)),
            ]
        );
        h.fire(TimerId::Restart(0));
        assert_eq!(h.spawned(0, 11), vec![info(0, "started (pid 11)"), arm_watchdog(0, secs(5))]);
    }

    #[test]
    fn the_watchdog_is_cancelled_when_the_node_stops_or_ends() {
        let db = spec_with("db", |s| {
            s.notify = true;
            s.watchdog = Some(secs(5));
        });
        let mut h = Harness::started(vec![db, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            quiet(h.exit(0, 0)),
            vec![Action::CancelTimer { timer: TimerId::Watchdog(0) }],
            "ended on its own"
        );
        h.advance(secs(9));
        assert_eq!(h.fire(TimerId::Watchdog(0)), vec![]);
        h.graph.control(0, crate::graph::ControlCommand::Start, h.now).unwrap();
        h.spawned(0, 12);
        assert_eq!(
            quiet(h.stop()),
            vec![
                Action::CancelTimer { timer: TimerId::Watchdog(0) },
                Action::Stop { node: 0 },
                arm_kill(0, secs(10)),
                Action::Stop { node: 1 },
                arm_kill(1, secs(10)),
            ]
        );
        h.advance(secs(9));
        assert_eq!(h.fire(TimerId::Watchdog(0)), vec![], "nothing during shutdown");
    }

    #[test]
    fn status_reports_every_node_in_order() {
        let mut h = Harness::started(vec![spec("a"), spec_with("b", |s| s.readiness = thresholds(1, 1))]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            h.graph.status(),
            vec![
                NodeStatus {
                    name: "a".to_string(),
                    state: NodeState::Running,
                    pid: Some(10),
                    restarts: 0,
                    exit_code: None,
                    ready: true,
                    reason: None,
                    status_text: None,
                    since: Some(h.now),
                },
                NodeStatus {
                    name: "b".to_string(),
                    state: NodeState::Starting,
                    pid: Some(11),
                    restarts: 0,
                    exit_code: None,
                    ready: false,
                    reason: None,
                    status_text: None,
                    since: Some(h.now),
                },
            ]
        );
        assert_eq!(h.graph.node_by_pid(11), Some(1));
        assert_eq!(h.graph.node_by_pid(12), None);
        assert_eq!(h.graph.node_by_name("b"), Some(1));
        assert_eq!(h.graph.node_by_name("c"), None);
        assert_eq!(h.graph.name(1), "b");
        assert_eq!(h.graph.name(7), "?");
    }

    #[test]
    fn events_before_start_change_nothing() {
        let mut h = Harness::new(vec![spec_with("a", |s| s.readiness = thresholds(1, 1))]);
        assert_eq!(h.spawned(0, 10), vec![]);
        assert_eq!(h.exit(0, 1), vec![]);
        assert_eq!(h.ready_probe(0, true), vec![]);
        assert_eq!(h.fire(TimerId::Restart(0)), vec![]);
        assert_eq!(h.fire(TimerId::Kill(0)), vec![]);
        assert_eq!(h.state(0), NodeState::Pending);
        assert_eq!(h.start(), vec![spawn(0)]);
        assert_eq!(h.start(), vec![], "a second Start is ignored");
    }

    #[test]
    fn unexpected_events_stale_timers_and_unknown_nodes_are_ignored() {
        let mut h = Harness::started(vec![spec("a"), spec_with("b", |s| s.has_ready_log_line = true)]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        let ignored = [
            Event::Spawned { node: 0, pid: 99 },
            Event::SpawnFailed { node: 0, code: 127, reason: "late".to_string() },
            Event::Probe { node: 0, kind: ProbeKind::Readiness, ok: false },
            Event::Probe { node: 0, kind: ProbeKind::Liveness, ok: false },
            Event::LogReady { node: 0 },
            Event::Timer(TimerId::Restart(0)),
            Event::Timer(TimerId::Kill(1)),
            Event::Exited { node: 9, status: crate::pid1::reaper::ExitStatus::Code(1) },
            Event::Spawned { node: 9, pid: 5 },
            Event::Probe { node: 9, kind: ProbeKind::Liveness, ok: false },
            Event::LogReady { node: 9 },
            Event::Timer(TimerId::Restart(9)),
            Event::Timer(TimerId::Kill(9)),
        ];
        for event in ignored {
            assert_eq!(h.ev(event.clone()), vec![], "{event:?}");
        }
        assert_eq!(h.graph.node_by_pid(10), Some(0));
        h.exit(0, 0);
        assert_eq!(h.exit(0, 0), vec![], "a second exit for the same node");
    }
}

//! Test helpers: node specs with defaults, and a harness that feeds events to a graph on a fake
//! clock (an `Instant` the test moves forward) so that backoff and uptime are exact.

use std::time::{Duration, Instant};

use super::control::ControlCommand;
use super::event::{Action, Event, NoteLevel, ProbeKind, TimerId};
use super::machine::Graph;
use super::spec::{Condition, NodeId, NodeSpec, RestartPolicy, Thresholds};
use super::state::{NodeState, NodeStatus};
use crate::pid1::reaper::ExitStatus;

/// A node with the config's defaults: no dependencies, `restart: no`, 1s backoff, success code
/// 0, no probes, 10s shutdown timeout.
pub(super) fn spec(name: &str) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        depends_on: Vec::new(),
        restart: RestartPolicy::No,
        backoff: Duration::from_secs(1),
        max_restarts: None,
        exit_on_end: false,
        success_exit_codes: vec![0],
        readiness: None,
        liveness: None,
        has_ready_log_line: false,
        notify: false,
        watchdog: None,
        shutdown_timeout: Duration::from_secs(10),
        disabled: false,
        main: false,
    }
}

/// The action that starts `node`.
pub(super) fn spawn(node: NodeId) -> Action {
    Action::Spawn { node }
}

/// The action that stops `node` (its signal or shutdown command).
pub(super) fn stop(node: NodeId) -> Action {
    Action::Stop { node }
}

/// The action that cancels `node`'s SIGKILL timer.
pub(super) fn cancel_kill(node: NodeId) -> Action {
    Action::CancelTimer { timer: TimerId::Kill(node) }
}

/// `spec(name)` changed by `edit`.
pub(super) fn spec_with(name: &str, edit: impl FnOnce(&mut NodeSpec)) -> NodeSpec {
    let mut node = spec(name);
    edit(&mut node);
    node
}

/// `spec(name)` depending on `deps`.
pub(super) fn after(name: &str, deps: &[(NodeId, Condition)]) -> NodeSpec {
    spec_with(name, |node| node.depends_on = deps.to_vec())
}

pub(super) fn thresholds(success: u32, failure: u32) -> Option<Thresholds> {
    Some(Thresholds { success, failure })
}

pub(super) fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// The actions without the notes, for tests about what the runtime does.
pub(super) fn quiet(actions: Vec<Action>) -> Vec<Action> {
    actions.into_iter().filter(|action| !matches!(action, Action::Note { .. })).collect()
}

/// Only the notes, as `(node, message)`.
pub(super) fn notes(actions: &[Action]) -> Vec<(NodeId, &str)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Note { node, message, .. } => Some((*node, message.as_str())),
            _ => None,
        })
        .collect()
}

pub(super) fn info(node: NodeId, message: &str) -> Action {
    Action::Note { node, level: NoteLevel::Info, message: message.to_string() }
}

pub(super) fn warn(node: NodeId, message: &str) -> Action {
    Action::Note { node, level: NoteLevel::Warn, message: message.to_string() }
}

pub(super) fn error(node: NodeId, message: &str) -> Action {
    Action::Note { node, level: NoteLevel::Error, message: message.to_string() }
}

pub(super) fn arm_kill(node: NodeId, after: Duration) -> Action {
    Action::ArmTimer { timer: TimerId::Kill(node), after }
}

pub(super) fn arm_restart(node: NodeId, after: Duration) -> Action {
    Action::ArmTimer { timer: TimerId::Restart(node), after }
}

/// A graph on a fake clock.
pub(super) struct Harness {
    pub graph: Graph,
    pub now: Instant,
}

impl Harness {
    pub fn new(specs: Vec<NodeSpec>) -> Self {
        Self { graph: Graph::new(specs), now: Instant::now() }
    }

    /// A graph already started, with the start's actions dropped.
    pub fn started(specs: Vec<NodeSpec>) -> Self {
        let mut harness = Self::new(specs);
        harness.start();
        harness
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub fn ev(&mut self, event: Event) -> Vec<Action> {
        self.graph.handle(event, self.now)
    }

    pub fn start(&mut self) -> Vec<Action> {
        self.ev(Event::Start)
    }

    pub fn stop(&mut self) -> Vec<Action> {
        self.ev(Event::Stop)
    }

    pub fn spawned(&mut self, node: NodeId, pid: i32) -> Vec<Action> {
        self.ev(Event::Spawned { node, pid })
    }

    pub fn exit(&mut self, node: NodeId, code: i32) -> Vec<Action> {
        self.ev(Event::Exited { node, status: ExitStatus::Code(code) })
    }

    pub fn signalled(&mut self, node: NodeId, signo: i32) -> Vec<Action> {
        self.ev(Event::Exited { node, status: ExitStatus::Signal(signo) })
    }

    pub fn ready_probe(&mut self, node: NodeId, ok: bool) -> Vec<Action> {
        self.ev(Event::Probe { node, kind: ProbeKind::Readiness, ok })
    }

    pub fn live_probe(&mut self, node: NodeId, ok: bool) -> Vec<Action> {
        self.ev(Event::Probe { node, kind: ProbeKind::Liveness, ok })
    }

    pub fn fire(&mut self, timer: TimerId) -> Vec<Action> {
        self.ev(Event::Timer(timer))
    }

    /// An operator's command, at the harness's time.
    pub fn control(
        &mut self,
        node: NodeId,
        command: ControlCommand,
    ) -> Result<(String, Vec<Action>), String> {
        self.graph.control(node, command, self.now)
    }

    /// An operator's command that must be accepted: its message and actions.
    pub fn accept(&mut self, node: NodeId, command: ControlCommand) -> (String, Vec<Action>) {
        self.control(node, command).unwrap_or_else(|why| panic!("{command:?} of {node} refused: {why}"))
    }

    /// An operator's command that must be refused: why. Checks that nothing changed.
    pub fn refuse(&mut self, node: NodeId, command: ControlCommand) -> String {
        let before = self.graph.status();
        let why = match self.control(node, command) {
            Ok(accepted) => panic!("{command:?} of {node} accepted: {accepted:?}"),
            Err(why) => why,
        };
        assert_eq!(self.graph.status(), before, "a refused command changes nothing");
        why
    }

    pub fn state(&self, node: NodeId) -> NodeState {
        self.status(node).state
    }

    pub fn status(&self, node: NodeId) -> NodeStatus {
        let all = self.graph.status();
        all.get(node).cloned().unwrap_or_else(|| panic!("no node {node} in the graph"))
    }
}

//! A property-style test: random small graphs fed deterministic pseudo-random event sequences
//! (a simple LCG, so a failure reproduces from its seed) by a model runtime that keeps the
//! runtime's side of the contract (it answers every spawn at once and routes exits by pid),
//! mixed with events the graph must ignore, with notifications, with the operator's control
//! commands and with reloads of other random graphs (names overlap, so nodes are kept, changed,
//! added and removed). The graph must never panic, keep its status consistent, refuse commands
//! and reloads once stopping, match each reload's dry run, and, after a Stop and the exit of
//! every process, end in exactly one `Finished`.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::control::ControlCommand;
use super::event::{Action, Event, Notice, ProbeKind, TimerId};
use super::machine::Graph;
use super::spec::{Condition, NodeId, NodeSpec, RestartPolicy};
use super::state::NodeState;
use super::testkit::{spec, thresholds};
use crate::pid1::reaper::ExitStatus;

/// Knuth's MMIX LCG; the high bits are the random ones.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() { None } else { items.get(self.below(items.len())).copied() }
    }
}

const CONDITIONS: [Condition; 5] = [
    Condition::ProcessStarted,
    Condition::ProcessHealthy,
    Condition::ProcessCompleted,
    Condition::ProcessCompletedSuccessfully,
    Condition::ProcessLogReady,
];

const POLICIES: [RestartPolicy; 4] =
    [RestartPolicy::No, RestartPolicy::Always, RestartPolicy::OnFailure, RestartPolicy::ExitOnFailure];

/// Up to 6 nodes; dependencies only on earlier ranks (no cycles), then shuffled so node order
/// is not dependency order.
fn random_graph(rng: &mut Lcg) -> Vec<NodeSpec> {
    let count = 1 + rng.below(6);
    let mut position: Vec<NodeId> = (0..count).collect();
    for i in (1..count).rev() {
        position.swap(i, rng.below(i + 1));
    }
    let main_rank = if rng.one_in(3) { Some(rng.below(count)) } else { None };
    let mut ranked: Vec<(NodeId, NodeSpec)> = (0..count)
        .map(|rank| {
            let mut node = spec(&format!("n{rank}"));
            for &dep in position.iter().take(rank) {
                if rng.one_in(2) {
                    let condition = rng.pick(&CONDITIONS).unwrap_or_default();
                    node.depends_on.push((dep, condition));
                }
            }
            node.restart = rng.pick(&POLICIES).unwrap_or_default();
            node.max_restarts = if rng.one_in(2) { Some(rng.below(3) as u32) } else { None };
            node.exit_on_end = rng.one_in(6);
            node.success_exit_codes = if rng.one_in(3) { vec![0, 2] } else { vec![0] };
            node.readiness = if rng.one_in(2) {
                thresholds(1 + rng.below(2) as u32, 1 + rng.below(2) as u32)
            } else {
                None
            };
            node.liveness = if rng.one_in(3) { thresholds(1, 1 + rng.below(2) as u32) } else { None };
            node.has_ready_log_line = rng.one_in(3);
            node.notify = rng.one_in(4);
            node.watchdog = if node.notify && rng.one_in(2) { Some(Duration::from_secs(5)) } else { None };
            node.disabled = rng.one_in(8);
            node.main = main_rank == Some(rank);
            node.backoff = Duration::from_millis(rng.below(3000) as u64);
            (position[rank], node)
        })
        .collect();
    ranked.sort_by_key(|(id, _)| *id);
    ranked.into_iter().map(|(_, node)| node).collect()
}

/// The runtime's side: processes by pid, armed timers, and what the graph asked for.
struct Model {
    graph: Graph,
    rng: Lcg,
    now: Instant,
    processes: Vec<i32>,
    timers: HashSet<TimerId>,
    next_pid: i32,
    finished: usize,
    stop_sent: bool,
    seed: u64,
    /// The main process's name, if the graph has one: every reload keeps it, as the runtime does.
    main: Option<String>,
    /// Ids given out so far, removed nodes included.
    next_id_hint: usize,
    /// Nodes a reload removed for good: no action may name them again.
    forgotten: HashSet<NodeId>,
}

/// The node an action is about, if any.
fn subject(action: &Action) -> Option<NodeId> {
    match action {
        Action::Spawn { node }
        | Action::StartProbes { node }
        | Action::StopProbes { node }
        | Action::Stop { node }
        | Action::Kill { node }
        | Action::Note { node, .. }
        | Action::Redefine { node }
        | Action::Forget { node } => Some(*node),
        Action::ArmTimer {
            timer: TimerId::Restart(node) | TimerId::Kill(node) | TimerId::Watchdog(node),
            ..
        } => Some(*node),
        Action::CancelTimer { .. } | Action::Finished { .. } => None,
    }
}

impl Model {
    fn feed(&mut self, event: Event) {
        let was_finished = self.graph.is_finished();
        let actions = self.graph.handle(event.clone(), self.now);
        let seed = self.seed;
        assert!(
            !was_finished || actions.is_empty(),
            "seed {seed}: {event:?} after Finished gave {actions:?}"
        );
        self.check_status();
        for action in actions {
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        let seed = self.seed;
        if let Some(node) = subject(&action) {
            assert!(!self.forgotten.contains(&node), "seed {seed}: {action:?} for a forgotten node");
        }
        match action {
            Action::Spawn { node } => {
                assert!(!self.stop_sent, "seed {seed}: spawn of {node} after Stop");
                if self.rng.one_in(8) {
                    let reason = "not found".to_string();
                    self.feed(Event::SpawnFailed { node, code: 127, reason });
                } else {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.processes.push(pid);
                    self.feed(Event::Spawned { node, pid });
                }
            }
            Action::ArmTimer { timer, .. } => {
                self.timers.insert(timer);
            }
            Action::CancelTimer { timer } => {
                self.timers.remove(&timer);
            }
            Action::Finished { .. } => {
                self.finished += 1;
                let status = self.graph.status();
                let active =
                    status.iter().filter(|node| node.state.is_live() || node.state == NodeState::Stopping);
                assert_eq!(active.count(), 0, "seed {seed}: finished with {status:?}");
            }
            Action::Forget { node } => {
                self.forgotten.insert(node);
            }
            Action::StartProbes { .. }
            | Action::Redefine { .. }
            | Action::StopProbes { .. }
            | Action::Stop { .. }
            | Action::Kill { .. }
            | Action::Note { .. } => {}
        }
    }

    /// Status stays consistent: pids belong to live or stopping nodes and map back to them.
    fn check_status(&self) {
        let seed = self.seed;
        assert!(self.finished <= 1, "seed {seed}: more than one Finished");
        assert_eq!(self.graph.ids().len(), self.graph.status().len(), "seed {seed}");
        for (&id, node) in self.graph.ids().iter().zip(self.graph.status()) {
            if let Some(pid) = node.pid {
                assert!(node.state.is_live() || node.state == NodeState::Stopping, "seed {seed}: {node:?}");
                assert_eq!(self.graph.node_by_pid(pid), Some(id), "seed {seed}");
            }
            if matches!(node.state, NodeState::Running | NodeState::Ready) {
                assert!(node.pid.is_some(), "seed {seed}: {node:?}");
            }
            if node.ready {
                assert!(matches!(node.state, NodeState::Running | NodeState::Ready), "seed {seed}: {node:?}");
            }
        }
    }

    /// One process ends; the exit is routed by pid, as the runtime does.
    fn exit_one(&mut self, status: ExitStatus) {
        if self.processes.is_empty() {
            return;
        }
        let pid = self.processes.swap_remove(self.rng.below(self.processes.len()));
        if let Some(node) = self.graph.node_by_pid(pid) {
            self.feed(Event::Exited { node, status });
        }
    }

    fn fire_one(&mut self) {
        let mut armed: Vec<TimerId> = self.timers.iter().copied().collect();
        armed.sort_by_key(|timer| format!("{timer:?}"));
        if let Some(timer) = self.rng.pick(&armed) {
            self.timers.remove(&timer);
            self.feed(Event::Timer(timer));
        }
    }

    /// An operator's command on a random node (or an id past the end). Refused once a `Stop`
    /// went out or the graph finished; when accepted, the node is in the state the command
    /// leads to and the actions are executed like an event's.
    fn random_control(&mut self, node: NodeId) {
        let seed = self.seed;
        let Some(command) =
            self.rng.pick(&[ControlCommand::Start, ControlCommand::Stop, ControlCommand::Restart])
        else {
            return;
        };
        let finished = self.graph.is_finished();
        let result = self.graph.control(node, command, self.now);
        self.check_status();
        let Ok((message, actions)) = result else {
            return;
        };
        assert!(!self.stop_sent && !finished, "seed {seed}: {command:?} of {node} accepted: {message}");
        assert!(!message.is_empty(), "seed {seed}");
        assert!(
            !actions.iter().any(|action| matches!(action, Action::Finished { .. })),
            "seed {seed}: {command:?} of {node} finished: {actions:?}"
        );
        let state = self.state_of(node);
        let expected: &[NodeState] = match command {
            ControlCommand::Start => &[NodeState::Starting],
            ControlCommand::Stop => &[NodeState::Stopping, NodeState::Stopped],
            ControlCommand::Restart => &[NodeState::Starting, NodeState::Stopping],
        };
        assert!(
            state.is_some_and(|state| expected.contains(&state)),
            "seed {seed}: {command:?} left {state:?}"
        );
        for action in actions {
            self.execute(action);
        }
    }

    fn state_of(&self, node: NodeId) -> Option<NodeState> {
        let index = self.graph.ids().iter().position(|&id| id == node)?;
        self.graph.status().get(index).map(|status| status.state)
    }

    /// One more than the largest node id so far (ids are never reused).
    fn id_bound(&self) -> usize {
        self.graph.ids().iter().max().map_or(0, |id| id + 1).max(self.next_id_hint)
    }

    /// A reload with another random graph (names `n0`.. overlap with the current ones) and a
    /// random set of launch changes; it must match its dry run, and be refused once stopping.
    fn random_reload(&mut self) {
        let seed = self.seed;
        let mut specs = random_graph(&mut self.rng);
        for spec in &mut specs {
            spec.main = false;
            if Some(&spec.name) == self.main.as_ref() {
                spec.name.push_str("-service");
            }
        }
        if let Some(main) = &self.main {
            let mut node = spec(main);
            node.main = true;
            specs.push(node);
        }
        let changed: BTreeSet<String> =
            specs.iter().filter(|_| self.rng.one_in(4)).map(|spec| spec.name.clone()).collect();
        let finished = self.graph.is_finished();
        let dry = self.graph.plan_reconfigure(&specs, &changed);
        let result = self.graph.reconfigure(specs, &changed, self.now);
        self.check_status();
        let Ok(done) = result else {
            assert!(dry.is_err(), "seed {seed}: the dry run was accepted");
            return;
        };
        assert!(!self.stop_sent && !finished, "seed {seed}: reload accepted while stopping");
        assert_eq!(dry.ok(), Some(done.changes.clone()), "seed {seed}");
        self.next_id_hint = self.next_id_hint.max(done.ids.iter().max().map_or(0, |id| id + 1));
        for action in done.actions {
            self.execute(action);
        }
    }

    fn random_status(&mut self) -> ExitStatus {
        match self.rng.below(6) {
            0 => ExitStatus::Signal(9),
            1 => ExitStatus::Signal(15),
            2 => ExitStatus::Code(2),
            3 => ExitStatus::Code(1),
            _ => ExitStatus::Code(0),
        }
    }

    fn random_step(&mut self) {
        let nodes = self.id_bound();
        self.now += Duration::from_millis(self.rng.below(90_000) as u64);
        // Ids one past the end too: the graph must ignore them.
        let node = self.rng.below(nodes + 1);
        let ok = self.rng.one_in(2);
        match self.rng.below(16) {
            0 | 1 => {
                let status = self.random_status();
                self.exit_one(status);
            }
            2 | 3 => self.feed(Event::Probe { node, kind: ProbeKind::Readiness, ok }),
            4 => self.feed(Event::Probe { node, kind: ProbeKind::Liveness, ok }),
            5 => self.feed(Event::LogReady { node }),
            6 | 7 => self.fire_one(),
            8 => {
                let timer = if ok { TimerId::Restart(node) } else { TimerId::Kill(node) };
                if !self.timers.contains(&timer) {
                    self.feed(Event::Timer(timer));
                }
            }
            9 => {
                // Unexpected answers and exits for nodes without a process are ignored.
                if self.graph.status().get(node).is_none_or(|status| status.pid.is_none()) {
                    self.feed(Event::Spawned { node, pid: 9999 });
                    self.feed(Event::Exited { node, status: ExitStatus::Code(1) });
                }
            }
            10 if self.rng.one_in(4) => {
                self.stop_sent = true;
                self.feed(Event::Stop);
            }
            11 | 12 => self.random_control(node),
            13 if self.rng.one_in(2) => self.random_reload(),
            14 => {
                let notice = match self.rng.below(4) {
                    0 => Notice::Ready,
                    1 => Notice::Watchdog,
                    2 => Notice::Stopping,
                    _ => Notice::Status("busy".into()),
                };
                self.feed(Event::Notify { node, notice });
            }
            _ => self.feed(Event::Start),
        }
    }
}

#[test]
fn random_event_sequences_never_panic_and_end_in_exactly_one_finished() {
    for seed in 0..400u64 {
        let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1));
        let specs = random_graph(&mut rng);
        let main = specs.iter().find(|spec| spec.main).map(|spec| spec.name.clone());
        let next_id_hint = specs.len();
        let mut model = Model {
            graph: Graph::new(specs),
            rng,
            now: Instant::now(),
            processes: Vec::new(),
            timers: HashSet::new(),
            next_pid: 100,
            finished: 0,
            stop_sent: false,
            seed,
            main,
            next_id_hint,
            forgotten: HashSet::new(),
        };
        model.feed(Event::Start);
        for _ in 0..80 {
            model.random_step();
        }
        model.stop_sent = true;
        model.feed(Event::Stop);
        for _ in 0..1000 {
            if model.graph.is_finished() {
                break;
            }
            if model.processes.is_empty() {
                model.fire_one();
            } else {
                model.exit_one(ExitStatus::Signal(15));
            }
        }
        assert!(model.graph.is_finished(), "seed {seed}: not finished: {:?}", model.graph.status());
        assert_eq!(model.finished, 1, "seed {seed}");
    }
}

//! The event loop: runs the dependency graph's decisions on real processes.
//!
//! The graph ([`crate::graph`]) decides; this module executes: it spawns processes and pumps
//! their output, runs probes, arms timers, signals process groups, reaps (routing each exit
//! status to its owner by pid: a node, an exec probe, a shutdown command, or nobody for an
//! orphan), forwards signals to the main process, and feeds every result back to the graph as
//! an event. When the graph has finished, the leftovers are drained and the exit code returned.

mod answers;
pub mod nodes;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::ForwardTo;
use crate::control::{Answer, Ask, Request, Response};
use crate::exit_code;
use crate::graph::{Action, ControlCommand, Event, Graph, NodeId, NoteLevel, ProbeKind, TimerId};
use crate::logs::{Batch, Output, PumpTarget, ReadyLine, Stream, pump};
use crate::pid1::reaper;
use crate::pid1::signals::{self, Signals, TERMINAL_HOUSEKEEPING};
use crate::pid1::{self, is_stop_request};
use crate::probe::{self, ExecContext, ProbeExits};
use crate::spawn;
pub use nodes::{MAIN_NAME, Node};

/// Settings of the loop that are not per node.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub forward_to: ForwardTo,
    /// SIGTERM-to-SIGKILL grace for processes left behind when the graph has finished.
    pub grace: Duration,
    /// stdin is a terminal: the main process gets its foreground.
    pub interactive: bool,
}

/// Runs the graph to its end, answering control requests from `control` meanwhile, drains the
/// leftovers, and returns the exit code.
pub async fn run(
    mut signals: Signals,
    graph: Graph,
    nodes: Vec<Node>,
    output: Output,
    settings: Settings,
    control: mpsc::Receiver<Ask>,
) -> i32 {
    let (events, inbox) = unbounded_channel();
    let (live, _) = broadcast::channel(LIVE_BATCHES);
    let mut supervisor = Supervisor {
        graph,
        nodes,
        output,
        settings,
        pids: HashMap::new(),
        shutdown_commands: HashMap::new(),
        timers: HashMap::new(),
        probes: HashMap::new(),
        probe_exits: ProbeExits::default(),
        pumps: Vec::new(),
        events,
        live,
        finished: None,
    };
    let code = supervisor.supervise(&mut signals, inbox, control).await;
    supervisor.cancel_tasks();
    let code = pid1::drain_leftovers(&mut signals, code, settings.grace).await;
    // Every process is gone now, so every pipe has reached its end: let the pumps pass on
    // what is still buffered in them (a process may have written its last lines just before
    // it exited). Bounded, in case a pipe was handed to something outside the init's reach.
    let deadline = tokio::time::Instant::now() + PUMP_DRAIN;
    for pump in supervisor.pumps {
        let _ = tokio::time::timeout_at(deadline, pump).await;
    }
    code
}

/// Batches of output kept for `logs --follow` clients that are momentarily behind.
const LIVE_BATCHES: usize = 256;

/// How long output still in the pipes may take to reach stdout after everything has exited.
const PUMP_DRAIN: Duration = Duration::from_secs(2);

struct Supervisor {
    graph: Graph,
    nodes: Vec<Node>,
    output: Output,
    settings: Settings,
    /// Live processes of nodes, by pid.
    pids: HashMap<i32, NodeId>,
    /// Running shutdown commands, by pid (their status only goes to the log).
    shutdown_commands: HashMap<i32, NodeId>,
    timers: HashMap<TimerId, JoinHandle<()>>,
    probes: HashMap<NodeId, Vec<JoinHandle<()>>>,
    probe_exits: ProbeExits,
    /// The tasks reading the processes' output pipes.
    pumps: Vec<JoinHandle<()>>,
    /// Timers, probes and log pumps report here.
    events: UnboundedSender<Event>,
    /// Every batch of output, for `logs --follow` clients (nobody listening costs nothing).
    live: broadcast::Sender<Arc<Batch>>,
    finished: Option<i32>,
}

impl Supervisor {
    async fn supervise(
        &mut self,
        signals: &mut Signals,
        mut inbox: UnboundedReceiver<Event>,
        mut control: mpsc::Receiver<Ask>,
    ) -> i32 {
        self.feed(Event::Start);
        loop {
            if let Some(code) = self.finished {
                return code;
            }
            tokio::select! {
                received = signals.recv() => match received {
                    Ok(received) => self.on_signal(received.signo),
                    Err(failure) => {
                        error!("cannot read signals any more ({failure}); stopping");
                        return exit_code::INTERNAL;
                    }
                },
                Some(event) = inbox.recv() => self.feed(event),
                Some(ask) = control.recv() => {
                    let answer = self.answer(ask.request);
                    let _ = ask.reply.send(answer);
                }
            }
        }
    }

    /// Answers one control request, between two events.
    fn answer(&mut self, request: Request) -> Answer {
        let now = Instant::now();
        match request {
            Request::Status => Answer::One(Response::Status(answers::status(self.graph.status(), now))),
            Request::Health => Answer::One(Response::Health(answers::health(&self.graph.status()))),
            Request::Logs { name, lines, follow } => {
                answers::logs(&self.nodes, name.as_deref(), lines, follow.then(|| self.live.subscribe()))
            }
            Request::Start { name } => self.command(&name, ControlCommand::Start, now),
            Request::Stop { name } => self.command(&name, ControlCommand::Stop, now),
            Request::Restart { name } => self.command(&name, ControlCommand::Restart, now),
        }
    }

    /// An operator's start, stop or restart of one node.
    fn command(&mut self, name: &str, command: ControlCommand, now: Instant) -> Answer {
        let Some(node) = self.graph.node_by_name(name) else {
            return Answer::One(answers::unknown_node(&self.nodes, name));
        };
        match self.graph.control(node, command, now) {
            Ok((message, actions)) => {
                info!("{name}: {message} (operator request)");
                let follow_ups: Vec<Event> = actions.into_iter().filter_map(|a| self.execute(a)).collect();
                for event in follow_ups {
                    self.feed(event);
                }
                Answer::One(Response::Done { message: format!("{name}: {message}") })
            }
            Err(refusal) => Answer::One(Response::Error { message: refusal }),
        }
    }

    fn on_signal(&mut self, signo: i32) {
        if signo == nix::libc::SIGCHLD {
            self.reap();
            return;
        }
        if TERMINAL_HOUSEKEEPING.contains(&signo) {
            return;
        }
        debug!("received {}", signals::name(signo));
        if let Some(main) = self.live_main_pid() {
            pid1::forward(signo, main, self.settings.forward_to == ForwardTo::Group);
        } else if is_stop_request(signo) {
            info!("received {}: stopping", signals::name(signo));
            self.feed(Event::Stop);
        }
    }

    fn live_main_pid(&self) -> Option<Pid> {
        self.pids.iter().find(|(_, node)| self.nodes[**node].main).map(|(pid, _)| Pid::from_raw(*pid))
    }

    /// Collects every ended child and hands its status to its owner.
    fn reap(&mut self) {
        for (pid, status) in reaper::reap().exited {
            let pid = pid.as_raw();
            if let Some(node) = self.pids.remove(&pid) {
                self.feed(Event::Exited { node, status });
            } else if let Some(node) = self.shutdown_commands.remove(&pid) {
                debug!("{}: shutdown command ended ({})", self.nodes[node].name, status);
            } else if !self.probe_exits.deliver(pid, status) {
                debug!("reaped orphan {pid} ({})", status);
            }
        }
    }

    /// Hands an event to the graph and executes its actions, and those of the events they
    /// cause, until nothing is left to do.
    fn feed(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for action in self.graph.handle(event, Instant::now()) {
                if let Some(follow_up) = self.execute(action) {
                    queue.push_back(follow_up);
                }
            }
        }
    }

    fn execute(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { node } => return Some(self.spawn(node)),
            Action::StartProbes { node } => self.start_probes(node),
            Action::StopProbes { node } => self.stop_probes(node),
            Action::Stop { node } => self.stop(node),
            Action::Kill { node } => self.signal_group(node, Signal::SIGKILL as i32),
            Action::ArmTimer { timer, after } => self.arm(timer, after),
            Action::CancelTimer { timer } => {
                if let Some(handle) = self.timers.remove(&timer) {
                    handle.abort();
                }
            }
            Action::Finished { code } => self.finished = Some(code),
            Action::Redefine { .. } | Action::Forget { .. } => {}
            Action::Note { node, level, message } => {
                let name = &self.nodes[node].name;
                match level {
                    NoteLevel::Info => info!("{name}: {message}"),
                    NoteLevel::Warn => warn!("{name}: {message}"),
                    NoteLevel::Error => error!("{name}: {message}"),
                }
            }
        }
        None
    }

    fn spawn(&mut self, node: NodeId) -> Event {
        let spec = &self.nodes[node];
        let launch = spawn::Spec {
            argv: &spec.argv,
            env: &spec.env,
            working_dir: spec.working_dir.as_deref(),
            credentials: spec.credentials.as_ref(),
            output: if spec.main { spawn::Output::Inherit } else { spawn::Output::Capture },
            main: spec.main,
            foreground: spec.main && self.settings.interactive,
        };
        match spawn::spawn(&launch) {
            Ok(spawned) => {
                let pid = spawned.pid.as_raw();
                self.pids.insert(pid, node);
                self.pumps.retain(|pump| !pump.is_finished());
                for (fd, stream) in [(spawned.stdout, Stream::Stdout), (spawned.stderr, Stream::Stderr)] {
                    if let Some(fd) = fd {
                        self.pumps.push(tokio::spawn(pump(fd, self.pump_target(node, stream))));
                    }
                }
                Event::Spawned { node, pid }
            }
            Err(failure) => {
                Event::SpawnFailed { node, code: failure.exit_code(), reason: failure.to_string() }
            }
        }
    }

    fn pump_target(&self, node: NodeId, stream: Stream) -> PumpTarget {
        let spec = &self.nodes[node];
        let ready = spec.ready_log_line.clone().map(|pattern| {
            let events = self.events.clone();
            let notify: Box<dyn FnOnce() + Send> = Box::new(move || {
                let _ = events.send(Event::LogReady { node });
            });
            ReadyLine { pattern, notify }
        });
        PumpTarget {
            name: spec.name.clone(),
            stream,
            output: self.output.clone(),
            recent: spec.recent.clone(),
            ready,
            live: self.live.clone(),
        }
    }

    fn start_probes(&mut self, node: NodeId) {
        self.stop_probes(node);
        let spec = &self.nodes[node];
        let context = ExecContext {
            env: spec.env.clone(),
            credentials: spec.credentials.clone(),
            exits: self.probe_exits.clone(),
        };
        let mut handles = Vec::new();
        for (plan, kind) in [(&spec.readiness, ProbeKind::Readiness), (&spec.liveness, ProbeKind::Liveness)] {
            if let Some(plan) = plan.clone() {
                let events = self.events.clone();
                let report = move |ok| {
                    let _ = events.send(Event::Probe { node, kind, ok });
                };
                handles.push(tokio::spawn(probe::run(plan, context.clone(), report)));
            }
        }
        self.probes.insert(node, handles);
    }

    fn stop_probes(&mut self, node: NodeId) {
        for handle in self.probes.remove(&node).unwrap_or_default() {
            handle.abort();
        }
    }

    /// The node's shutdown command, or its shutdown signal to its process group.
    fn stop(&mut self, node: NodeId) {
        let spec = &self.nodes[node];
        let Some(command) = spec.shutdown_command.clone() else {
            let signal = spec.shutdown_signal;
            self.signal_group(node, signal);
            return;
        };
        let launch = spawn::Spec {
            argv: &command,
            env: &spec.env,
            working_dir: spec.working_dir.as_deref(),
            credentials: spec.credentials.as_ref(),
            output: spawn::Output::Discard,
            main: false,
            foreground: false,
        };
        match spawn::spawn(&launch) {
            Ok(spawned) => {
                self.shutdown_commands.insert(spawned.pid.as_raw(), node);
            }
            Err(failure) => {
                warn!("{}: shutdown command failed ({failure}); sending SIGTERM instead", spec.name);
                self.signal_group(node, nix::libc::SIGTERM);
            }
        }
    }

    /// Signals the node's process group (services lead their own; so does the main process).
    fn signal_group(&self, node: NodeId, signo: i32) {
        for (pid, _) in self.pids.iter().filter(|(_, owner)| **owner == node) {
            pid1::forward(signo, Pid::from_raw(*pid), true);
        }
    }

    fn arm(&mut self, timer: TimerId, after: Duration) {
        let events = self.events.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(Event::Timer(timer));
        });
        if let Some(previous) = self.timers.insert(timer, handle) {
            previous.abort();
        }
    }

    fn cancel_tasks(&mut self) {
        for (_, handle) in self.timers.drain() {
            handle.abort();
        }
        for (_, handles) in self.probes.drain() {
            handles.into_iter().for_each(|h| h.abort());
        }
    }
}

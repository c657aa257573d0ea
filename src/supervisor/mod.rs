//! The event loop: runs the dependency graph's decisions on real processes.
//!
//! The graph ([`crate::graph`]) decides; this module executes: it spawns processes and pumps
//! their output, runs probes, arms timers, signals process groups, reaps (routing each exit
//! status to its owner by pid: a node, an exec probe, a shutdown command, or nobody for an
//! orphan), forwards signals to the main process, checks and passes on notifications
//! (`notify.rs`), reloads the configuration (`reload.rs`), and feeds every result back to the
//! graph as an event. When the graph has finished, the leftovers are drained and the exit code
//! returned.

mod answers;
pub mod nodes;
mod notices;
mod reload;

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
use crate::logs::{Batch, Output, PumpTarget, Pumps, ReadyLine, Stream};
use crate::notify::Datagram;
use crate::pid1::reaper;
use crate::pid1::signals::{self, Signals, TERMINAL_HOUSEKEEPING};
use crate::pid1::{self, is_stop_request};
use crate::probe::{self, ExecContext, ProbeExits};
use crate::runtime::Platform;
use crate::spawn;
pub use nodes::{MAIN_NAME, Node, Nodes};
pub use reload::{FixedSettings, ReloadSource};

/// Settings of the loop that are not per node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub forward_to: ForwardTo,
    /// SIGTERM-to-SIGKILL grace for processes left behind when the graph has finished.
    pub grace: Duration,
    /// stdin is a terminal: the main process gets its foreground.
    pub interactive: bool,
    /// The platform detected at startup, for `status`.
    pub platform: Option<Platform>,
}

/// Runs the graph to its end, answering control requests from `control` meanwhile, drains the
/// leftovers, and returns the exit code. `source` is what a reload reads again.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut signals: Signals,
    graph: Graph,
    nodes: Vec<Node>,
    output: Output,
    settings: Settings,
    control: mpsc::Receiver<Ask>,
    source: ReloadSource,
) -> i32 {
    let grace = settings.grace;
    let (events, inbox) = unbounded_channel();
    let (live, _) = broadcast::channel(LIVE_BATCHES);
    let (notices, notice_inbox) = mpsc::channel(crate::notify::QUEUE);
    let pumps = match Pumps::start(output, live.clone()) {
        Ok(pumps) => pumps,
        Err(failure) => {
            error!("cannot start reading the processes' output: {failure}");
            return exit_code::INTERNAL;
        }
    };
    let mut supervisor = Supervisor {
        graph,
        nodes: Nodes::from(nodes),
        redefinitions: HashMap::new(),
        source,
        notify_socket: None,
        notices,
        settings,
        pids: HashMap::new(),
        shutdown_commands: HashMap::new(),
        timers: HashMap::new(),
        probes: HashMap::new(),
        probe_exits: ProbeExits::default(),
        pumps,
        events,
        live,
        finished: None,
    };
    supervisor.open_notify_socket_if_needed();
    let code = supervisor.supervise(&mut signals, inbox, control, notice_inbox).await;
    supervisor.cancel_tasks();
    supervisor.close_notify_socket();
    let code = pid1::drain_leftovers(&mut signals, code, grace).await;
    // Every process is gone now, so every pipe has reached its end: let the pumps pass on
    // what is still buffered in them (a process may have written its last lines just before
    // it exited). Bounded, in case a pipe was handed to something outside the init's reach.
    supervisor.pumps.finish(tokio::time::Instant::now() + PUMP_DRAIN).await;
    code
}

/// Batches of output kept for `logs --follow` clients that are momentarily behind.
const LIVE_BATCHES: usize = 256;

/// How long output still in the pipes may take to reach stdout after everything has exited.
const PUMP_DRAIN: Duration = Duration::from_secs(2);

struct Supervisor {
    graph: Graph,
    /// How to run each node, by graph id.
    nodes: Nodes,
    /// New definitions a reload gave nodes whose old process is still stopping; each takes its
    /// node's place at the graph's `Redefine`.
    redefinitions: HashMap<NodeId, Node>,
    /// What a reload reads again.
    source: ReloadSource,
    /// The notify socket's path and its reader, once a notify node needs it.
    notify_socket: Option<(std::path::PathBuf, JoinHandle<()>)>,
    /// Where the notify socket's reader hands datagrams to the loop.
    notices: mpsc::Sender<Datagram>,
    settings: Settings,
    /// Live processes of nodes, by pid.
    pids: HashMap<i32, NodeId>,
    /// Running shutdown commands, by pid (their status only goes to the log).
    shutdown_commands: HashMap<i32, NodeId>,
    timers: HashMap<TimerId, JoinHandle<()>>,
    probes: HashMap<NodeId, Vec<JoinHandle<()>>>,
    probe_exits: ProbeExits,
    /// The reader of the processes' output pipes.
    pumps: Pumps,
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
        mut notices: mpsc::Receiver<Datagram>,
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
                Some(datagram) = notices.recv() => self.on_datagram(datagram),
            }
        }
    }

    /// Answers one control request, between two events.
    fn answer(&mut self, request: Request) -> Answer {
        let now = Instant::now();
        match request {
            Request::Status => Answer::One(Response::Status(answers::status(
                self.graph.status(),
                now,
                self.settings.platform.as_ref(),
            ))),
            Request::Health => Answer::One(Response::Health(answers::health(&self.graph.status()))),
            Request::Logs { name, lines, follow } => {
                let live = follow.then(|| self.live.subscribe());
                answers::logs(&self.current_nodes(), name.as_deref(), lines, live)
            }
            Request::Start { name } => self.command(&name, ControlCommand::Start, now),
            Request::Stop { name } => self.command(&name, ControlCommand::Stop, now),
            Request::Restart { name } => self.command(&name, ControlCommand::Restart, now),
            Request::Reload { dry_run } => Answer::One(self.reload(dry_run)),
        }
    }

    /// The nodes of the graph, in its order.
    fn current_nodes(&self) -> Vec<&Node> {
        self.graph.ids().iter().filter_map(|&id| self.nodes.get(id)).collect()
    }

    /// Executes actions decided outside [`Self::feed`] (a control command, a reload), then
    /// feeds the events they cause.
    fn execute_all(&mut self, actions: Vec<Action>) {
        let follow_ups: Vec<Event> = actions.into_iter().filter_map(|a| self.execute(a)).collect();
        for event in follow_ups {
            self.feed(event);
        }
    }

    /// An operator's start, stop or restart of one node.
    fn command(&mut self, name: &str, command: ControlCommand, now: Instant) -> Answer {
        let Some(node) = self.graph.node_by_name(name) else {
            return Answer::One(answers::unknown_node(&self.current_nodes(), name));
        };
        match self.graph.control(node, command, now) {
            Ok((message, actions)) => {
                info!("{name}: {message} (operator request)");
                self.execute_all(actions);
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
        } else if signo == nix::libc::SIGHUP {
            // Without a main process to forward it to, SIGHUP means what it means to daemons:
            // read the configuration again. The outcome goes to the log.
            info!("received SIGHUP: reloading the configuration");
            let _ = self.reload(false);
        }
    }

    fn live_main_pid(&self) -> Option<Pid> {
        let main = |node: &NodeId| self.nodes.get(*node).is_some_and(|node| node.main);
        self.pids.iter().find(|(_, node)| main(node)).map(|(pid, _)| Pid::from_raw(*pid))
    }

    /// Collects every ended child and hands its status to its owner.
    fn reap(&mut self) {
        for (pid, status) in reaper::reap().exited {
            let pid = pid.as_raw();
            if let Some(node) = self.pids.remove(&pid) {
                self.feed(Event::Exited { node, status });
            } else if let Some(node) = self.shutdown_commands.remove(&pid) {
                debug!("{}: shutdown command ended ({})", self.nodes.name(node), status);
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
            Action::Redefine { node } => {
                if let Some(definition) = self.redefinitions.remove(&node) {
                    self.nodes.set(node, definition);
                }
            }
            Action::Forget { node } => {
                self.stop_probes(node);
                self.redefinitions.remove(&node);
                self.nodes.remove(node);
            }
            Action::Note { node, level, message } => {
                let name = self.nodes.name(node);
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
        // The graph spawns only nodes it has, and the runtime has a definition for each of
        // them (a reload records them before the graph's actions run); should that ever fail,
        // the node fails rather than PID 1.
        let Some(spec) = self.nodes.get(node) else {
            return Event::SpawnFailed {
                node,
                code: exit_code::INTERNAL,
                reason: "no definition to run".into(),
            };
        };
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
                for (fd, stream) in [(spawned.stdout, Stream::Stdout), (spawned.stderr, Stream::Stderr)] {
                    if let (Some(fd), Some(target)) = (fd, self.pump_target(node, stream)) {
                        self.pumps.add(fd, target);
                    }
                }
                Event::Spawned { node, pid }
            }
            Err(failure) => {
                Event::SpawnFailed { node, code: failure.exit_code(), reason: failure.to_string() }
            }
        }
    }

    fn pump_target(&self, node: NodeId, stream: Stream) -> Option<PumpTarget> {
        let spec = self.nodes.get(node)?;
        let ready = spec.ready_log_line.as_deref().cloned().map(|pattern| {
            let events = self.events.clone();
            let notify: Box<dyn FnOnce() + Send> = Box::new(move || {
                let _ = events.send(Event::LogReady { node });
            });
            Box::new(ReadyLine { pattern, notify })
        });
        Some(PumpTarget { name: spec.name.clone(), stream, recent: spec.recent.clone(), ready })
    }

    fn start_probes(&mut self, node: NodeId) {
        self.stop_probes(node);
        let Some(spec) = self.nodes.get(node) else { return };
        let context = ExecContext {
            env: spec.env.clone(),
            credentials: spec.credentials.clone(),
            exits: self.probe_exits.clone(),
        };
        let mut handles = Vec::new();
        for (plan, kind) in [(&spec.readiness, ProbeKind::Readiness), (&spec.liveness, ProbeKind::Liveness)] {
            if let Some(plan) = plan.as_deref().cloned() {
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
        let Some(spec) = self.nodes.get(node) else { return };
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

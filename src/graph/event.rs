//! The graph's whole vocabulary with the runtime: what it is told ([`Event`]) and what it asks
//! for ([`Action`]). Keeping both as plain data is what lets the graph be tested without
//! processes, sockets or real time.

use std::time::Duration;

use super::spec::NodeId;
use crate::pid1::reaper::ExitStatus;

/// Which of a node's probes a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Decides whether the node is ready (and so whether `process_healthy` dependents start).
    Readiness,
    /// Decides whether the node is alive; failing it stops and (by policy) restarts the node.
    Liveness,
}

/// A timer the graph asks the runtime to arm. There is at most one of each per node: arming an
/// id that is already armed replaces its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The backoff before the node is spawned again.
    Restart(NodeId),
    /// The grace between asking the node to stop and SIGKILL (and, once killed, how long to wait
    /// for it to vanish before giving up on it during shutdown).
    Kill(NodeId),
    /// The node's watchdog: re-armed by each `WATCHDOG=1`; when it fires, the node is stopped.
    Watchdog(NodeId),
}

/// One assignment of a notification a node's process sent (systemd's notify protocol), already
/// checked to come from that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: the process is ready.
    Ready,
    /// `STATUS=...`: a line of text about its state, for people.
    Status(String),
    /// `WATCHDOG=1`: it is alive; the watchdog starts over.
    Watchdog,
    /// `STOPPING=1`: it is shutting down on its own; not ready any more.
    Stopping,
}

/// How loud a [`Action::Note`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteLevel {
    Info,
    Warn,
    Error,
}

/// Something that happened, told to [`super::Graph::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin: disabled nodes become `disabled`, every node whose dependencies are met is spawned.
    Start,
    /// The runtime answers every [`Action::Spawn`] with `Spawned` or `SpawnFailed`, synchronously
    /// (before it executes the next action).
    Spawned { node: NodeId, pid: i32 },
    /// The process could not be created: `code` is 127 (not found) or 126 (not executable). For
    /// the restart policy this is an exit with that code.
    SpawnFailed { node: NodeId, code: i32, reason: String },
    /// The node's process ended; `status.code()` is 128+N for signal N.
    Exited { node: NodeId, status: ExitStatus },
    /// One probe result; the graph counts consecutive results against the node's thresholds.
    Probe { node: NodeId, kind: ProbeKind, ok: bool },
    /// The node printed a line matching its `ready_log_line`.
    LogReady { node: NodeId },
    /// The node's process sent a notification (only nodes with `notify` are told these).
    Notify { node: NodeId, notice: Notice },
    /// A timer armed earlier fired. Timers that no longer mean anything are ignored.
    Timer(TimerId),
    /// An orderly shutdown request (SIGTERM/SIGINT). A second `Stop` while stopping kills every
    /// process that is left at once.
    Stop,
}

/// Something the runtime must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the node's process; answer with [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn { node: NodeId },
    /// Start the node's readiness and/or liveness probes (delays and periods are the runtime's).
    StartProbes { node: NodeId },
    /// Stop the node's probes; results that still arrive are ignored.
    StopProbes { node: NodeId },
    /// Run the node's shutdown command, or send its shutdown signal to its process group.
    Stop { node: NodeId },
    /// SIGKILL the node's process group.
    Kill { node: NodeId },
    /// Arm (or re-arm, replacing the deadline) a timer; it comes back as [`Event::Timer`].
    ArmTimer { timer: TimerId, after: Duration },
    /// Disarm a timer; if it fires anyway it is ignored.
    CancelTimer { timer: TimerId },
    /// Every node is at rest: stop whatever processes are left and exit the init with `code`.
    /// Comes exactly once; after it the graph ignores every event.
    Finished { code: i32 },
    /// A line for people, logged as `init | <name>: <message>`.
    Note { node: NodeId, level: NoteLevel, message: String },
    /// The node's old process is gone: from now on it runs with the definition a reload gave
    /// it (see [`super::Graph::reconfigure`]).
    Redefine { node: NodeId },
    /// A reload removed the node and its process is gone: it has left the graph, and what the
    /// runtime keeps for it can go.
    Forget { node: NodeId },
}

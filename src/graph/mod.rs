//! Services as a dependency graph: a state machine with no I/O.
//!
//! Events come in (a process spawned or ended, a probe result, a log-ready line, a timer, a stop
//! request); actions go out (spawn, stop, kill, start/stop probes, arm/cancel a timer, finish
//! with an exit code). The runtime executes the actions and feeds the results back, so start
//! order, conditions, skips, restarts with backoff, shutdown order and exit codes are decided
//! here and tested exactly, without processes or real time (every event carries `now`).
//!
//! Contract (DESIGN.md): states `pending, starting, running, ready, completed, failed, backoff,
//! stopping, stopped, skipped, disabled`; exit codes as in "Exit codes".

mod conditions;
mod control;
mod event;
mod exits;
mod machine;
mod notes;
#[cfg(test)]
mod random_tests;
mod reconfigure;
mod restart;
mod shutdown;
mod spec;
mod state;
#[cfg(test)]
mod testkit;

pub use control::ControlCommand;
pub use event::{Action, Event, NoteLevel, Notice, ProbeKind, TimerId};
pub use machine::Graph;
pub use reconfigure::{Change, NodeChange, Reconfigured};
pub use spec::{BACKOFF_CAP, BACKOFF_RESET_AFTER, NodeId, NodeSpec, Thresholds};
pub use state::{NodeState, NodeStatus};

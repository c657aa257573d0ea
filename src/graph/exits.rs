//! What a node's end leads to: a restart after a backoff, `completed` or `failed` for good, or
//! the init's shutdown.
//!
//! - Success means the code is one of the node's `success_exit_codes`, except after a failed
//!   liveness probe, when the end is a failure whatever the code.
//! - The policy (`restart.rs`): `no` ends for good; `always` restarts; `on_failure` restarts
//!   failures; `exit_on_failure` shuts the init down with the failure's code. `max_restarts`
//!   makes the end after the last allowed restart final. `exit_on_end` shuts down with 0 for a
//!   success, else the code. The main process is never restarted and its end shuts down with
//!   its `status.code()`.
//! - A restart is `backoff` plus a `Restart` timer of `backoff * 2^(k-1)` (capped), where `k`
//!   counts consecutive restarts and starts again from 1 when the process had stayed up
//!   [`BACKOFF_RESET_AFTER`] (measured from `Spawned` to the exit's `now`).
//! - During shutdown nothing restarts: a node that was asked to stop becomes `stopped`, one that
//!   ended on its own `completed` or `failed`.
//! - A node the operator stopped (`stop`) becomes `stopped`: no restart, whatever its policy,
//!   and no `exit_on_failure`/`exit_on_end` shutdown; the main process's end still ends the
//!   init with its code. One the operator restarts is spawned again at once (no backoff), and
//!   the restart counts in `restarts` (not against `max_restarts`).

use std::time::{Duration, Instant};

use super::event::{Action, NoteLevel, TimerId};
use super::machine::Graph;
use super::notes::{self, note};
use super::restart::{self, Cause, backoff_delay};
use super::spec::{BACKOFF_RESET_AFTER, NodeId};
use super::state::{NodeState, OperatorStop};
use crate::pid1::reaper::ExitStatus;

/// The reason shown for a node the operator stopped.
pub(super) const STOPPED_BY_OPERATOR: &str = "stopped by the operator";

impl Graph {
    /// The node's process ended. Ignored unless the node has a process.
    pub(super) fn on_exited(&mut self, id: NodeId, status: ExitStatus, now: Instant, out: &mut Vec<Action>) {
        if self.nodes.get(id).is_some_and(|node| node.pid.is_some()) {
            self.on_end(id, status, status.to_string(), now, out);
        }
    }

    /// The spawn failed: an end with `code` (127 or 126) for every decision.
    pub(super) fn on_spawn_failed(
        &mut self,
        id: NodeId,
        code: i32,
        reason: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.nodes.get(id).is_some_and(|node| node.awaiting_spawn()) {
            let what = format!("could not start: {reason} (exit code {code})");
            self.on_end(id, ExitStatus::Code(code), what, now, out);
        }
    }

    /// One end of the node's process (or of its spawn), described by `what` for the notes.
    fn on_end(&mut self, id: NodeId, status: ExitStatus, what: String, now: Instant, out: &mut Vec<Action>) {
        let shutting_down = self.shutdown.is_some();
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        if node.probes_running() {
            out.push(Action::StopProbes { node: id });
        }
        if node.watchdog_deadline.take().is_some() {
            out.push(Action::CancelTimer { timer: TimerId::Watchdog(id) });
        }
        let was_stopping = node.state == NodeState::Stopping;
        if was_stopping {
            out.push(Action::CancelTimer { timer: TimerId::Kill(id) });
        }
        let uptime = node.spawned_at.map(|at| now.saturating_duration_since(at));
        let code = status.code();
        node.pid = None;
        node.exit_code = Some(code);
        let forced = node.check_failed.filter(|_| !shutting_down);
        let success = forced.is_none() && node.spec.success_exit_codes.contains(&code);
        let what = match forced {
            Some(check) => format!("{what} {}", check.after()),
            None => what,
        };

        if shutting_down {
            if was_stopping {
                note(out, id, NoteLevel::Info, format!("stopped ({what})"));
                node.state = NodeState::Stopped;
            } else {
                note(out, id, if success { NoteLevel::Info } else { NoteLevel::Warn }, what.as_str());
                node.state = if success { NodeState::Completed } else { NodeState::Failed };
                node.reason = (!success).then_some(what);
            }
            return;
        }

        // A reload removed or redefined it: whether it was stopped for that or ended before its
        // turn, it is not restarted and shuts nothing down; `settle` carries out its fate.
        if node.fate.is_some() {
            let what = if was_stopping { format!("stopped ({what})") } else { what };
            note(out, id, NoteLevel::Info, what);
            node.state = NodeState::Stopped;
            return;
        }

        if let Some(request) = node.operator_stop.filter(|_| was_stopping) {
            note(out, id, NoteLevel::Info, format!("stopped ({what})"));
            match request {
                OperatorStop::Restart => {
                    node.restarts = node.restarts.saturating_add(1);
                    let message = format!("starting again (restart {})", node.restarts);
                    note(out, id, NoteLevel::Info, message);
                    self.spawn(id, out);
                }
                OperatorStop::Stay => {
                    node.state = NodeState::Stopped;
                    node.reason = Some(STOPPED_BY_OPERATOR.to_string());
                    if node.spec.main {
                        note(out, id, NoteLevel::Info, Cause::Main.message(code));
                        self.begin_shutdown(code, out);
                    }
                }
            }
            return;
        }

        let outcome = restart::decide(&node.spec, success, code, node.policy_restarts);
        // The main process ending is the container's normal end, whatever its code: not an
        // error of the init's.
        let level = match (success || node.spec.main, outcome.restart) {
            (true, _) => NoteLevel::Info,
            (false, true) => NoteLevel::Warn,
            (false, false) => NoteLevel::Error,
        };
        note(out, id, level, what.as_str());
        if outcome.restart {
            self.schedule_restart(id, uptime, what, out);
            return;
        }
        node.state = if success { NodeState::Completed } else { NodeState::Failed };
        node.reason = (!success).then(|| what.clone());
        if outcome.exhausted {
            let used = node.policy_restarts;
            note(out, id, NoteLevel::Error, format!("not restarting: all {used} restarts used"));
            node.reason = Some(format!("{what}; all {used} restarts used"));
        }
        if let Some((code, cause)) = outcome.shutdown {
            let level = if success || node.spec.main { NoteLevel::Info } else { NoteLevel::Error };
            note(out, id, level, cause.message(code));
            self.begin_shutdown(code, out);
        }
    }

    fn schedule_restart(
        &mut self,
        id: NodeId,
        uptime: Option<Duration>,
        what: String,
        out: &mut Vec<Action>,
    ) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        if uptime.is_some_and(|uptime| uptime >= BACKOFF_RESET_AFTER) {
            node.consecutive = 0;
        }
        node.consecutive = node.consecutive.saturating_add(1);
        node.restarts = node.restarts.saturating_add(1);
        node.policy_restarts = node.policy_restarts.saturating_add(1);
        let delay = backoff_delay(node.spec.backoff, node.consecutive);
        let count = match node.spec.max_restarts {
            Some(max) => format!("restart {} of {max}", node.policy_restarts),
            None => format!("restart {}", node.restarts),
        };
        note(out, id, NoteLevel::Info, format!("restarting in {} ({count})", notes::secs(delay)));
        node.state = NodeState::Backoff;
        node.reason = Some(what);
        out.push(Action::ArmTimer { timer: TimerId::Restart(id), after: delay });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::event::{Action, Event};
    use crate::graph::spec::RestartPolicy;
    use crate::graph::testkit::*;

    fn finished(code: i32) -> Action {
        Action::Finished { code }
    }

    fn always(name: &str) -> crate::graph::NodeSpec {
        spec_with(name, |s| s.restart = RestartPolicy::Always)
    }

    /// Runs the node for `up`, ends it with `code`, and returns the restart delay asked for.
    fn run_and_fail(h: &mut Harness, up: Duration, code: i32) -> Option<Duration> {
        h.spawned(0, 10);
        h.advance(up);
        let delay = h.exit(0, code).into_iter().find_map(|action| match action {
            Action::ArmTimer { timer: TimerId::Restart(0), after } => Some(after),
            _ => None,
        });
        if let Some(delay) = delay {
            h.advance(delay);
            assert_eq!(h.fire(TimerId::Restart(0)), vec![Action::Spawn { node: 0 }]);
        }
        delay
    }

    #[test]
    fn a_restart_is_a_backoff_then_a_spawn() {
        let mut h = Harness::started(vec![always("svc")]);
        h.spawned(0, 10);
        assert_eq!(
            h.exit(0, 1),
            vec![
                warn(0, "exited with code 1"),
                info(0, "restarting in 1s (restart 1)"),
                arm_restart(0, secs(1))
            ]
        );
        let status = h.status(0);
        assert_eq!((status.state, status.pid, status.restarts), (NodeState::Backoff, None, 1));
        assert_eq!((status.exit_code, status.reason.as_deref()), (Some(1), Some("exited with code 1")));
        assert_eq!(h.fire(TimerId::Restart(0)), vec![Action::Spawn { node: 0 }]);
        assert_eq!(h.state(0), NodeState::Starting);
        assert_eq!(h.fire(TimerId::Restart(0)), vec![], "a stale restart timer");
        assert_eq!(h.status(0).exit_code, Some(1), "the last code stays visible");
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets_after_a_long_run() {
        let mut h = Harness::started(vec![always("svc")]);
        let delays: Vec<u64> =
            (0..8).filter_map(|_| run_and_fail(&mut h, secs(1), 1)).map(|delay| delay.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(run_and_fail(&mut h, secs(59), 0), Some(secs(60)), "59s is not long enough");
        assert_eq!(run_and_fail(&mut h, BACKOFF_RESET_AFTER, 0), Some(secs(1)));
        assert_eq!(run_and_fail(&mut h, secs(1), 0), Some(secs(2)));
        assert_eq!(h.status(0).restarts, 11, "restarts are never reset");
    }

    #[test]
    fn max_restarts_exhausted_ends_the_node_for_good() {
        let svc = spec_with("svc", |s| {
            s.restart = RestartPolicy::Always;
            s.max_restarts = Some(2);
        });
        let mut h = Harness::started(vec![svc]);
        h.spawned(0, 10);
        assert_eq!(notes(&h.exit(0, 1))[1], (0, "restarting in 1s (restart 1 of 2)"));
        h.fire(TimerId::Restart(0));
        h.spawned(0, 11);
        assert_eq!(notes(&h.exit(0, 1))[1], (0, "restarting in 2s (restart 2 of 2)"));
        h.fire(TimerId::Restart(0));
        h.spawned(0, 12);
        assert_eq!(
            h.exit(0, 1),
            vec![
                error(0, "exited with code 1"),
                error(0, "not restarting: all 2 restarts used"),
                finished(1)
            ]
        );
        let status = h.status(0);
        assert_eq!((status.state, status.restarts), (NodeState::Failed, 2));
        assert_eq!(status.reason.as_deref(), Some("exited with code 1; all 2 restarts used"));
    }

    #[test]
    fn exhausted_restarts_after_a_success_complete() {
        let svc = spec_with("svc", |s| {
            s.restart = RestartPolicy::Always;
            s.max_restarts = Some(0);
        });
        let mut h = Harness::started(vec![svc]);
        h.spawned(0, 10);
        assert_eq!(quiet(h.exit(0, 0)), vec![finished(0)]);
        assert_eq!(h.state(0), NodeState::Completed);
    }

    #[test]
    fn on_failure_restarts_failures_and_completes_on_success_codes() {
        let svc = spec_with("svc", |s| {
            s.restart = RestartPolicy::OnFailure;
            s.success_exit_codes = vec![0, 3];
        });
        let mut h = Harness::started(vec![svc]);
        h.spawned(0, 10);
        assert_eq!(quiet(h.exit(0, 1)), vec![arm_restart(0, secs(1))]);
        h.fire(TimerId::Restart(0));
        h.spawned(0, 11);
        assert_eq!(h.exit(0, 3), vec![info(0, "exited with code 3"), finished(0)]);
        assert_eq!(h.state(0), NodeState::Completed);
    }

    #[test]
    fn a_failed_spawn_follows_the_restart_policy() {
        let svc = spec_with("svc", |s| s.restart = RestartPolicy::OnFailure);
        let mut h = Harness::started(vec![svc]);
        assert_eq!(
            h.ev(Event::SpawnFailed { node: 0, code: 126, reason: "permission denied".to_string() }),
            vec![
                warn(0, "could not start: permission denied (exit code 126)"),
                info(0, "restarting in 1s (restart 1)"),
                arm_restart(0, secs(1)),
            ]
        );
    }

    #[test]
    fn exit_on_failure_stops_everything_and_exits_with_the_code() {
        let svc = spec_with("svc", |s| s.restart = RestartPolicy::ExitOnFailure);
        let mut h = Harness::started(vec![svc, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            h.exit(0, 3),
            vec![
                error(0, "exited with code 3"),
                error(0, "failed with restart: exit_on_failure; stopping everything (exit code 3)"),
                info(1, "stopping"),
                Action::Stop { node: 1 },
                arm_kill(1, secs(10)),
            ]
        );
        assert_eq!(h.state(0), NodeState::Failed);
        assert_eq!(
            h.signalled(1, 15),
            vec![
                Action::CancelTimer { timer: TimerId::Kill(1) },
                info(1, "stopped (killed by SIGTERM)"),
                finished(3),
            ]
        );
        assert_eq!(h.state(1), NodeState::Stopped);
    }

    #[test]
    fn exit_on_failure_with_a_success_just_completes() {
        let svc = spec_with("svc", |s| s.restart = RestartPolicy::ExitOnFailure);
        let mut h = Harness::started(vec![svc, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0")]);
        assert_eq!(h.exit(1, 0), vec![info(1, "exited with code 0"), finished(0)]);
    }

    #[test]
    fn exit_on_end_exits_with_0_for_a_success_code() {
        let job = spec_with("job", |s| {
            s.exit_on_end = true;
            s.restart = RestartPolicy::Always;
            s.success_exit_codes = vec![0, 2];
        });
        let mut h = Harness::started(vec![job, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            quiet(h.exit(0, 2)),
            vec![Action::Stop { node: 1 }, arm_kill(1, secs(10))],
            "not restarted: its end ends everything"
        );
        assert_eq!(h.state(0), NodeState::Completed);
        assert_eq!(quiet(h.exit(1, 0)), vec![Action::CancelTimer { timer: TimerId::Kill(1) }, finished(0)]);
    }

    #[test]
    fn exit_on_end_exits_with_the_code_of_a_failure() {
        let job = spec_with("job", |s| s.exit_on_end = true);
        let mut h = Harness::started(vec![job]);
        h.spawned(0, 10);
        assert_eq!(
            h.exit(0, 5),
            vec![
                error(0, "exited with code 5"),
                error(0, "ended with exit_on_end; stopping everything (exit code 5)"),
                finished(5),
            ]
        );
    }

    #[test]
    fn the_main_process_ending_ends_everything_with_its_code() {
        let main = spec_with("main", |s| {
            s.main = true;
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![spec("svc"), main]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            h.exit(1, 42),
            vec![
                info(1, "exited with code 42"),
                info(1, "main process ended; stopping everything (exit code 42)"),
                info(0, "stopping"),
                Action::Stop { node: 0 },
                arm_kill(0, secs(10)),
            ]
        );
        assert_eq!(quiet(h.exit(0, 0)), vec![Action::CancelTimer { timer: TimerId::Kill(0) }, finished(42)]);
    }

    #[test]
    fn a_main_process_killed_by_a_signal_ends_with_128_plus_n() {
        let mut h = Harness::started(vec![spec_with("main", |s| s.main = true)]);
        h.spawned(0, 10);
        assert_eq!(h.signalled(0, 9).last(), Some(&finished(137)));
    }

    #[test]
    fn a_main_process_that_cannot_start_ends_with_127() {
        let mut h = Harness::started(vec![spec_with("main", |s| s.main = true)]);
        let actions = h.ev(Event::SpawnFailed { node: 0, code: 127, reason: "not found".to_string() });
        assert_eq!(actions.last(), Some(&finished(127)));
    }

    #[test]
    fn the_natural_end_is_0_when_everything_completed() {
        let mut h = Harness::started(vec![spec("a"), spec("b"), spec_with("c", |s| s.disabled = true)]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(quiet(h.exit(0, 0)), vec![]);
        assert_eq!(quiet(h.exit(1, 0)), vec![finished(0)]);
        assert!(h.graph.is_finished());
        assert_eq!(h.stop(), vec![], "nothing after Finished");
    }

    #[test]
    fn the_natural_end_is_1_when_anything_failed() {
        let mut h = Harness::started(vec![spec("a"), spec("b")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(quiet(h.exit(0, 1)), vec![]);
        assert_eq!(quiet(h.signalled(1, 15)), vec![finished(1)]);
    }

    #[test]
    fn a_graph_of_disabled_nodes_ends_at_once() {
        let mut h = Harness::new(vec![spec_with("a", |s| s.disabled = true)]);
        assert_eq!(h.start(), vec![info(0, "disabled"), finished(0)]);
    }

    #[test]
    fn an_empty_graph_idles_until_stopped() {
        let mut h = Harness::new(vec![]);
        assert_eq!(h.start(), vec![]);
        assert!(!h.graph.is_finished());
        assert_eq!(h.stop(), vec![finished(0)]);
        assert!(h.graph.is_finished());
    }
}

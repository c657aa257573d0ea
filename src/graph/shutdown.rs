//! Stopping everything, in reverse dependency order.
//!
//! - Triggers: `Stop` (exit code 0), the main process's end (its code), a node with
//!   `exit_on_failure` failing or one with `exit_on_end` ending. The first trigger decides the
//!   init's exit code; later ones change nothing.
//! - At once: restart timers are cancelled; `pending` and `backoff` nodes become `stopped`.
//! - A live node (`starting`, `running`, `ready`) is asked to stop (probes stopped, `Stop`, and a
//!   `Kill` timer of its `shutdown_timeout`) only once none of its dependents is live or
//!   stopping, so dependents stop first and independent nodes stop in parallel.
//! - The kill timer sends SIGKILL and waits [`AFTER_KILL`] more; a process still not gone then
//!   (stuck in the kernel) is given up on (`stopped`), so the init cannot hang on it.
//! - A second `Stop` kills every live or stopping node at once.
//! - `Finished` with the decided code goes out once nothing is live or stopping.

use super::event::{Action, NoteLevel, TimerId};
use super::machine::Graph;
use super::notes::{self, note};
use super::spec::NodeId;
use super::state::NodeState;
use crate::pid1::drain::AFTER_KILL;

impl Graph {
    /// A shutdown request. The first begins the shutdown (exit code 0 unless a trigger came
    /// first); the second kills everything left.
    pub(super) fn on_stop(&mut self, out: &mut Vec<Action>) {
        self.stop_requests = self.stop_requests.saturating_add(1);
        if self.shutdown.is_none() {
            self.begin_shutdown(0, out);
        } else if self.stop_requests > 1 {
            self.kill_all(out);
        }
    }

    /// Decides the exit code and takes every node that is not running out of the way; the
    /// running ones are stopped by [`Self::advance_shutdown`].
    pub(super) fn begin_shutdown(&mut self, code: i32, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(code);
        for (id, node) in self.nodes.iter_mut().enumerate() {
            match node.state {
                NodeState::Pending => node.state = NodeState::Stopped,
                NodeState::Backoff => {
                    out.push(Action::CancelTimer { timer: TimerId::Restart(id) });
                    node.state = NodeState::Stopped;
                }
                // Killed after a failed liveness probe: outside shutdown its last kill timer
                // was ignored; give it one more so the shutdown can give up on it.
                NodeState::Stopping if node.killed => {
                    out.push(Action::ArmTimer { timer: TimerId::Kill(id), after: AFTER_KILL });
                }
                _ => {}
            }
        }
    }

    /// Stops every live node none of whose dependents is still live or stopping.
    pub(super) fn advance_shutdown(&mut self, out: &mut Vec<Action>) {
        let due: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&id| self.nodes.get(id).is_some_and(|node| node.state.is_live()))
            .filter(|&id| !self.has_active_dependent(id))
            .collect();
        for id in due {
            self.stop_node(id, "stopping", out);
        }
    }

    fn has_active_dependent(&self, id: NodeId) -> bool {
        let Some(dependents) = self.dependents.get(id) else {
            return false;
        };
        dependents.iter().any(|&dep| self.nodes.get(dep).is_some_and(|node| node.state.is_active()))
    }

    /// Asks a live node to stop: `message` as a note, its probes stopped, `Stop` (unless the
    /// spawn is not answered yet: `Spawned` will stop it), and a `Kill` timer of its
    /// `shutdown_timeout`. Used by the shutdown and by the operator's `stop` and `restart`.
    pub(super) fn stop_node(&mut self, id: NodeId, message: &str, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        note(out, id, NoteLevel::Info, message);
        if node.probes_running() {
            out.push(Action::StopProbes { node: id });
        }
        if node.watchdog_deadline.take().is_some() {
            out.push(Action::CancelTimer { timer: TimerId::Watchdog(id) });
        }
        // A node whose spawn is not answered yet has nothing to signal: `Spawned` will stop it.
        if node.pid.is_some() {
            out.push(Action::Stop { node: id });
        }
        out.push(Action::ArmTimer { timer: TimerId::Kill(id), after: node.spec.shutdown_timeout });
        node.state = NodeState::Stopping;
        node.killed = false;
    }

    /// The node did not stop within its timeout: SIGKILL. If it was killed already and is still
    /// there during shutdown, give up on it; outside shutdown (a failed liveness probe, or the
    /// operator's `stop` or `restart`) keep waiting for its exit, since starting it again beside
    /// the old process would be worse.
    pub(super) fn on_kill_timer(&mut self, id: NodeId, out: &mut Vec<Action>) {
        let shutting_down = self.shutdown.is_some();
        let Some(node) = self.nodes.get_mut(id).filter(|node| node.state == NodeState::Stopping) else {
            return;
        };
        if !node.killed {
            let message = format!("did not stop within {}, killing", notes::secs(node.spec.shutdown_timeout));
            note(out, id, NoteLevel::Warn, message);
            node.killed = true;
            out.push(Action::Kill { node: id });
            out.push(Action::ArmTimer { timer: TimerId::Kill(id), after: AFTER_KILL });
        } else if shutting_down {
            let why = format!("still there {} after SIGKILL; giving up on it", notes::secs(AFTER_KILL));
            note(out, id, NoteLevel::Error, why.as_str());
            node.state = NodeState::Stopped;
            node.pid = None;
            node.reason = Some(why);
        }
    }

    /// Second `Stop`: SIGKILL to every node that is live or stopping, without waiting for order.
    fn kill_all(&mut self, out: &mut Vec<Action>) {
        for (id, node) in self.nodes.iter_mut().enumerate() {
            if !node.state.is_active() {
                continue;
            }
            note(out, id, NoteLevel::Warn, "killing (second stop request)");
            if node.probes_running() {
                out.push(Action::StopProbes { node: id });
            }
            node.state = NodeState::Stopping;
            node.killed = true;
            out.push(Action::Kill { node: id });
            out.push(Action::ArmTimer { timer: TimerId::Kill(id), after: AFTER_KILL });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::event::Event;
    use crate::graph::spec::Condition::ProcessStarted as Started;
    use crate::graph::spec::RestartPolicy;
    use crate::graph::testkit::*;

    fn stop(node: NodeId) -> Action {
        Action::Stop { node }
    }

    fn cancel_kill(node: NodeId) -> Action {
        Action::CancelTimer { timer: TimerId::Kill(node) }
    }

    fn finished(code: i32) -> Action {
        Action::Finished { code }
    }

    /// a <- b <- c, and d on its own; all running with pids 10..13.
    fn chain_and_one() -> Harness {
        let mut h = Harness::started(vec![
            spec("a"),
            after("b", &[(0, Started)]),
            after("c", &[(1, Started)]),
            spec("d"),
        ]);
        for (node, pid) in [(0, 10), (3, 13), (1, 11), (2, 12)] {
            h.spawned(node, pid);
        }
        h
    }

    #[test]
    fn dependents_stop_first_and_independent_nodes_in_parallel() {
        let mut h = chain_and_one();
        assert_eq!(
            h.stop(),
            vec![
                info(2, "stopping"),
                stop(2),
                arm_kill(2, secs(10)),
                info(3, "stopping"),
                stop(3),
                arm_kill(3, secs(10))
            ]
        );
        assert_eq!(
            (h.state(0), h.state(1), h.state(2)),
            (NodeState::Running, NodeState::Running, NodeState::Stopping)
        );
        assert_eq!(
            h.exit(2, 0),
            vec![
                cancel_kill(2),
                info(2, "stopped (exited with code 0)"),
                info(1, "stopping"),
                stop(1),
                arm_kill(1, secs(10))
            ]
        );
        assert_eq!(h.signalled(3, 15), vec![cancel_kill(3), info(3, "stopped (killed by SIGTERM)")]);
        assert_eq!(
            h.fire(TimerId::Kill(1)),
            vec![
                warn(1, "did not stop within 10s, killing"),
                Action::Kill { node: 1 },
                arm_kill(1, AFTER_KILL)
            ]
        );
        assert_eq!(
            h.signalled(1, 9),
            vec![
                cancel_kill(1),
                info(1, "stopped (killed by SIGKILL)"),
                info(0, "stopping"),
                stop(0),
                arm_kill(0, secs(10))
            ]
        );
        assert_eq!(h.exit(0, 0), vec![cancel_kill(0), info(0, "stopped (exited with code 0)"), finished(0)]);
        assert!(h.graph.status().iter().all(|node| node.state == NodeState::Stopped && node.pid.is_none()));
        assert_eq!(h.fire(TimerId::Kill(0)), vec![], "nothing after Finished");
    }

    #[test]
    fn a_second_stop_kills_everything_left_at_once() {
        let mut h = chain_and_one();
        h.stop();
        h.exit(3, 0);
        assert_eq!(
            h.stop(),
            vec![
                warn(0, "killing (second stop request)"),
                Action::Kill { node: 0 },
                arm_kill(0, AFTER_KILL),
                warn(1, "killing (second stop request)"),
                Action::Kill { node: 1 },
                arm_kill(1, AFTER_KILL),
                warn(2, "killing (second stop request)"),
                Action::Kill { node: 2 },
                arm_kill(2, AFTER_KILL),
            ]
        );
        assert_eq!(quiet(h.signalled(0, 9)), vec![cancel_kill(0)], "no Stop for a killed node");
        assert_eq!(quiet(h.signalled(2, 9)), vec![cancel_kill(2)]);
        assert_eq!(quiet(h.signalled(1, 9)), vec![cancel_kill(1), finished(0)]);
    }

    #[test]
    fn a_node_still_there_after_sigkill_is_given_up_on() {
        let mut h = Harness::started(vec![spec("stuck")]);
        h.spawned(0, 10);
        h.stop();
        h.fire(TimerId::Kill(0));
        assert_eq!(
            h.fire(TimerId::Kill(0)),
            vec![error(0, "still there 1s after SIGKILL; giving up on it"), finished(0)]
        );
        assert_eq!(h.graph.node_by_pid(10), None);
    }

    #[test]
    fn probes_stop_with_the_node() {
        let mut h = Harness::started(vec![spec_with("api", |s| s.readiness = thresholds(1, 1))]);
        h.spawned(0, 10);
        assert_eq!(
            h.stop(),
            vec![info(0, "stopping"), Action::StopProbes { node: 0 }, stop(0), arm_kill(0, secs(10))]
        );
        assert_eq!(h.ready_probe(0, true), vec![], "late probe results are ignored");
        assert_eq!(h.live_probe(0, false), vec![]);
    }

    #[test]
    fn pending_and_restarting_nodes_are_stopped_at_once() {
        let svc = spec_with("svc", |s| s.restart = RestartPolicy::Always);
        let waiting = after("waiting", &[(0, crate::graph::spec::Condition::ProcessCompleted)]);
        let mut h = Harness::started(vec![svc, waiting]);
        h.spawned(0, 10);
        h.exit(0, 1);
        assert_eq!(h.stop(), vec![Action::CancelTimer { timer: TimerId::Restart(0) }, finished(0)]);
        assert_eq!((h.state(0), h.state(1)), (NodeState::Stopped, NodeState::Stopped));
    }

    #[test]
    fn a_node_that_ends_on_its_own_during_shutdown_is_not_restarted() {
        let mut h = Harness::started(vec![
            spec_with("a", |s| s.restart = RestartPolicy::Always),
            after("b", &[(0, Started)]),
        ]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(quiet(h.stop()), vec![stop(1), arm_kill(1, secs(10))]);
        assert_eq!(h.exit(0, 1), vec![warn(0, "exited with code 1")]);
        assert_eq!(h.state(0), NodeState::Failed);
        assert_eq!(quiet(h.exit(1, 0)), vec![cancel_kill(1), finished(0)]);
    }

    #[test]
    fn stop_before_start_finishes_at_once_and_start_is_then_ignored() {
        let mut h = Harness::new(vec![spec("a")]);
        assert_eq!(h.stop(), vec![finished(0)]);
        assert_eq!(h.state(0), NodeState::Stopped);
        assert_eq!(h.start(), vec![]);
    }

    #[test]
    fn the_first_trigger_decides_the_exit_code() {
        let mut h = Harness::started(vec![spec_with("main", |s| s.main = true)]);
        h.spawned(0, 10);
        h.stop();
        assert_eq!(quiet(h.exit(0, 5)), vec![cancel_kill(0), finished(0)]);
        assert_eq!(h.state(0), NodeState::Stopped);
    }

    #[test]
    fn after_another_trigger_the_first_stop_waits_and_the_second_kills() {
        let main = spec_with("main", |s| s.main = true);
        let mut h = Harness::started(vec![spec("svc"), main]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.exit(1, 3);
        assert_eq!(h.stop(), vec![], "already stopping in order");
        assert_eq!(quiet(h.stop()), vec![Action::Kill { node: 0 }, arm_kill(0, AFTER_KILL)]);
        assert_eq!(quiet(h.signalled(0, 9)), vec![cancel_kill(0), finished(3)]);
    }

    #[test]
    fn a_node_stopping_for_liveness_when_shutdown_begins_ends_stopped() {
        let svc = spec_with("svc", |s| {
            s.liveness = thresholds(1, 1);
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![svc]);
        h.spawned(0, 10);
        h.live_probe(0, false);
        assert_eq!(h.stop(), vec![]);
        assert_eq!(quiet(h.exit(0, 143)), vec![cancel_kill(0), finished(0)]);
        assert_eq!(h.state(0), NodeState::Stopped);
    }

    #[test]
    fn a_stop_between_spawn_and_its_answer_stops_the_process_once_it_exists() {
        let mut h = Harness::started(vec![spec("a")]);
        assert_eq!(h.stop(), vec![info(0, "stopping"), arm_kill(0, secs(10))]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), stop(0)]);
        assert_eq!(quiet(h.signalled(0, 15)), vec![cancel_kill(0), finished(0)]);
    }

    #[test]
    fn a_second_stop_before_the_spawn_is_answered_kills_the_process_once_it_exists() {
        let mut h = Harness::started(vec![spec("a")]);
        h.stop();
        assert_eq!(quiet(h.stop()), vec![Action::Kill { node: 0 }, arm_kill(0, AFTER_KILL)]);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), Action::Kill { node: 0 }]);
    }

    #[test]
    fn a_node_left_after_sigkill_for_liveness_is_given_up_on_by_the_shutdown() {
        let mut h = Harness::started(vec![spec_with("svc", |s| s.liveness = thresholds(1, 1))]);
        h.spawned(0, 10);
        h.live_probe(0, false);
        h.fire(TimerId::Kill(0));
        assert_eq!(h.fire(TimerId::Kill(0)), vec![]);
        assert_eq!(h.stop(), vec![arm_kill(0, AFTER_KILL)]);
        assert_eq!(quiet(h.fire(TimerId::Kill(0))), vec![finished(0)]);
        assert_eq!(h.state(0), NodeState::Stopped);
    }

    #[test]
    fn a_spawn_failing_during_shutdown_ends_it() {
        let mut h = Harness::started(vec![spec("a")]);
        h.stop();
        let actions = h.ev(Event::SpawnFailed { node: 0, code: 127, reason: "not found".to_string() });
        assert_eq!(quiet(actions), vec![cancel_kill(0), finished(0)]);
    }
}

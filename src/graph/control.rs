//! The operator's control of single nodes: `nix2gpu-init start|stop|restart NAME`.
//!
//! A command is decided at once, between two events: [`Graph::control`] answers with what
//! happened, in words for the client, and the actions for the runtime, or with why it was
//! refused. What follows (the spawn's answer, the process's exit) comes back as events, as
//! always; what an operator's stop leads to at the exit is in `exits.rs`.

use std::time::Instant;

use super::event::{Action, NoteLevel, TimerId};
use super::exits::STOPPED_BY_OPERATOR;
use super::machine::Graph;
use super::notes::note;
use super::spec::NodeId;
use super::state::{NodeState, OperatorStop};

/// What the operator asks of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Start a node that is not running, now.
    Start,
    /// Stop a running node; it stays stopped.
    Stop,
    /// Stop a running node and start it again at once; start one that is not running.
    Restart,
}

impl Graph {
    /// Carries out the operator's `command` on `node`. `Ok` holds what happened, in words for
    /// the client, and the actions to execute, in order, exactly like those of
    /// [`Graph::handle`] (a `Spawn` is answered with `Spawned` or `SpawnFailed` through
    /// `handle`). `Err` says why the command was refused; nothing changed then. `now` is taken
    /// like every event's time; nothing a command decides depends on it.
    ///
    /// - **Refused** during shutdown and after `Finished` ("the init is shutting down"), before
    ///   `Start`, and for an id that is not in the graph.
    /// - **stop**: a live node (`starting`, `running`, `ready`) gets its probes stopped (if they
    ///   run), `Stop`, and a `Kill` timer of its `shutdown_timeout`, and becomes `stopping`; the
    ///   kill timer works as after a failed liveness probe (SIGKILL, then wait for the exit).
    ///   When it has exited it is `stopped` (reason "stopped by the operator") and stays so: it
    ///   is not restarted, whatever its policy, and its end triggers no `exit_on_failure` or
    ///   `exit_on_end` shutdown. The main process's end still ends the init with its code. A
    ///   `backoff` node's restart timer is cancelled and a `pending` node will not start on its
    ///   own: both become `stopped` at once. A node already stopping for another reason (a
    ///   failed liveness probe, the operator's `restart`) will stay stopped once it has exited.
    ///   Refused for a node the operator is stopping already ("already stopping") and for one
    ///   at rest (`completed`, `failed`, `skipped`, `disabled`, `stopped`: "not running").
    /// - **start**: a `pending`, `completed`, `failed`, `stopped`, `skipped` or `disabled` node,
    ///   or a `backoff` one (its restart timer is cancelled), is spawned now, without waiting
    ///   for its dependency conditions: the operator asked. It becomes `starting`, with fresh
    ///   probe counts and no reason, and from then on follows its restart policy as usual (an
    ///   operator's start gives it no new `max_restarts`). Refused for a live node ("already
    ///   running") and a stopping one ("use restart").
    /// - **restart**: a live node is stopped as by `stop`, but spawned again as soon as it has
    ///   exited, without backoff; that counts in `restarts` (not against `max_restarts`). A
    ///   node stopping for another reason is spawned again once it has exited (refused when the
    ///   operator is restarting it already). Any other node is started as by `start`. The main
    ///   process cannot be restarted while it runs or stops: its end ends the init.
    /// - **Dependents** are never touched: those of a stopped node keep running (pending ones
    ///   go on waiting for it), skipped dependents of a started node stay skipped.
    /// - A node the operator stopped keeps the init up, idle, even when every other node is at
    ///   rest: the natural end waits until it is started again and ends, or for a `Stop`.
    pub fn control(
        &mut self,
        node: NodeId,
        command: ControlCommand,
        _now: Instant,
    ) -> Result<(String, Vec<Action>), String> {
        if self.finished || self.shutdown.is_some() {
            return Err("the init is shutting down".to_string());
        }
        if !self.started {
            return Err("the init has not started its services yet".to_string());
        }
        if !self.is_present(node) {
            return Err(format!("there is no node #{node}"));
        }
        if let Some(fate) = self.nodes.get(node).and_then(|n| n.fate.as_ref()) {
            let name = self.name(node);
            return Err(format!("`{name}` is {} by a reload; try again once it has stopped", fate.doing()));
        }
        let mut out = Vec::new();
        let message = match command {
            ControlCommand::Start => self.operator_start(node, &mut out)?,
            ControlCommand::Stop => self.operator_stop(node, &mut out)?,
            ControlCommand::Restart => self.operator_restart(node, &mut out)?,
        };
        self.settle(&mut out);
        Ok((message, out))
    }

    fn operator_start(&mut self, id: NodeId, out: &mut Vec<Action>) -> Result<String, String> {
        let Some(node) = self.nodes.get_mut(id) else {
            return Err(format!("there is no node #{id}"));
        };
        let name = node.spec.name.clone();
        let (message, why) = match node.state {
            NodeState::Starting | NodeState::Running | NodeState::Ready => {
                return Err(match node.pid {
                    Some(pid) => format!("`{name}` is already running (pid {pid})"),
                    None => format!("`{name}` is already starting"),
                });
            }
            NodeState::Stopping if node.spec.main => {
                return Err(format!("`{name}` is stopping, and as the main process its end ends the init"));
            }
            NodeState::Stopping => return Err(format!("`{name}` is stopping; use restart")),
            NodeState::Backoff => (
                "its restart delay was cut short".to_string(),
                "starting (operator request; restart delay cut short)",
            ),
            NodeState::Pending => (
                "without waiting for its dependencies".to_string(),
                "starting (operator request; not waiting for its dependencies)",
            ),
            state @ (NodeState::Completed
            | NodeState::Failed
            | NodeState::Stopped
            | NodeState::Skipped
            | NodeState::Disabled) => (format!("it was {}", state.as_str()), "starting (operator request)"),
        };
        note(out, id, NoteLevel::Info, why);
        if node.state == NodeState::Backoff {
            out.push(Action::CancelTimer { timer: TimerId::Restart(id) });
        }
        node.reason = None;
        self.spawn(id, out);
        Ok(format!("starting `{name}` ({message})"))
    }

    fn operator_stop(&mut self, id: NodeId, out: &mut Vec<Action>) -> Result<String, String> {
        let Some(node) = self.nodes.get_mut(id) else {
            return Err(format!("there is no node #{id}"));
        };
        let name = node.spec.name.clone();
        match node.state {
            NodeState::Starting | NodeState::Running | NodeState::Ready => {
                let main =
                    if node.spec.main { "; it is the main process: its end ends the init" } else { "" };
                let message = format!("stopping `{name}`{}{main}", pid_in_words(node.pid));
                node.operator_stop = Some(OperatorStop::Stay);
                self.stop_node(id, "stopping (operator request)", out);
                Ok(message)
            }
            NodeState::Stopping if node.operator_stop == Some(OperatorStop::Stay) => {
                Err(format!("`{name}` is already stopping"))
            }
            NodeState::Stopping => {
                node.operator_stop = Some(OperatorStop::Stay);
                note(out, id, NoteLevel::Info, "will stay stopped (operator request)");
                Ok(format!("`{name}` is already stopping; it will stay stopped"))
            }
            NodeState::Backoff => {
                note(out, id, NoteLevel::Info, "stopped by the operator (restart cancelled)");
                out.push(Action::CancelTimer { timer: TimerId::Restart(id) });
                node.state = NodeState::Stopped;
                node.operator_stop = Some(OperatorStop::Stay);
                node.reason = Some(STOPPED_BY_OPERATOR.to_string());
                Ok(format!("stopped `{name}` (its restart was cancelled)"))
            }
            NodeState::Pending => {
                note(out, id, NoteLevel::Info, "stopped by the operator before it started");
                node.state = NodeState::Stopped;
                node.operator_stop = Some(OperatorStop::Stay);
                node.reason = Some(STOPPED_BY_OPERATOR.to_string());
                Ok(format!("stopped `{name}` (it had not started, and will not start on its own)"))
            }
            state @ (NodeState::Completed
            | NodeState::Failed
            | NodeState::Stopped
            | NodeState::Skipped
            | NodeState::Disabled) => Err(format!("`{name}` is not running ({})", state.as_str())),
        }
    }

    fn operator_restart(&mut self, id: NodeId, out: &mut Vec<Action>) -> Result<String, String> {
        let Some(node) = self.nodes.get_mut(id) else {
            return Err(format!("there is no node #{id}"));
        };
        let name = node.spec.name.clone();
        let has_process = node.state.is_live() || node.state == NodeState::Stopping;
        if node.spec.main && has_process {
            return Err(format!(
                "`{name}` is the main process: its end ends the init, so it cannot be restarted"
            ));
        }
        match node.state {
            NodeState::Starting | NodeState::Running | NodeState::Ready => {
                let message = match node.pid {
                    Some(pid) => format!("restarting `{name}` (stopping pid {pid})"),
                    None => format!("restarting `{name}`"),
                };
                node.operator_stop = Some(OperatorStop::Restart);
                self.stop_node(id, "restarting (operator request)", out);
                Ok(message)
            }
            NodeState::Stopping if node.operator_stop == Some(OperatorStop::Restart) => {
                Err(format!("`{name}` is already restarting"))
            }
            NodeState::Stopping => {
                node.operator_stop = Some(OperatorStop::Restart);
                note(out, id, NoteLevel::Info, "will start again once stopped (operator request)");
                Ok(format!("`{name}` is stopping; it will start again once it has stopped"))
            }
            _ => self.operator_start(id, out),
        }
    }
}

/// ` (pid 12)`, or nothing while the spawn is not answered yet.
fn pid_in_words(pid: Option<i32>) -> String {
    pid.map_or_else(String::new, |pid| format!(" (pid {pid})"))
}

#[cfg(test)]
mod tests {
    use super::ControlCommand::{Restart, Start, Stop};
    use super::*;
    use crate::graph::NodeSpec;
    use crate::graph::spec::Condition::{ProcessCompleted, ProcessStarted};
    use crate::graph::spec::RestartPolicy;
    use crate::graph::testkit::*;
    use crate::pid1::drain::AFTER_KILL;

    fn cancel_restart(node: NodeId) -> Action {
        Action::CancelTimer { timer: TimerId::Restart(node) }
    }

    fn always(name: &str) -> NodeSpec {
        spec_with(name, |s| s.restart = RestartPolicy::Always)
    }

    fn ok(message: &str, actions: Vec<Action>) -> (String, Vec<Action>) {
        (message.to_string(), actions)
    }

    /// Node 0 `web` running as pid 10 (restart: always, with a liveness probe), and node 1
    /// `other` running as pid 11, which keeps the graph from ending on its own.
    fn web_and_other() -> Harness {
        let web = spec_with("web", |s| {
            s.restart = RestartPolicy::Always;
            s.liveness = thresholds(1, 1);
        });
        let mut h = Harness::started(vec![web, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h
    }

    #[test]
    fn stop_of_a_restart_always_node_keeps_it_stopped_and_the_init_up() {
        let mut h = Harness::started(vec![spec_with("web", |s| {
            s.restart = RestartPolicy::Always;
            s.liveness = thresholds(1, 1);
        })]);
        h.spawned(0, 10);
        assert_eq!(
            h.accept(0, Stop),
            ok(
                "stopping `web` (pid 10)",
                vec![
                    info(0, "stopping (operator request)"),
                    Action::StopProbes { node: 0 },
                    stop(0),
                    arm_kill(0, secs(10)),
                ]
            )
        );
        assert_eq!(h.state(0), NodeState::Stopping);
        assert_eq!(h.live_probe(0, false), vec![], "its probes are stopped");
        assert_eq!(h.signalled(0, 15), vec![cancel_kill(0), info(0, "stopped (killed by SIGTERM)")]);
        let status = h.status(0);
        assert_eq!((status.state, status.pid, status.since), (NodeState::Stopped, None, None));
        assert_eq!((status.exit_code, status.restarts), (Some(143), 0));
        assert_eq!(status.reason.as_deref(), Some("stopped by the operator"));
        assert!(!h.graph.is_finished(), "a node the operator stopped keeps the init up");
        assert_eq!(h.fire(TimerId::Restart(0)), vec![]);
        assert_eq!(
            h.accept(0, Start),
            ok("starting `web` (it was stopped)", vec![info(0, "starting (operator request)"), spawn(0)])
        );
        assert_eq!(h.status(0).reason, None);
        assert_eq!(h.spawned(0, 12), vec![info(0, "started (pid 12)"), Action::StartProbes { node: 0 }]);
        assert_eq!(quiet(h.stop()), vec![Action::StopProbes { node: 0 }, stop(0), arm_kill(0, secs(10))]);
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Finished { code: 0 }]);
    }

    #[test]
    fn the_natural_end_waits_for_a_node_the_operator_stopped() {
        let mut h = Harness::started(vec![spec("a"), spec("b")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.accept(0, Stop);
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0)]);
        assert_eq!(h.exit(1, 0), vec![info(1, "exited with code 0")], "`a` is stopped, not at rest");
        assert!(!h.graph.is_finished());
        h.accept(0, Start);
        h.spawned(0, 12);
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0"), Action::Finished { code: 0 }]);
    }

    #[test]
    fn an_operator_stop_triggers_no_exit_on_end_or_exit_on_failure() {
        let job = spec_with("job", |s| s.exit_on_end = true);
        let strict = spec_with("strict", |s| s.restart = RestartPolicy::ExitOnFailure);
        let mut h = Harness::started(vec![job, strict, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.spawned(2, 12);
        h.accept(0, Stop);
        assert_eq!(h.exit(0, 3), vec![cancel_kill(0), info(0, "stopped (exited with code 3)")]);
        h.accept(1, Stop);
        assert_eq!(h.signalled(1, 15), vec![cancel_kill(1), info(1, "stopped (killed by SIGTERM)")]);
        assert_eq!(
            (h.state(0), h.state(1), h.state(2)),
            (NodeState::Stopped, NodeState::Stopped, NodeState::Running)
        );
        assert!(!h.graph.is_finished());
    }

    #[test]
    fn stopping_the_main_process_ends_the_init_with_its_code() {
        let main = spec_with("main", |s| s.main = true);
        let mut h = Harness::started(vec![spec("svc"), main]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(
            h.refuse(1, Restart),
            "`main` is the main process: its end ends the init, so it cannot be restarted"
        );
        assert_eq!(
            h.accept(1, Stop).0,
            "stopping `main` (pid 11); it is the main process: its end ends the init"
        );
        assert_eq!(
            h.refuse(1, Restart),
            "`main` is the main process: its end ends the init, so it cannot be restarted"
        );
        assert_eq!(h.refuse(1, Start), "`main` is stopping, and as the main process its end ends the init");
        assert_eq!(
            h.signalled(1, 15),
            vec![
                cancel_kill(1),
                info(1, "stopped (killed by SIGTERM)"),
                info(1, "main process ended; stopping everything (exit code 143)"),
                info(0, "stopping"),
                stop(0),
                arm_kill(0, secs(10)),
            ]
        );
        assert_eq!(h.state(1), NodeState::Stopped);
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Finished { code: 143 }]);
    }

    #[test]
    fn restart_of_a_live_node_spawns_it_again_at_once_and_counts_a_restart() {
        let web = spec_with("web", |s| {
            s.restart = RestartPolicy::Always;
            s.max_restarts = Some(1);
        });
        let mut h = Harness::started(vec![web]);
        h.spawned(0, 10);
        assert_eq!(
            h.accept(0, Restart),
            ok(
                "restarting `web` (stopping pid 10)",
                vec![info(0, "restarting (operator request)"), stop(0), arm_kill(0, secs(10))]
            )
        );
        assert_eq!(h.state(0), NodeState::Stopping);
        assert_eq!(h.refuse(0, Restart), "`web` is already restarting");
        assert_eq!(
            h.signalled(0, 15),
            vec![
                cancel_kill(0),
                info(0, "stopped (killed by SIGTERM)"),
                info(0, "starting again (restart 1)"),
                spawn(0),
            ]
        );
        let status = h.status(0);
        assert_eq!((status.state, status.restarts, status.exit_code), (NodeState::Starting, 1, Some(143)));
        assert_eq!(h.spawned(0, 11), vec![info(0, "started (pid 11)")]);
        assert_eq!(
            h.exit(0, 1),
            vec![
                warn(0, "exited with code 1"),
                info(0, "restarting in 1s (restart 1 of 1)"),
                arm_restart(0, secs(1))
            ],
            "the operator's restart does not use up max_restarts"
        );
        assert_eq!(h.status(0).restarts, 2);
    }

    #[test]
    fn restart_of_a_node_that_is_not_running_starts_it() {
        let mut h = Harness::started(vec![spec("job"), always("svc"), spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.spawned(2, 12);
        h.exit(0, 0);
        assert_eq!(
            h.accept(0, Restart),
            ok("starting `job` (it was completed)", vec![info(0, "starting (operator request)"), spawn(0)])
        );
        h.exit(1, 1);
        assert_eq!(
            h.accept(1, Restart),
            ok(
                "starting `svc` (its restart delay was cut short)",
                vec![
                    info(1, "starting (operator request; restart delay cut short)"),
                    cancel_restart(1),
                    spawn(1)
                ]
            )
        );
        assert_eq!(h.status(1).restarts, 1, "only the policy's restart so far");
    }

    #[test]
    fn start_during_backoff_spawns_now() {
        let mut h = Harness::started(vec![always("svc")]);
        h.spawned(0, 10);
        h.exit(0, 1);
        assert_eq!(h.state(0), NodeState::Backoff);
        assert_eq!(
            h.accept(0, Start),
            ok(
                "starting `svc` (its restart delay was cut short)",
                vec![
                    info(0, "starting (operator request; restart delay cut short)"),
                    cancel_restart(0),
                    spawn(0)
                ]
            )
        );
        let status = h.status(0);
        assert_eq!((status.state, status.reason, status.restarts), (NodeState::Starting, None, 1));
        assert_eq!(h.fire(TimerId::Restart(0)), vec![], "the cancelled timer, if it fires anyway");
        assert_eq!(h.spawned(0, 11), vec![info(0, "started (pid 11)")]);
    }

    #[test]
    fn stop_during_backoff_cancels_the_restart() {
        let mut h = Harness::started(vec![always("svc")]);
        h.spawned(0, 10);
        h.exit(0, 1);
        assert_eq!(
            h.accept(0, Stop),
            ok(
                "stopped `svc` (its restart was cancelled)",
                vec![info(0, "stopped by the operator (restart cancelled)"), cancel_restart(0)]
            )
        );
        let status = h.status(0);
        assert_eq!((status.state, status.exit_code), (NodeState::Stopped, Some(1)));
        assert_eq!(status.reason.as_deref(), Some("stopped by the operator"));
        assert_eq!(h.fire(TimerId::Restart(0)), vec![]);
        assert!(!h.graph.is_finished());
        assert_eq!(h.stop(), vec![Action::Finished { code: 0 }]);
    }

    #[test]
    fn stop_of_a_pending_node_keeps_it_from_starting_and_its_dependents_waiting() {
        let mut h = Harness::started(vec![
            spec("db"),
            after("app", &[(0, ProcessCompleted)]),
            after("web", &[(1, ProcessStarted)]),
        ]);
        h.spawned(0, 10);
        assert_eq!(
            h.accept(1, Stop),
            ok(
                "stopped `app` (it had not started, and will not start on its own)",
                vec![info(1, "stopped by the operator before it started")]
            )
        );
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0")], "app is not started");
        assert_eq!((h.state(1), h.state(2)), (NodeState::Stopped, NodeState::Pending));
        assert!(!h.graph.is_finished());
        assert_eq!(h.accept(1, Start).1, vec![info(1, "starting (operator request)"), spawn(1)]);
        assert_eq!(h.spawned(1, 11), vec![info(1, "started (pid 11)"), spawn(2)]);
    }

    #[test]
    fn start_of_a_pending_node_does_not_wait_for_its_dependencies() {
        let mut h = Harness::started(vec![spec("db"), after("app", &[(0, ProcessCompleted)])]);
        h.spawned(0, 10);
        assert_eq!(
            h.accept(1, Start),
            ok(
                "starting `app` (without waiting for its dependencies)",
                vec![info(1, "starting (operator request; not waiting for its dependencies)"), spawn(1)]
            )
        );
        assert_eq!(h.spawned(1, 11), vec![info(1, "started (pid 11)")]);
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0")], "nothing left to start");
    }

    #[test]
    fn start_of_skipped_and_disabled_nodes_leaves_their_dependents_alone() {
        let db = spec_with("db", |s| s.disabled = true);
        let mut h = Harness::new(vec![db, after("app", &[(0, ProcessStarted)]), spec("other")]);
        h.start();
        assert_eq!((h.state(0), h.state(1)), (NodeState::Disabled, NodeState::Skipped));
        assert_eq!(
            h.accept(0, Start),
            ok("starting `db` (it was disabled)", vec![info(0, "starting (operator request)"), spawn(0)])
        );
        assert_eq!(h.status(0).reason, None);
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)")]);
        assert_eq!(h.state(1), NodeState::Skipped, "its dependent stays skipped");
        assert_eq!(
            h.accept(1, Start),
            ok("starting `app` (it was skipped)", vec![info(1, "starting (operator request)"), spawn(1)])
        );
        assert_eq!(h.status(1).reason, None);
        assert_eq!(h.spawned(1, 11), vec![info(1, "started (pid 11)")]);
        assert_eq!(h.state(1), NodeState::Running);
    }

    #[test]
    fn start_of_a_failed_node_follows_its_policy_afterwards() {
        let svc = spec_with("svc", |s| {
            s.restart = RestartPolicy::OnFailure;
            s.max_restarts = Some(1);
        });
        let mut h = Harness::started(vec![svc, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.exit(0, 1);
        h.fire(TimerId::Restart(0));
        h.spawned(0, 12);
        h.exit(0, 1);
        assert_eq!(h.state(0), NodeState::Failed);
        assert_eq!(h.accept(0, Start).0, "starting `svc` (it was failed)");
        h.spawned(0, 13);
        assert_eq!(quiet(h.exit(0, 1)), vec![], "no new restart budget: it fails for good again");
        assert_eq!(h.state(0), NodeState::Failed);
    }

    #[test]
    fn each_command_refused_where_it_makes_no_sense() {
        let mut h = web_and_other();
        assert_eq!(h.refuse(0, Start), "`web` is already running (pid 10)");
        h.accept(0, Stop);
        assert_eq!(h.refuse(0, Stop), "`web` is already stopping");
        assert_eq!(h.refuse(0, Start), "`web` is stopping; use restart");
        h.signalled(0, 15);
        assert_eq!(h.refuse(0, Stop), "`web` is not running (stopped)");
        assert_eq!(h.refuse(9, Start), "there is no node #9");
        h.exit(1, 1);
        assert_eq!(h.refuse(1, Stop), "`other` is not running (failed)");
    }

    #[test]
    fn stop_is_refused_for_every_node_at_rest() {
        let disabled = spec_with("d", |s| s.disabled = true);
        let mut h = Harness::started(vec![
            spec("c"),
            spec("f"),
            disabled,
            after("s", &[(2, ProcessStarted)]),
            spec("up"),
        ]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.spawned(4, 14);
        h.exit(0, 0);
        h.exit(1, 1);
        assert_eq!(h.refuse(0, Stop), "`c` is not running (completed)");
        assert_eq!(h.refuse(1, Stop), "`f` is not running (failed)");
        assert_eq!(h.refuse(2, Stop), "`d` is not running (disabled)");
        assert_eq!(h.refuse(3, Stop), "`s` is not running (skipped)");
    }

    #[test]
    fn a_start_not_answered_yet_is_stopped_once_it_exists() {
        let mut h = Harness::started(vec![spec("a")]);
        assert_eq!(h.refuse(0, Start), "`a` is already starting");
        assert_eq!(
            h.accept(0, Stop),
            ok("stopping `a`", vec![info(0, "stopping (operator request)"), arm_kill(0, secs(10))])
        );
        assert_eq!(h.spawned(0, 10), vec![info(0, "started (pid 10)"), stop(0)]);
        assert_eq!(quiet(h.signalled(0, 15)), vec![cancel_kill(0)]);
        assert_eq!(h.state(0), NodeState::Stopped);
    }

    #[test]
    fn a_node_stopping_for_liveness_can_be_kept_stopped_or_restarted_at_once() {
        let mut h = web_and_other();
        h.live_probe(0, false);
        assert_eq!(h.state(0), NodeState::Stopping);
        assert_eq!(
            h.accept(0, Restart),
            ok(
                "`web` is stopping; it will start again once it has stopped",
                vec![info(0, "will start again once stopped (operator request)")]
            )
        );
        assert_eq!(
            h.accept(0, Stop),
            ok(
                "`web` is already stopping; it will stay stopped",
                vec![info(0, "will stay stopped (operator request)")]
            )
        );
        assert_eq!(
            h.exit(0, 0),
            vec![cancel_kill(0), info(0, "stopped (exited with code 0 after failing its liveness probe)")]
        );
        assert_eq!(h.state(0), NodeState::Stopped, "not restarted by its policy");

        h.accept(0, Start);
        h.spawned(0, 12);
        h.live_probe(0, false);
        h.accept(0, Restart);
        assert_eq!(
            quiet(h.exit(0, 0)),
            vec![cancel_kill(0), spawn(0)],
            "spawned again at once, without backoff"
        );
        assert_eq!(h.status(0).restarts, 1);
    }

    #[test]
    fn restart_after_an_operator_stop_turns_it_into_a_restart() {
        let mut h = web_and_other();
        h.accept(1, Stop);
        assert_eq!(h.accept(1, Restart).0, "`other` is stopping; it will start again once it has stopped");
        assert_eq!(quiet(h.exit(1, 0)), vec![cancel_kill(1), spawn(1)]);
    }

    #[test]
    fn the_kill_timer_of_an_operator_stop_kills_and_then_waits() {
        let mut h = web_and_other();
        h.accept(1, Stop);
        assert_eq!(
            h.fire(TimerId::Kill(1)),
            vec![
                warn(1, "did not stop within 10s, killing"),
                Action::Kill { node: 1 },
                arm_kill(1, AFTER_KILL)
            ]
        );
        assert_eq!(h.fire(TimerId::Kill(1)), vec![], "outside shutdown it waits for the exit");
        assert_eq!(quiet(h.signalled(1, 9)), vec![cancel_kill(1)]);
        assert_eq!(h.state(1), NodeState::Stopped);
    }

    #[test]
    fn commands_are_refused_during_shutdown_before_start_and_after_the_end() {
        let mut h = Harness::new(vec![spec("a"), spec("b")]);
        for command in [Start, Stop, Restart] {
            assert_eq!(h.refuse(0, command), "the init has not started its services yet");
        }
        h.start();
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.accept(1, Stop);
        h.stop();
        for node in [0, 1, 9] {
            for command in [Start, Stop, Restart] {
                assert_eq!(h.refuse(node, command), "the init is shutting down");
            }
        }
        assert_eq!(
            h.signalled(1, 15),
            vec![cancel_kill(1), info(1, "stopped (killed by SIGTERM)")],
            "the shutdown waited for the node the operator was stopping"
        );
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Finished { code: 0 }]);
        assert_eq!(h.refuse(0, Start), "the init is shutting down");
    }

    #[test]
    fn a_shutdown_with_operator_stopped_nodes_finishes_at_once() {
        let mut h = web_and_other();
        h.accept(0, Stop);
        h.signalled(0, 15);
        h.accept(1, Stop);
        h.signalled(1, 15);
        assert_eq!(h.stop(), vec![Action::Finished { code: 0 }]);
    }

    #[test]
    fn since_is_the_spawn_time_of_the_current_process() {
        let mut h = Harness::started(vec![always("svc")]);
        assert_eq!(h.status(0).since, None, "not spawned yet");
        let first = h.now;
        h.spawned(0, 10);
        h.advance(secs(5));
        assert_eq!(h.status(0).since, Some(first));
        h.accept(0, Restart);
        assert_eq!(h.status(0).since, Some(first), "still running while it stops");
        h.exit(0, 0);
        assert_eq!(h.status(0).since, None);
        h.advance(secs(1));
        h.spawned(0, 11);
        assert_eq!(h.status(0).since, Some(first + secs(6)));
    }
}

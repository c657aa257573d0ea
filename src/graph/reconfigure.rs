//! Live reconfiguration: a reload hands the graph the specs of a new configuration, and the
//! graph works out and carries out the difference while everything runs.
//!
//! Nodes are matched by name. Node ids are stable for the life of the graph, so nothing the
//! runtime holds (timers, probes, output pumps, pids) has to be renumbered:
//! - a **new** name gets a new id (after every id so far) and starts like any pending node,
//!   once its conditions are met;
//! - an **unchanged** node (the same spec, dependencies compared by name, and a launch the
//!   runtime says is the same) keeps its id, its state and its process;
//! - a **changed** node keeps its id; its process is stopped with its old shutdown settings,
//!   and once it is gone the node starts afresh with the new spec ([`Action::Redefine`] tells
//!   the runtime to switch to the new definition), as on a first start: counters reset, its
//!   conditions waited for, and its dependents' conditions on it met anew;
//! - a **removed** node is stopped, and once its process is gone it leaves the graph
//!   ([`Action::Forget`]).
//!
//! Changed and removed nodes stop in reverse dependency order among themselves (a node waits
//! for those of its dependents that are also going), independent ones in parallel; a node that
//! is not running is redefined or removed at once. Dependents that keep running are not
//! touched. A node `skipped` because of a dependency that is now new or redefined becomes
//! `pending` again, and is started or skipped as its conditions now say. The main process is
//! never restarted by a reload.

use std::collections::BTreeSet;
use std::time::Instant;

use super::event::{Action, NoteLevel, TimerId};
use super::machine::{Graph, disable_if_configured};
use super::notes::note;
use super::spec::{NodeId, NodeSpec};
use super::state::{Fate, Node, NodeState};

/// What a reload does to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new node: started when its conditions are met.
    Start,
    /// Removed from the configuration: stopped, then gone.
    Stop,
    /// Its definition changed: stopped, then started afresh.
    Restart,
    /// The same definition: left as it is.
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Unchanged => "unchanged",
        }
    }
}

/// One line of a reload's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    pub name: String,
    pub change: Change,
}

/// What [`Graph::reconfigure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    /// Per node: the new specs' nodes in their order, then the removed ones.
    pub changes: Vec<NodeChange>,
    /// The id of each given spec in the graph, index for index.
    pub ids: Vec<NodeId>,
    /// For the runtime, in order, as those of [`Graph::handle`].
    pub actions: Vec<Action>,
}

/// The difference between the graph and a new set of specs.
struct Diff {
    /// The id of each new spec: its node's when the name is in the graph, else a new one.
    ids: Vec<NodeId>,
    /// The new specs with their dependencies as graph ids.
    specs: Vec<NodeSpec>,
    /// What happens to each new spec's node, index for index.
    verdicts: Vec<Change>,
    /// Nodes of the graph whose names are not among the new specs.
    removed: Vec<NodeId>,
    /// The main process when the new specs leave it out: it stays.
    unlisted_main: Vec<NodeId>,
}

impl Graph {
    /// What [`Graph::reconfigure`] would do with the same arguments, without doing it: the dry
    /// run of a reload. Refused when `reconfigure` would be.
    pub fn plan_reconfigure(
        &self,
        specs: &[NodeSpec],
        launch_changed: &BTreeSet<String>,
    ) -> Result<Vec<NodeChange>, String> {
        self.may_reconfigure()?;
        Ok(self.changes(&self.diff(specs.to_vec(), launch_changed)))
    }

    /// Replaces the graph's configuration with `specs` (a validated plan: dependencies are
    /// indices into `specs`) while it runs; see the module documentation for what happens to
    /// each node. `launch_changed` names the nodes whose definition changed in what the graph
    /// does not see (command, environment, user, probes' checks: the runtime compares those).
    ///
    /// Refused (with nothing changed) before `Start` and during shutdown. The actions are
    /// executed like those of [`Graph::handle`]; before them the runtime records the new
    /// definition of each `Start` node under its id and of each `Restart` node for its
    /// [`Action::Redefine`].
    pub fn reconfigure(
        &mut self,
        specs: Vec<NodeSpec>,
        launch_changed: &BTreeSet<String>,
        _now: Instant,
    ) -> Result<Reconfigured, String> {
        self.may_reconfigure()?;
        let diff = self.diff(specs, launch_changed);
        let changes = self.changes(&diff);
        let mut out = Vec::new();
        let mut fresh = BTreeSet::new();
        for ((&id, spec), &verdict) in diff.ids.iter().zip(diff.specs.iter().cloned()).zip(&diff.verdicts) {
            match verdict {
                Change::Start => {
                    let mut node = Node::new(spec);
                    disable_if_configured(id, &mut node, &mut out);
                    self.nodes.push(node);
                    fresh.insert(id);
                }
                // The same spec but for dependency ids (and the main process's grace); a node
                // already on its way to a new definition keeps that.
                Change::Unchanged => {
                    if let Some(node) = self.nodes.get_mut(id).filter(|node| node.fate.is_none()) {
                        node.spec = spec;
                    }
                }
                Change::Restart => {
                    self.redefine_later(id, spec, &mut out);
                    fresh.insert(id);
                }
                Change::Stop => {}
            }
        }
        for &id in &diff.removed {
            if let Some(node) = self.nodes.get_mut(id) {
                node.fate = Some(Fate::Remove);
            }
        }
        self.order = diff.ids.iter().chain(&diff.removed).chain(&diff.unlisted_main).copied().collect();
        self.find_dependents();
        self.retry_skipped(fresh, &mut out);
        self.settle(&mut out);
        Ok(Reconfigured { changes, ids: diff.ids, actions: out })
    }

    fn may_reconfigure(&self) -> Result<(), String> {
        if self.finished || self.shutdown.is_some() {
            return Err("the init is shutting down".to_string());
        }
        if !self.started {
            return Err("the init has not started its services yet".to_string());
        }
        Ok(())
    }

    fn diff(&self, specs: Vec<NodeSpec>, launch_changed: &BTreeSet<String>) -> Diff {
        let mut next = self.nodes.len();
        let ids: Vec<NodeId> = specs
            .iter()
            .map(|spec| {
                self.node_by_name(&spec.name).unwrap_or_else(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let specs: Vec<NodeSpec> = specs
            .into_iter()
            .map(|spec| NodeSpec {
                depends_on: spec
                    .depends_on
                    .iter()
                    .filter_map(|&(dep, condition)| Some((*ids.get(dep)?, condition)))
                    .collect(),
                ..spec
            })
            .collect();
        let verdicts =
            ids.iter().zip(&specs).map(|(&id, spec)| self.verdict(id, spec, launch_changed)).collect();
        let (unlisted_main, removed) = self
            .present()
            .filter(|(id, _)| !ids.contains(id))
            .partition::<Vec<_>, _>(|(_, node)| node.spec.main);
        let ids_of = |nodes: Vec<(NodeId, &Node)>| nodes.into_iter().map(|(id, _)| id).collect();
        Diff { ids, specs, verdicts, removed: ids_of(removed), unlisted_main: ids_of(unlisted_main) }
    }

    /// What happens to the node `id` (new if it is not in the graph yet) given its new `spec`.
    fn verdict(&self, id: NodeId, spec: &NodeSpec, launch_changed: &BTreeSet<String>) -> Change {
        let Some(node) = self.nodes.get(id) else {
            return Change::Start;
        };
        // The `-- CMD` main process is never restarted: its end would end the init.
        if node.spec.main {
            return Change::Unchanged;
        }
        let latest = match &node.fate {
            None => &node.spec,
            Some(Fate::Replace(next)) => next.as_ref(),
            Some(Fate::Remove) => return Change::Restart,
        };
        if latest == spec && !launch_changed.contains(&spec.name) {
            Change::Unchanged
        } else {
            Change::Restart
        }
    }

    fn changes(&self, diff: &Diff) -> Vec<NodeChange> {
        let kept = diff.specs.iter().zip(&diff.verdicts).map(|(spec, &change)| (spec.name.clone(), change));
        let removed = diff.removed.iter().map(|&id| (self.name(id).to_string(), Change::Stop));
        kept.chain(removed).map(|(name, change)| NodeChange { name, change }).collect()
    }

    /// Gives the node `spec` once its process is gone (at once if it has none). Its old run's
    /// facts stop counting now: dependents still waiting wait for the new run.
    fn redefine_later(&mut self, id: NodeId, spec: NodeSpec, out: &mut Vec<Action>) {
        let Some(node) = self.nodes.get_mut(id) else {
            return;
        };
        node.fate = Some(Fate::Replace(Box::new(spec)));
        node.ever_spawned = false;
        node.ever_ready = false;
        node.ever_log_ready = false;
        if node.state == NodeState::Stopping {
            note(out, id, NoteLevel::Info, "will start again with its new definition once stopped (reload)");
        }
    }

    /// Skipped nodes that depend on a node the reload starts afresh (or on one retried in turn)
    /// become pending again: their conditions are decided anew.
    fn retry_skipped(&mut self, mut fresh: BTreeSet<NodeId>, out: &mut Vec<Action>) {
        loop {
            let retry: Vec<NodeId> = self
                .present()
                .filter(|(_, node)| node.state == NodeState::Skipped && node.fate.is_none())
                .filter(|(_, node)| node.spec.depends_on.iter().any(|(dep, _)| fresh.contains(dep)))
                .map(|(id, _)| id)
                .collect();
            if retry.is_empty() {
                return;
            }
            for id in retry {
                if let Some(node) = self.nodes.get_mut(id) {
                    note(out, id, NoteLevel::Info, "pending again: a dependency was redefined (reload)");
                    node.state = NodeState::Pending;
                    node.reason = None;
                    fresh.insert(id);
                }
            }
        }
    }

    /// Stops every running node a reload removed or redefined once none of its dependents that
    /// are also going is still running or stopping.
    pub(super) fn advance_retirement(&mut self, out: &mut Vec<Action>) {
        let due: Vec<NodeId> = self
            .present()
            .filter(|(_, node)| node.fate.is_some() && node.state.is_live())
            .map(|(id, _)| id)
            .filter(|&id| !self.has_active_dependent_going(id))
            .collect();
        for id in due {
            let why = match self.nodes.get(id).and_then(|node| node.fate.as_ref()) {
                Some(Fate::Remove) => "stopping: removed from the configuration (reload)",
                _ => "restarting: its definition changed (reload)",
            };
            self.stop_node(id, why, out);
        }
    }

    fn has_active_dependent_going(&self, id: NodeId) -> bool {
        self.dependents.get(id).is_some_and(|dependents| {
            dependents.iter().any(|&dep| {
                self.nodes.get(dep).is_some_and(|node| node.fate.is_some() && node.state.is_active())
            })
        })
    }

    /// Carries out the fate of every removed or redefined node whose process is gone: a
    /// removed node leaves the graph, a redefined one starts afresh with its new spec
    /// (`pending`; `stopped` during shutdown).
    pub(super) fn resolve_fates(&mut self, out: &mut Vec<Action>) {
        let shutting_down = self.shutdown.is_some();
        let due: Vec<NodeId> = self
            .present()
            .filter(|(_, node)| node.fate.is_some() && !node.state.is_active())
            .map(|(id, _)| id)
            .collect();
        if due.is_empty() {
            return;
        }
        for id in due {
            let Some(node) = self.nodes.get_mut(id) else { continue };
            if node.state == NodeState::Backoff {
                out.push(Action::CancelTimer { timer: TimerId::Restart(id) });
            }
            match node.fate.take() {
                Some(Fate::Replace(spec)) => {
                    *node = Node::new(*spec);
                    if shutting_down {
                        node.state = NodeState::Stopped;
                    } else {
                        disable_if_configured(id, node, out);
                    }
                    out.push(Action::Redefine { node: id });
                }
                Some(Fate::Remove) => {
                    node.state = NodeState::Stopped;
                    self.order.retain(|&other| other != id);
                    out.push(Action::Forget { node: id });
                }
                None => {}
            }
        }
        self.find_dependents();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ControlCommand;
    use crate::graph::event::Event;
    use crate::graph::spec::Condition::{
        ProcessCompletedSuccessfully as Succeeded, ProcessStarted as Started,
    };
    use crate::graph::spec::RestartPolicy;
    use crate::graph::testkit::*;

    fn planned(changes: &[NodeChange]) -> Vec<(&str, &str)> {
        changes.iter().map(|c| (c.name.as_str(), c.change.as_str())).collect()
    }

    fn reload(h: &mut Harness, specs: Vec<NodeSpec>) -> Reconfigured {
        reload_with(h, specs, &[])
    }

    /// A reload, checked against its dry run.
    fn reload_with(h: &mut Harness, specs: Vec<NodeSpec>, launch_changed: &[&str]) -> Reconfigured {
        let launch_changed: BTreeSet<String> = launch_changed.iter().map(|s| s.to_string()).collect();
        let dry = h.graph.plan_reconfigure(&specs, &launch_changed).expect("reload refused");
        let done = h.graph.reconfigure(specs, &launch_changed, h.now).expect("reload refused");
        assert_eq!(dry, done.changes, "the dry run matches what the reload does");
        done
    }

    fn names(h: &Harness) -> Vec<String> {
        h.graph.status().into_iter().map(|s| s.name).collect()
    }

    /// db (0) <- app (1, started after db), and cache (2); all running as 10, 11, 12.
    fn three() -> Harness {
        let mut h = Harness::started(vec![spec("db"), after("app", &[(0, Started)]), spec("cache")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.spawned(2, 12);
        h
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let mut h = three();
        let before = h.graph.status();
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), spec("cache")]);
        assert_eq!(
            planned(&done.changes),
            [("db", "unchanged"), ("app", "unchanged"), ("cache", "unchanged")]
        );
        assert_eq!((done.ids, done.actions), (vec![0, 1, 2], vec![]));
        assert_eq!(h.graph.status(), before);
    }

    #[test]
    fn nodes_are_matched_by_name_wherever_they_are_in_the_new_list() {
        let mut h = three();
        // The same graph, listed in another order: dependencies compared by name.
        let done = reload(&mut h, vec![spec("cache"), spec("db"), after("app", &[(1, Started)])]);
        assert_eq!(
            planned(&done.changes),
            [("cache", "unchanged"), ("db", "unchanged"), ("app", "unchanged")]
        );
        assert_eq!(done.ids, [2, 0, 1]);
        assert_eq!(names(&h), ["cache", "db", "app"], "status follows the new order");
        assert_eq!(h.graph.node_by_pid(11), Some(1));
    }

    #[test]
    fn a_new_node_gets_a_new_id_and_starts_once_its_conditions_are_met() {
        let mut h = three();
        let web = after("web", &[(3, Started)]);
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), web, spec("cache")]);
        assert_eq!(planned(&done.changes)[2], ("web", "start"));
        assert_eq!(done.ids, [0, 1, 3, 2]);
        assert_eq!(done.actions, vec![spawn(3)]);
        assert_eq!(h.spawned(3, 13), vec![info(3, "started (pid 13)")]);
        assert_eq!(h.graph.node_by_name("web"), Some(3));
    }

    #[test]
    fn a_new_node_waits_for_a_new_dependency_in_dependency_order() {
        let mut h = three();
        let specs = vec![
            spec("db"),
            after("app", &[(0, Started)]),
            spec("cache"),
            after("web", &[(4, Succeeded)]),
            spec("migrate"),
        ];
        let done = reload(&mut h, specs);
        assert_eq!(done.ids, [0, 1, 2, 3, 4]);
        assert_eq!(done.actions, vec![spawn(4)], "migrate first");
        h.spawned(4, 14);
        assert_eq!(h.exit(4, 0), vec![info(4, "exited with code 0"), spawn(3)]);
    }

    #[test]
    fn a_new_disabled_node_is_disabled() {
        let mut h = three();
        let off = spec_with("off", |s| s.disabled = true);
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), spec("cache"), off]);
        assert_eq!(done.actions, vec![info(3, "disabled")]);
        assert_eq!(h.state(3), NodeState::Disabled);
    }

    #[test]
    fn removed_nodes_stop_in_reverse_dependency_order_and_then_leave_the_graph() {
        let mut h = three();
        let done = reload(&mut h, vec![spec("cache")]);
        assert_eq!(planned(&done.changes), [("cache", "unchanged"), ("db", "stop"), ("app", "stop")]);
        assert_eq!(
            done.actions,
            vec![
                info(1, "stopping: removed from the configuration (reload)"),
                stop(1),
                arm_kill(1, secs(10))
            ],
            "app first: it depends on db"
        );
        assert_eq!(names(&h), ["cache", "db", "app"], "still there while they stop");
        assert_eq!(
            h.refuse(0, ControlCommand::Restart),
            "`db` is being removed by a reload; try again once it has stopped"
        );
        assert_eq!(
            h.signalled(1, 15),
            vec![
                cancel_kill(1),
                info(1, "stopped (killed by SIGTERM)"),
                Action::Forget { node: 1 },
                info(0, "stopping: removed from the configuration (reload)"),
                stop(0),
                arm_kill(0, secs(10)),
            ]
        );
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Forget { node: 0 }]);
        assert_eq!(names(&h), ["cache"]);
        assert_eq!((h.graph.node_by_name("db"), h.graph.node_by_pid(10)), (None, None));
        assert_eq!(h.fire(TimerId::Kill(0)), vec![], "events for a removed node change nothing");
        assert_eq!(h.exit(2, 0), vec![info(2, "exited with code 0"), Action::Finished { code: 0 }]);
    }

    #[test]
    fn a_removed_node_that_does_not_run_leaves_at_once_and_its_restart_is_cancelled() {
        let svc = spec_with("svc", |s| s.restart = RestartPolicy::Always);
        let mut h = Harness::started(vec![svc, spec("done"), spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.spawned(2, 12);
        h.exit(0, 1);
        h.exit(1, 0);
        let done = reload(&mut h, vec![spec("other")]);
        assert_eq!(
            done.actions,
            vec![
                Action::CancelTimer { timer: TimerId::Restart(0) },
                Action::Forget { node: 0 },
                Action::Forget { node: 1 },
            ]
        );
        assert_eq!(names(&h), ["other"]);
        assert_eq!(h.fire(TimerId::Restart(0)), vec![]);
    }

    #[test]
    fn a_changed_node_stops_with_its_old_settings_and_starts_afresh_with_the_new() {
        let db = spec_with("db", |s| s.restart = RestartPolicy::Always);
        let mut h = Harness::started(vec![db, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.exit(0, 1);
        h.fire(TimerId::Restart(0));
        h.spawned(0, 12);
        assert_eq!(h.status(0).restarts, 1);
        let new_db = spec_with("db", |s| {
            s.restart = RestartPolicy::Always;
            s.shutdown_timeout = secs(3);
        });
        let done = reload(&mut h, vec![new_db, spec("other")]);
        assert_eq!(planned(&done.changes), [("db", "restart"), ("other", "unchanged")]);
        assert_eq!(
            done.actions,
            vec![info(0, "restarting: its definition changed (reload)"), stop(0), arm_kill(0, secs(10))],
            "the old shutdown timeout"
        );
        assert_eq!(
            h.signalled(0, 15),
            vec![
                cancel_kill(0),
                info(0, "stopped (killed by SIGTERM)"),
                Action::Redefine { node: 0 },
                spawn(0),
            ],
            "not restarted by its policy: redefined, then started as new"
        );
        assert_eq!(h.status(0).restarts, 0, "a fresh start");
        h.spawned(0, 13);
        assert_eq!(quiet(h.accept(0, ControlCommand::Stop).1)[1], arm_kill(0, secs(3)), "the new settings");
    }

    #[test]
    fn a_launch_change_the_runtime_reports_restarts_the_node() {
        let mut h = three();
        let done =
            reload_with(&mut h, vec![spec("db"), after("app", &[(0, Started)]), spec("cache")], &["cache"]);
        assert_eq!(planned(&done.changes)[2], ("cache", "restart"));
        assert_eq!(quiet(done.actions), vec![stop(2), arm_kill(2, secs(10))]);
    }

    #[test]
    fn running_dependents_of_a_changed_node_keep_running_and_pending_ones_wait_for_the_new_run() {
        let db = spec_with("db", |s| s.readiness = thresholds(1, 1));
        let mut h = Harness::started(vec![
            db.clone(),
            after("app", &[(0, Started)]),
            after("late", &[(0, crate::graph::spec::Condition::ProcessHealthy)]),
        ]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        assert_eq!(h.state(2), NodeState::Pending, "db is not ready yet");
        let new_db = spec_with("db", |s| {
            s.readiness = thresholds(1, 1);
            s.backoff = secs(2);
        });
        let specs = vec![
            new_db,
            after("app", &[(0, Started)]),
            after("late", &[(0, crate::graph::spec::Condition::ProcessHealthy)]),
        ];
        let done = reload(&mut h, specs);
        assert_eq!(planned(&done.changes), [("db", "restart"), ("app", "unchanged"), ("late", "unchanged")]);
        assert_eq!(
            quiet(h.ready_probe(0, true)),
            vec![],
            "the old run's readiness does not count: its probes were stopped"
        );
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Redefine { node: 0 }, spawn(0)]);
        assert_eq!(h.status(1).pid, Some(11), "app kept running");
        h.spawned(0, 12);
        assert_eq!(h.ready_probe(0, true), vec![info(0, "ready"), spawn(2)], "late starts on the new run");
    }

    #[test]
    fn changed_nodes_stop_dependents_first_and_start_in_dependency_order() {
        let mut h = three();
        let new_db = spec_with("db", |s| s.backoff = secs(2));
        let new_app = spec_with("app", |s| {
            s.depends_on = vec![(0, Started)];
            s.backoff = secs(2);
        });
        let done = reload(&mut h, vec![new_db, new_app, spec("cache")]);
        assert_eq!(quiet(done.actions), vec![stop(1), arm_kill(1, secs(10))], "app before db");
        assert_eq!(
            quiet(h.exit(1, 0)),
            vec![cancel_kill(1), Action::Redefine { node: 1 }, stop(0), arm_kill(0, secs(10))],
            "app waits for the new db"
        );
        assert_eq!(h.state(1), NodeState::Pending);
        assert_eq!(quiet(h.exit(0, 0)), vec![cancel_kill(0), Action::Redefine { node: 0 }, spawn(0)]);
        assert_eq!(quiet(h.spawned(0, 20)), vec![spawn(1)]);
    }

    #[test]
    fn a_changed_node_that_is_not_running_is_redefined_at_once() {
        let mut h = Harness::started(vec![spec("migrate"), after("app", &[(0, Succeeded)]), spec("other")]);
        h.spawned(0, 10);
        h.spawned(2, 12);
        h.exit(0, 3);
        assert_eq!(h.state(1), NodeState::Skipped);
        let fixed = spec_with("migrate", |s| s.success_exit_codes = vec![0, 3]);
        let done = reload(&mut h, vec![fixed, after("app", &[(0, Succeeded)]), spec("other")]);
        assert_eq!(
            planned(&done.changes),
            [("migrate", "restart"), ("app", "unchanged"), ("other", "unchanged")]
        );
        assert_eq!(
            done.actions,
            vec![
                info(1, "pending again: a dependency was redefined (reload)"),
                Action::Redefine { node: 0 },
                spawn(0),
            ]
        );
        h.spawned(0, 13);
        assert_eq!(h.exit(0, 3), vec![info(0, "exited with code 3"), spawn(1)], "app gets its chance");
    }

    #[test]
    fn a_node_stopping_when_the_reload_comes_is_redefined_once_gone() {
        let web = spec_with("web", |s| {
            s.liveness = thresholds(1, 1);
            s.restart = RestartPolicy::Always;
        });
        let mut h = Harness::started(vec![web, spec("other")]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        h.live_probe(0, false);
        let done = reload(&mut h, vec![spec("web"), spec("other")]);
        assert_eq!(
            done.actions,
            vec![info(0, "will start again with its new definition once stopped (reload)")]
        );
        assert_eq!(
            h.exit(0, 0),
            vec![
                cancel_kill(0),
                info(0, "stopped (exited with code 0 after failing its liveness probe)"),
                Action::Redefine { node: 0 },
                spawn(0),
            ]
        );
    }

    #[test]
    fn a_removed_name_that_comes_back_before_its_process_is_gone_restarts() {
        let mut h = three();
        reload(&mut h, vec![spec("db"), after("app", &[(0, Started)])]);
        assert_eq!(h.state(2), NodeState::Stopping);
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), spec("cache")]);
        assert_eq!(planned(&done.changes)[2], ("cache", "restart"));
        assert_eq!(done.ids, [0, 1, 2]);
        assert_eq!(quiet(h.exit(2, 0)), vec![cancel_kill(2), Action::Redefine { node: 2 }, spawn(2)]);
    }

    #[test]
    fn a_second_reload_compares_with_the_definition_still_on_its_way() {
        let mut h = three();
        let new_cache = spec_with("cache", |s| s.backoff = secs(5));
        reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), new_cache.clone()]);
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), new_cache]);
        assert_eq!(planned(&done.changes)[2], ("cache", "unchanged"));
        assert_eq!(done.actions, vec![]);
        let done = reload(&mut h, vec![spec("db"), after("app", &[(0, Started)]), spec("cache")]);
        assert_eq!(
            planned(&done.changes)[2],
            ("cache", "restart"),
            "back to the running one is a change too"
        );
    }

    #[test]
    fn the_main_process_is_never_restarted_or_removed() {
        let main = spec_with("main", |s| {
            s.main = true;
            s.shutdown_timeout = secs(5);
        });
        let mut h = Harness::started(vec![spec("svc"), main]);
        h.spawned(0, 10);
        h.spawned(1, 11);
        let new_main = spec_with("main", |s| {
            s.main = true;
            s.shutdown_timeout = secs(7);
        });
        let done = reload_with(&mut h, vec![new_main], &["main"]);
        assert_eq!(planned(&done.changes), [("main", "unchanged"), ("svc", "stop")]);
        let done = reload(&mut h, vec![]);
        assert_eq!(planned(&done.changes), [("svc", "stop")], "main stays when it is not listed");
        assert!(h.graph.ids().contains(&1));
        h.exit(0, 0);
        assert_eq!(quiet(h.stop()), vec![stop(1), arm_kill(1, secs(7))], "its new grace");
    }

    #[test]
    fn a_shutdown_during_a_reload_waits_for_the_nodes_leaving() {
        let mut h = three();
        reload(&mut h, vec![spec("cache")]);
        assert_eq!(quiet(h.stop()), vec![stop(2), arm_kill(2, secs(10))]);
        assert_eq!(
            h.graph.reconfigure(vec![], &BTreeSet::new(), h.now),
            Err("the init is shutting down".to_string())
        );
        assert_eq!(quiet(h.exit(2, 0)), vec![cancel_kill(2)]);
        assert_eq!(
            quiet(h.exit(1, 0)),
            vec![cancel_kill(1), Action::Forget { node: 1 }, stop(0), arm_kill(0, secs(10))]
        );
        assert_eq!(
            quiet(h.exit(0, 0)),
            vec![cancel_kill(0), Action::Forget { node: 0 }, Action::Finished { code: 0 }]
        );
    }

    #[test]
    fn reloads_are_refused_before_start() {
        let h = Harness::new(vec![spec("a")]);
        assert_eq!(
            h.graph.plan_reconfigure(&[], &BTreeSet::new()),
            Err("the init has not started its services yet".to_string())
        );
    }

    #[test]
    fn an_empty_graph_takes_nodes_from_a_reload() {
        let mut h = Harness::started(vec![]);
        let done = reload(&mut h, vec![spec("a")]);
        assert_eq!((done.ids, done.actions), (vec![0], vec![spawn(0)]));
        assert_eq!(h.ev(Event::Spawned { node: 0, pid: 10 }), vec![info(0, "started (pid 10)")]);
        assert_eq!(h.exit(0, 0), vec![info(0, "exited with code 0"), Action::Finished { code: 0 }]);
    }
}

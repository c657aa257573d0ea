//! Whether a pending node may start: its dependencies' conditions.
//!
//! Conditions gate only the start and are sticky: once met they stay met, so a dependency that
//! restarts later does not stop or hold back its dependents. A condition that can never be met
//! makes the dependent `skipped`, with a reason that names the dependency and why, instead of
//! leaving it pending forever.

use super::spec::{Condition, NodeId};
use super::state::{Node, NodeState};

/// The verdict on a pending node (or on one of its dependencies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// Every condition is met: start it.
    Open,
    /// Some condition may still be met.
    Wait,
    /// This condition can never be met: skip it, for this reason.
    Never(String),
}

/// The verdict on `node` given the current state of every node. The first dependency (in
/// `depends_on` order) that can never be met decides the reason.
pub(super) fn gate(node: &Node, nodes: &[Node]) -> Gate {
    let mut verdict = Gate::Open;
    for &(dep, condition) in &node.spec.depends_on {
        match dependency(dep, condition, nodes) {
            Gate::Open => {}
            Gate::Wait => verdict = Gate::Wait,
            never @ Gate::Never(_) => return never,
        }
    }
    verdict
}

fn dependency(dep: NodeId, condition: Condition, nodes: &[Node]) -> Gate {
    // Validation guarantees the id exists; a bad id must still not panic PID 1.
    let Some(node) = nodes.get(dep) else {
        return Gate::Never(format!("dependency #{dep} does not exist"));
    };
    let name = &node.spec.name;
    match node.state {
        NodeState::Disabled => return Gate::Never(format!("dependency `{name}` is disabled")),
        NodeState::Skipped => return Gate::Never(format!("dependency `{name}` was skipped")),
        _ => {}
    }
    let ended = matches!(node.state, NodeState::Completed | NodeState::Failed);
    let failed = || {
        let code = node.exit_code.map_or_else(|| "unknown".to_string(), |code| code.to_string());
        format!("dependency `{name}` failed with exit code {code}")
    };
    let ended_without = |what: &str| match node.state {
        NodeState::Failed => failed(),
        _ => format!("dependency `{name}` ended without {what}"),
    };
    match condition {
        Condition::ProcessStarted => sticky(node.ever_spawned, ended, || ended_without("starting")),
        Condition::ProcessHealthy => sticky(node.ever_ready, ended, || ended_without("becoming healthy")),
        Condition::ProcessLogReady if !node.spec.has_ready_log_line => {
            Gate::Never(format!("dependency `{name}` has no ready_log_line"))
        }
        Condition::ProcessLogReady => {
            sticky(node.ever_log_ready, ended, || ended_without("printing its ready line"))
        }
        Condition::ProcessCompleted if ended => Gate::Open,
        Condition::ProcessCompleted => Gate::Wait,
        Condition::ProcessCompletedSuccessfully => match node.state {
            NodeState::Completed => Gate::Open,
            NodeState::Failed => Gate::Never(failed()),
            _ => Gate::Wait,
        },
    }
}

/// A condition on something that happened at least once: met if it did, unmeetable if the
/// dependency ended for good without it.
fn sticky(happened: bool, ended: bool, why_never: impl FnOnce() -> String) -> Gate {
    if happened {
        Gate::Open
    } else if ended {
        Gate::Never(why_never())
    } else {
        Gate::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testkit::spec;

    fn dep(state: NodeState, setup: impl FnOnce(&mut Node)) -> Vec<Node> {
        let mut node = Node::new(spec("db"));
        node.state = state;
        setup(&mut node);
        vec![node]
    }

    fn verdict(condition: Condition, nodes: &[Node]) -> Gate {
        let mut dependent = spec("app");
        dependent.depends_on = vec![(0, condition)];
        gate(&Node::new(dependent), nodes)
    }

    fn never(reason: &str) -> Gate {
        Gate::Never(reason.to_string())
    }

    const ALL: [Condition; 5] = [
        Condition::ProcessStarted,
        Condition::ProcessHealthy,
        Condition::ProcessCompleted,
        Condition::ProcessCompletedSuccessfully,
        Condition::ProcessLogReady,
    ];

    #[test]
    fn no_dependencies_means_open() {
        assert_eq!(gate(&Node::new(spec("app")), &[]), Gate::Open);
    }

    #[test]
    fn disabled_or_skipped_dependencies_never_meet_any_condition() {
        for condition in ALL {
            let disabled = dep(NodeState::Disabled, |_| {});
            assert_eq!(verdict(condition, &disabled), never("dependency `db` is disabled"));
            let skipped = dep(NodeState::Skipped, |_| {});
            assert_eq!(verdict(condition, &skipped), never("dependency `db` was skipped"));
        }
    }

    #[test]
    fn a_pending_dependency_keeps_every_condition_waiting() {
        let pending = dep(NodeState::Pending, |n| n.spec.has_ready_log_line = true);
        for condition in ALL {
            assert_eq!(verdict(condition, &pending), Gate::Wait, "{condition:?}");
        }
    }

    #[test]
    fn started_is_met_once_spawned_and_stays_met() {
        let starting = dep(NodeState::Starting, |_| {});
        assert_eq!(verdict(Condition::ProcessStarted, &starting), Gate::Wait);
        let restarting = dep(NodeState::Backoff, |n| n.ever_spawned = true);
        assert_eq!(verdict(Condition::ProcessStarted, &restarting), Gate::Open);
        let never_spawned = dep(NodeState::Failed, |n| n.exit_code = Some(127));
        assert_eq!(
            verdict(Condition::ProcessStarted, &never_spawned),
            never("dependency `db` failed with exit code 127")
        );
    }

    #[test]
    fn healthy_needs_readiness_once() {
        let running = dep(NodeState::Starting, |n| n.ever_spawned = true);
        assert_eq!(verdict(Condition::ProcessHealthy, &running), Gate::Wait);
        let was_ready = dep(NodeState::Running, |n| n.ever_ready = true);
        assert_eq!(verdict(Condition::ProcessHealthy, &was_ready), Gate::Open);
        let completed = dep(NodeState::Completed, |n| n.exit_code = Some(0));
        assert_eq!(
            verdict(Condition::ProcessHealthy, &completed),
            never("dependency `db` ended without becoming healthy")
        );
        let failed = dep(NodeState::Failed, |n| n.exit_code = Some(1));
        assert_eq!(
            verdict(Condition::ProcessHealthy, &failed),
            never("dependency `db` failed with exit code 1")
        );
    }

    #[test]
    fn log_ready_needs_the_line_once_and_a_line_to_wait_for() {
        let no_line = dep(NodeState::Running, |_| {});
        assert_eq!(
            verdict(Condition::ProcessLogReady, &no_line),
            never("dependency `db` has no ready_log_line")
        );
        let waiting = dep(NodeState::Starting, |n| n.spec.has_ready_log_line = true);
        assert_eq!(verdict(Condition::ProcessLogReady, &waiting), Gate::Wait);
        let logged = dep(NodeState::Backoff, |n| {
            n.spec.has_ready_log_line = true;
            n.ever_log_ready = true;
        });
        assert_eq!(verdict(Condition::ProcessLogReady, &logged), Gate::Open);
        let ended = dep(NodeState::Completed, |n| n.spec.has_ready_log_line = true);
        assert_eq!(
            verdict(Condition::ProcessLogReady, &ended),
            never("dependency `db` ended without printing its ready line")
        );
    }

    #[test]
    fn completed_waits_for_the_final_end_whatever_the_code() {
        for state in [NodeState::Running, NodeState::Backoff, NodeState::Stopping] {
            assert_eq!(verdict(Condition::ProcessCompleted, &dep(state, |_| {})), Gate::Wait);
        }
        for state in [NodeState::Completed, NodeState::Failed] {
            assert_eq!(verdict(Condition::ProcessCompleted, &dep(state, |_| {})), Gate::Open);
        }
    }

    #[test]
    fn completed_successfully_needs_a_final_success() {
        let c = Condition::ProcessCompletedSuccessfully;
        assert_eq!(verdict(c, &dep(NodeState::Backoff, |_| {})), Gate::Wait);
        assert_eq!(verdict(c, &dep(NodeState::Completed, |_| {})), Gate::Open);
        let failed = dep(NodeState::Failed, |n| n.exit_code = Some(1));
        assert_eq!(verdict(c, &failed), never("dependency `db` failed with exit code 1"));
    }

    #[test]
    fn the_first_unmeetable_dependency_decides_and_beats_waiting() {
        let mut nodes = dep(NodeState::Running, |_| {});
        nodes.push(Node::new(spec("cache")));
        nodes[1].state = NodeState::Disabled;
        let mut app = spec("app");
        app.depends_on = vec![(0, Condition::ProcessCompleted), (1, Condition::ProcessStarted)];
        assert_eq!(gate(&Node::new(app), &nodes), never("dependency `cache` is disabled"));
    }

    #[test]
    fn a_missing_dependency_is_unmeetable_not_a_panic() {
        let mut app = spec("app");
        app.depends_on = vec![(7, Condition::ProcessStarted)];
        assert_eq!(gate(&Node::new(app), &[]), never("dependency #7 does not exist"));
    }
}

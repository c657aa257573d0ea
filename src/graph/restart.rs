//! What a node's end leads to: a restart after a backoff, a final state, or the init's shutdown.
//!
//! Pure functions of the spec and the end, so the policy table and the backoff curve are tested
//! on their own.

use std::time::Duration;

use super::spec::{BACKOFF_CAP, NodeSpec, RestartPolicy};

/// Why a node's end shuts the whole init down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The `-- CMD` main process ended.
    Main,
    /// `restart: exit_on_failure` and it failed.
    ExitOnFailure,
    /// `exit_on_end: true`.
    ExitOnEnd,
}

impl Cause {
    /// The note explaining the shutdown, logged under the node's name.
    pub fn message(self, code: i32) -> String {
        let why = match self {
            Self::Main => "main process ended",
            Self::ExitOnFailure => "failed with restart: exit_on_failure",
            Self::ExitOnEnd => "ended with exit_on_end",
        };
        format!("{why}; stopping everything (exit code {code})")
    }
}

/// The decision on one end of a node (outside shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    /// Spawn it again after a backoff.
    pub restart: bool,
    /// The policy asked for a restart but `max_restarts` were used up.
    pub exhausted: bool,
    /// Shut the init down with this exit code.
    pub shutdown: Option<(i32, Cause)>,
}

/// Decides what an end means. `success`: the code is one of the node's success codes (and the
/// end was not forced by a failed liveness probe); `code`: the end's `status.code()`;
/// `restarts`: the restarts the policy made so far (an operator's `restart` does not count).
///
/// A node whose end shuts the init down is never restarted (the shutdown would cancel it
/// anyway), so it ends `completed` or `failed`, which says more than `stopped`.
pub(super) fn decide(spec: &NodeSpec, success: bool, code: i32, restarts: u32) -> Outcome {
    if spec.main {
        return Outcome { restart: false, exhausted: false, shutdown: Some((code, Cause::Main)) };
    }
    let wants_restart = match spec.restart {
        RestartPolicy::No | RestartPolicy::ExitOnFailure => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !success,
    };
    let shutdown = if spec.restart == RestartPolicy::ExitOnFailure && !success {
        Some((failure_code(code), Cause::ExitOnFailure))
    } else if spec.exit_on_end {
        Some((if success { 0 } else { failure_code(code) }, Cause::ExitOnEnd))
    } else {
        None
    };
    let wants_restart = wants_restart && shutdown.is_none();
    let exhausted = wants_restart && spec.max_restarts.is_some_and(|max| restarts >= max);
    Outcome { restart: wants_restart && !exhausted, exhausted, shutdown }
}

/// The init's exit code for a failed node: its code, except that a failure never exits 0 (a
/// code 0 counts as a failure when 0 is not among the success codes, or after a failed
/// liveness probe).
pub(super) fn failure_code(code: i32) -> i32 {
    if code == 0 { 1 } else { code }
}

/// The delay before restart number `consecutive` (1 for the first since the last reset):
/// `base * 2^(consecutive-1)`, capped at [`BACKOFF_CAP`] (and at it, not past it, on overflow).
/// A zero base stays zero: the user asked for immediate restarts.
pub(super) fn backoff_delay(base: Duration, consecutive: u32) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(consecutive.saturating_sub(1));
    let delay = factor.and_then(|factor| base.checked_mul(factor)).unwrap_or(BACKOFF_CAP);
    delay.min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::testkit::spec;

    fn with(policy: RestartPolicy) -> NodeSpec {
        let mut node = spec("svc");
        node.restart = policy;
        node
    }

    fn restart() -> Outcome {
        Outcome { restart: true, exhausted: false, shutdown: None }
    }

    fn final_end() -> Outcome {
        Outcome { restart: false, exhausted: false, shutdown: None }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let secs: Vec<u64> = (1..=9).map(|k| backoff_delay(Duration::from_secs(1), k).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_delay(Duration::from_millis(500), 1), Duration::from_millis(500));
        assert_eq!(backoff_delay(Duration::from_millis(500), 3), Duration::from_secs(2));
    }

    #[test]
    fn backoff_never_overflows() {
        assert_eq!(backoff_delay(Duration::from_secs(1), 33), BACKOFF_CAP);
        assert_eq!(backoff_delay(Duration::from_secs(1), u32::MAX), BACKOFF_CAP);
        assert_eq!(backoff_delay(Duration::MAX, 2), BACKOFF_CAP);
        assert_eq!(backoff_delay(Duration::ZERO, 40), Duration::ZERO);
        assert_eq!(backoff_delay(Duration::from_secs(3600), 1), BACKOFF_CAP);
    }

    #[test]
    fn the_policy_table() {
        use RestartPolicy::*;
        assert_eq!(decide(&with(No), true, 0, 0), final_end());
        assert_eq!(decide(&with(No), false, 1, 0), final_end());
        assert_eq!(decide(&with(Always), true, 0, 0), restart());
        assert_eq!(decide(&with(Always), false, 1, 0), restart());
        assert_eq!(decide(&with(OnFailure), true, 0, 0), final_end());
        assert_eq!(decide(&with(OnFailure), false, 1, 0), restart());
        assert_eq!(decide(&with(ExitOnFailure), true, 0, 0), final_end());
        assert_eq!(
            decide(&with(ExitOnFailure), false, 3, 0),
            Outcome { restart: false, exhausted: false, shutdown: Some((3, Cause::ExitOnFailure)) }
        );
    }

    #[test]
    fn max_restarts_makes_the_next_end_final() {
        let mut node = with(RestartPolicy::Always);
        node.max_restarts = Some(2);
        assert_eq!(decide(&node, false, 1, 1), restart());
        assert_eq!(decide(&node, false, 1, 2), Outcome { restart: false, exhausted: true, shutdown: None });
        assert!(decide(&node, true, 0, 2).exhausted, "a success end is final too");
        node.max_restarts = Some(0);
        assert!(decide(&node, false, 1, 0).exhausted);
    }

    #[test]
    fn exit_on_end_shuts_down_with_0_for_success_and_the_code_otherwise() {
        let mut node = with(RestartPolicy::Always);
        node.exit_on_end = true;
        let shutdown = |success, code| decide(&node, success, code, 0).shutdown;
        assert_eq!(shutdown(true, 2), Some((0, Cause::ExitOnEnd)));
        assert_eq!(shutdown(false, 5), Some((5, Cause::ExitOnEnd)));
        assert_eq!(shutdown(false, 0), Some((1, Cause::ExitOnEnd)), "a failure never exits 0");
        assert!(!decide(&node, true, 0, 0).restart, "the end that shuts down is not restarted");
    }

    #[test]
    fn the_main_process_is_never_restarted_and_passes_its_code_through() {
        let mut node = with(RestartPolicy::Always);
        node.main = true;
        assert_eq!(
            decide(&node, true, 0, 0),
            Outcome { restart: false, exhausted: false, shutdown: Some((0, Cause::Main)) }
        );
        assert_eq!(decide(&node, false, 137, 0).shutdown, Some((137, Cause::Main)));
    }

    #[test]
    fn notes_say_why_everything_stops() {
        assert_eq!(Cause::Main.message(3), "main process ended; stopping everything (exit code 3)");
    }
}

//! The last thing PID 1 does: stop the processes left behind, as a state machine with no I/O.
//!
//! When the graph has finished (the main process ended, or every service was stopped), other
//! processes may remain: daemons a script started, orphans. They get SIGTERM and a grace period
//! to clean up, then SIGKILL, and only then does the init exit (tini's #180 and #236 are the
//! failure to avoid: leftovers SIGKILLed by the namespace teardown with no chance to clean up).
//! Events come in (a round of reaping, a stop request, the timer); actions go out.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::reaper::Reaped;

/// Something that happened while draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A round of reaping after SIGCHLD.
    Reaped(Reaped),
    /// SIGTERM or SIGINT: no more patience.
    StopRequested,
    /// The timer armed by [`Action::ArmTimer`] fired.
    TimerFired,
}

/// Something the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the signal to every process left (see [`super::leftovers`]), then report a round of
    /// reaping (they may be gone already, and then no SIGCHLD would come).
    SignalLeftovers(Signal),
    /// Arm the one timer; re-arming replaces the previous deadline.
    ArmTimer(Duration),
    /// Processes survived SIGKILL's grace (stuck in the kernel): exit without them.
    GiveUpOnLeftovers,
    /// Exit the init with this code.
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Leftovers were sent SIGTERM.
    Terminating,
    /// Leftovers were sent SIGKILL; the timer bounds the final wait.
    Killing,
    /// Exit was decided; nothing else happens.
    Done,
}

/// How long to wait for processes to vanish after SIGKILL before exiting anyway. SIGKILL is
/// immediate except for a process stuck in the kernel, which no waiting would fix.
pub const AFTER_KILL: Duration = Duration::from_secs(1);

/// The state machine.
#[derive(Debug)]
pub struct Drain {
    code: i32,
    phase: Phase,
}

impl Drain {
    /// Starts draining before exiting with `code`: SIGTERM now, SIGKILL after `grace`. With no
    /// children left at all, exits at once.
    pub fn start(code: i32, grace: Duration, children_left: bool) -> (Self, Vec<Action>) {
        if !children_left {
            return (Self { code, phase: Phase::Done }, vec![Action::Exit(code)]);
        }
        let drain = Self { code, phase: Phase::Terminating };
        (drain, vec![Action::SignalLeftovers(Signal::SIGTERM), Action::ArmTimer(grace)])
    }

    /// Decides what to do about one event.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match (self.phase, event) {
            (Phase::Done, _) => Vec::new(),
            (_, Event::Reaped(reaped)) if !reaped.children_left => self.exit(),
            (_, Event::Reaped(_)) => Vec::new(),
            (Phase::Terminating, Event::StopRequested | Event::TimerFired) => {
                self.phase = Phase::Killing;
                vec![Action::SignalLeftovers(Signal::SIGKILL), Action::ArmTimer(AFTER_KILL)]
            }
            (Phase::Killing, Event::TimerFired) => {
                let mut actions = vec![Action::GiveUpOnLeftovers];
                actions.extend(self.exit());
                actions
            }
            (Phase::Killing, Event::StopRequested) => Vec::new(),
        }
    }

    fn exit(&mut self) -> Vec<Action> {
        self.phase = Phase::Done;
        vec![Action::Exit(self.code)]
    }
}

#[cfg(test)]
mod tests {
    use nix::unistd::Pid;

    use super::super::reaper::ExitStatus;
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn reaped(pids: &[i32], children_left: bool) -> Event {
        Event::Reaped(Reaped {
            exited: pids.iter().map(|pid| (Pid::from_raw(*pid), ExitStatus::Code(0))).collect(),
            children_left,
        })
    }

    #[test]
    fn nothing_left_exits_at_once() {
        let (_, actions) = Drain::start(42, GRACE, false);
        assert_eq!(actions, vec![Action::Exit(42)]);
    }

    #[test]
    fn leftovers_get_term_then_kill_after_the_grace_period() {
        let (mut drain, actions) = Drain::start(3, GRACE, true);
        assert_eq!(actions, vec![Action::SignalLeftovers(Signal::SIGTERM), Action::ArmTimer(GRACE)]);
        assert_eq!(drain.handle(reaped(&[9], true)), vec![]);
        assert_eq!(
            drain.handle(Event::TimerFired),
            vec![Action::SignalLeftovers(Signal::SIGKILL), Action::ArmTimer(AFTER_KILL)]
        );
        assert_eq!(drain.handle(reaped(&[10], false)), vec![Action::Exit(3)]);
    }

    #[test]
    fn leftovers_that_leave_in_time_end_the_drain_early() {
        let (mut drain, _) = Drain::start(0, GRACE, true);
        assert_eq!(drain.handle(reaped(&[9], false)), vec![Action::Exit(0)]);
        assert_eq!(drain.handle(Event::TimerFired), vec![], "a stale timer after exit is harmless");
    }

    #[test]
    fn a_stop_request_while_draining_kills_at_once() {
        let (mut drain, _) = Drain::start(0, GRACE, true);
        assert_eq!(
            drain.handle(Event::StopRequested),
            vec![Action::SignalLeftovers(Signal::SIGKILL), Action::ArmTimer(AFTER_KILL)]
        );
        assert_eq!(drain.handle(Event::StopRequested), vec![]);
    }

    #[test]
    fn unkillable_leftovers_do_not_keep_the_init_forever() {
        let (mut drain, _) = Drain::start(5, GRACE, true);
        drain.handle(Event::TimerFired);
        assert_eq!(drain.handle(Event::TimerFired), vec![Action::GiveUpOnLeftovers, Action::Exit(5)]);
    }
}

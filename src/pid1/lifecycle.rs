//! What PID 1 does around its main process, as a state machine with no I/O.
//!
//! Events come in (a signal, a round of reaped children, the grace timer); actions go out
//! (forward a signal, signal the leftovers, arm the timer, exit). The event loop in
//! [`super::run`] executes the actions; this module decides them, so every ordering question
//! (what happens to a second SIGTERM while draining, when exactly the init exits) is answered
//! here and tested without processes or real time.

use std::time::Duration;

use nix::unistd::Pid;

use super::reaper::{ExitStatus, Reaped};
use super::signals::TERMINAL_HOUSEKEEPING;
use crate::config::ForwardTo;

/// Something that happened to the init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal other than SIGCHLD arrived.
    Signal(i32),
    /// A round of reaping after SIGCHLD.
    Reaped(Reaped),
    /// The timer armed by [`Action::ArmTimer`] fired.
    TimerFired,
}

/// Something the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the signal to the main process (or its process group).
    Forward { signo: i32, to: Pid, group: bool },
    /// Tell the main process's exit (for the log).
    MainExited(ExitStatus),
    /// Send the signal to every process left (see [`super::leftovers`]).
    SignalLeftovers(nix::sys::signal::Signal),
    /// Arm the one timer; re-arming replaces the previous deadline.
    ArmTimer(Duration),
    /// Processes that ignored SIGKILL's grace (uninterruptible sleep): exit without them.
    GiveUpOnLeftovers,
    /// Exit the init with this code.
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The main process runs (or, with none, the init idles until stopped).
    Running,
    /// The main process is gone; leftovers were sent SIGTERM.
    Draining { code: i32 },
    /// Leftovers were sent SIGKILL; the timer bounds the final wait.
    Killing { code: i32 },
    /// Exit was decided; nothing else happens.
    Done,
}

/// How long to wait for processes to vanish after SIGKILL before exiting anyway. SIGKILL is
/// immediate except for a process stuck in the kernel, which no waiting would fix.
pub const AFTER_KILL: Duration = Duration::from_secs(1);

/// The state machine.
#[derive(Debug)]
pub struct Lifecycle {
    main: Option<Pid>,
    forward_to: ForwardTo,
    grace: Duration,
    phase: Phase,
}

impl Lifecycle {
    /// `main` is the main process's pid, or `None` when the init only idles and reaps.
    pub fn new(main: Option<Pid>, forward_to: ForwardTo, grace: Duration) -> Self {
        Self { main, forward_to, grace, phase: Phase::Running }
    }

    /// Decides what to do about one event.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match (self.phase, event) {
            (Phase::Done, _) => Vec::new(),
            (Phase::Running, Event::Signal(signo)) => self.on_signal_running(signo),
            (Phase::Running, Event::Reaped(reaped)) => self.on_reaped_running(reaped),
            (Phase::Draining { code } | Phase::Killing { code }, Event::Reaped(reaped)) => {
                if reaped.children_left { Vec::new() } else { self.exit(code) }
            }
            (Phase::Draining { code }, Event::Signal(signo)) if is_stop_request(signo) => {
                // A second stop request while draining: no more patience.
                self.kill_leftovers(code)
            }
            (Phase::Draining { code }, Event::TimerFired) => self.kill_leftovers(code),
            (Phase::Killing { code }, Event::TimerFired) => {
                let mut actions = vec![Action::GiveUpOnLeftovers];
                actions.extend(self.exit(code));
                actions
            }
            (_, Event::Signal(_) | Event::TimerFired) => Vec::new(),
        }
    }

    fn on_signal_running(&mut self, signo: i32) -> Vec<Action> {
        if TERMINAL_HOUSEKEEPING.contains(&signo) {
            return Vec::new();
        }
        match self.main {
            Some(to) => vec![Action::Forward { signo, to, group: self.forward_to == ForwardTo::Group }],
            // Idle: a stop request ends the init cleanly (exit 0), after the leftovers.
            None if is_stop_request(signo) => self.drain(0, true),
            None => Vec::new(),
        }
    }

    fn on_reaped_running(&mut self, reaped: Reaped) -> Vec<Action> {
        let main_exit = self
            .main
            .and_then(|main| reaped.exited.iter().find(|(pid, _)| *pid == main).map(|(_, status)| *status));
        match main_exit {
            Some(status) => {
                let mut actions = vec![Action::MainExited(status)];
                actions.extend(self.drain(status.code(), reaped.children_left));
                actions
            }
            None => Vec::new(),
        }
    }

    /// Starts stopping the leftovers, or exits at once when there are none.
    fn drain(&mut self, code: i32, children_left: bool) -> Vec<Action> {
        if !children_left {
            return self.exit(code);
        }
        self.phase = Phase::Draining { code };
        vec![Action::SignalLeftovers(nix::sys::signal::Signal::SIGTERM), Action::ArmTimer(self.grace)]
    }

    fn kill_leftovers(&mut self, code: i32) -> Vec<Action> {
        self.phase = Phase::Killing { code };
        vec![Action::SignalLeftovers(nix::sys::signal::Signal::SIGKILL), Action::ArmTimer(AFTER_KILL)]
    }

    fn exit(&mut self, code: i32) -> Vec<Action> {
        self.phase = Phase::Done;
        vec![Action::Exit(code)]
    }
}

/// SIGTERM and SIGINT ask the init to stop (what `docker stop` and Ctrl-C send).
fn is_stop_request(signo: i32) -> bool {
    signo == nix::libc::SIGTERM || signo == nix::libc::SIGINT
}

#[cfg(test)]
mod tests {
    use nix::libc::{SIGHUP, SIGINT, SIGTERM, SIGTTOU, SIGUSR1};
    use nix::sys::signal::Signal::{SIGKILL, SIGTERM as TERM};

    use super::*;

    const MAIN: Pid = Pid::from_raw(2);
    const GRACE: Duration = Duration::from_secs(5);

    fn with_main() -> Lifecycle {
        Lifecycle::new(Some(MAIN), ForwardTo::Process, GRACE)
    }

    fn reaped(exited: &[(i32, ExitStatus)], children_left: bool) -> Event {
        Event::Reaped(Reaped {
            exited: exited.iter().map(|(pid, status)| (Pid::from_raw(*pid), *status)).collect(),
            children_left,
        })
    }

    #[test]
    fn signals_are_forwarded_to_the_main_process_but_not_terminal_housekeeping() {
        let mut machine = with_main();
        for signo in [SIGTERM, SIGUSR1, SIGHUP, SIGINT, 40] {
            assert_eq!(
                machine.handle(Event::Signal(signo)),
                vec![Action::Forward { signo, to: MAIN, group: false }]
            );
        }
        assert_eq!(machine.handle(Event::Signal(SIGTTOU)), vec![]);
    }

    #[test]
    fn group_forwarding_is_a_setting() {
        let mut machine = Lifecycle::new(Some(MAIN), ForwardTo::Group, GRACE);
        assert_eq!(
            machine.handle(Event::Signal(SIGUSR1)),
            vec![Action::Forward { signo: SIGUSR1, to: MAIN, group: true }]
        );
    }

    #[test]
    fn orphans_exiting_change_nothing() {
        let mut machine = with_main();
        assert_eq!(machine.handle(reaped(&[(7, ExitStatus::Code(1))], true)), vec![]);
    }

    #[test]
    fn main_exit_without_leftovers_exits_at_once_with_its_code() {
        let mut machine = with_main();
        assert_eq!(
            machine.handle(reaped(&[(2, ExitStatus::Code(42))], false)),
            vec![Action::MainExited(ExitStatus::Code(42)), Action::Exit(42)]
        );
        assert_eq!(machine.handle(Event::Signal(SIGTERM)), vec![], "nothing after exit");
    }

    #[test]
    fn death_by_signal_is_128_plus_n() {
        let mut machine = with_main();
        let actions = machine.handle(reaped(&[(2, ExitStatus::Signal(9))], false));
        assert_eq!(actions.last(), Some(&Action::Exit(137)));
    }

    #[test]
    fn leftovers_get_term_then_kill_after_the_grace_period() {
        let mut machine = with_main();
        assert_eq!(
            machine.handle(reaped(&[(2, ExitStatus::Code(3))], true)),
            vec![
                Action::MainExited(ExitStatus::Code(3)),
                Action::SignalLeftovers(TERM),
                Action::ArmTimer(GRACE)
            ]
        );
        assert_eq!(machine.handle(reaped(&[(9, ExitStatus::Code(0))], true)), vec![]);
        assert_eq!(
            machine.handle(Event::TimerFired),
            vec![Action::SignalLeftovers(SIGKILL), Action::ArmTimer(AFTER_KILL)]
        );
        assert_eq!(machine.handle(reaped(&[(10, ExitStatus::Signal(9))], false)), vec![Action::Exit(3)]);
    }

    #[test]
    fn leftovers_that_leave_in_time_end_the_drain_early() {
        let mut machine = with_main();
        machine.handle(reaped(&[(2, ExitStatus::Code(0))], true));
        assert_eq!(machine.handle(reaped(&[(9, ExitStatus::Signal(15))], false)), vec![Action::Exit(0)]);
        assert_eq!(machine.handle(Event::TimerFired), vec![], "a stale timer after exit is harmless");
    }

    #[test]
    fn a_stop_request_while_draining_kills_at_once() {
        let mut machine = with_main();
        machine.handle(reaped(&[(2, ExitStatus::Code(0))], true));
        assert_eq!(
            machine.handle(Event::Signal(SIGINT)),
            vec![Action::SignalLeftovers(SIGKILL), Action::ArmTimer(AFTER_KILL)]
        );
        assert_eq!(machine.handle(Event::Signal(SIGUSR1)), vec![]);
    }

    #[test]
    fn unkillable_leftovers_do_not_keep_the_init_forever() {
        let mut machine = with_main();
        machine.handle(reaped(&[(2, ExitStatus::Code(5))], true));
        machine.handle(Event::TimerFired);
        assert_eq!(machine.handle(Event::TimerFired), vec![Action::GiveUpOnLeftovers, Action::Exit(5)]);
    }

    #[test]
    fn idle_init_stops_cleanly_on_term_and_ignores_other_signals() {
        let mut machine = Lifecycle::new(None, ForwardTo::Process, GRACE);
        assert_eq!(machine.handle(Event::Signal(SIGHUP)), vec![]);
        assert_eq!(machine.handle(reaped(&[(5, ExitStatus::Code(0))], true)), vec![]);
        assert_eq!(
            machine.handle(Event::Signal(SIGTERM)),
            vec![Action::SignalLeftovers(TERM), Action::ArmTimer(GRACE)]
        );
        assert_eq!(machine.handle(reaped(&[], false)), vec![Action::Exit(0)]);
    }
}

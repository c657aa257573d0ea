//! PID 1's duties: take every signal, forward it, reap every child, and stop whatever is left
//! when the main process ends. [`lifecycle`] decides; [`supervise`] is the event loop that
//! executes its decisions.

pub mod leftovers;
pub mod lifecycle;
pub mod reaper;
pub mod signals;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::time::{Sleep, sleep};
use tracing::{debug, error, info, warn};

use crate::config::ForwardTo;
use crate::exit_code;
use lifecycle::{Action, Event, Lifecycle};
use reaper::ExitStatus;
use signals::Signals;

/// Outside a PID namespace of its own (a host, or `docker run --init` putting another init in
/// front), the init registers as a child subreaper: orphans of its descendants are re-parented
/// to it instead of to the real PID 1, so it still reaps them and knows them at shutdown.
pub fn become_subreaper_unless_pid1() {
    if std::process::id() == 1 {
        return;
    }
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => debug!("not PID 1 (pid {}): registered as child subreaper", std::process::id()),
        Err(error) => {
            warn!("not PID 1 and cannot become a child subreaper ({error}): orphans will not be reaped here")
        }
    }
}

/// How the loop treats the main process and the leftovers.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub forward_to: ForwardTo,
    /// SIGTERM-to-SIGKILL grace period for processes left when the main process is gone.
    pub grace: Duration,
}

/// Runs until the lifecycle decides to exit; returns the exit code.
pub async fn supervise(mut signals: Signals, main: Option<Pid>, settings: Settings) -> i32 {
    let mut machine = Lifecycle::new(main, settings.forward_to, settings.grace);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut follow_ups = VecDeque::new();
    loop {
        let event = match follow_ups.pop_front() {
            Some(event) => event,
            None => match next_event(&mut signals, &mut timer).await {
                Ok(event) => event,
                Err(failure) => {
                    error!("cannot read signals any more ({failure}); stopping");
                    return exit_code::INTERNAL;
                }
            },
        };
        for action in machine.handle(event) {
            match action {
                Action::Forward { signo, to, group } => forward(signo, to, group),
                Action::MainExited(status) => log_main_exit(status),
                Action::SignalLeftovers(signal) => {
                    signal_leftovers(signal);
                    // The leftovers may already be gone (or never existed): find out now rather
                    // than waiting for a SIGCHLD that would never come.
                    follow_ups.push_back(Event::Reaped(reaper::reap()));
                }
                Action::ArmTimer(after) => timer = Some(Box::pin(sleep(after))),
                Action::GiveUpOnLeftovers => {
                    warn!("some processes survived SIGKILL (stuck in the kernel?); exiting without them")
                }
                Action::Exit(code) => return code,
            }
        }
    }
}

/// Waits for the next signal or the timer, turning SIGCHLD into a round of reaping.
async fn next_event(signals: &mut Signals, timer: &mut Option<Pin<Box<Sleep>>>) -> std::io::Result<Event> {
    tokio::select! {
        received = signals.recv() => {
            let received = received?;
            if received.signo == nix::libc::SIGCHLD {
                return Ok(Event::Reaped(reaper::reap()));
            }
            debug!("received {} from pid {}", signals::name(received.signo), received.sender);
            Ok(Event::Signal(received.signo))
        }
        () = async { timer.as_mut().expect("guarded by the select condition").await }, if timer.is_some() => {
            *timer = None;
            Ok(Event::TimerFired)
        }
    }
}

fn forward(signo: i32, to: Pid, group: bool) {
    let target = if group { -to.as_raw() } else { to.as_raw() };
    // Raw kill: real-time signals have no `nix::sys::signal::Signal` variant.
    // SAFETY: kill(2) has no memory-safety preconditions.
    let result = unsafe { nix::libc::kill(target, signo) };
    if result == 0 {
        debug!(
            "forwarded {} to {}{}",
            signals::name(signo),
            if group { "process group " } else { "pid " },
            to
        );
    } else {
        debug!("could not forward {} to {to}: {}", signals::name(signo), std::io::Error::last_os_error());
    }
}

fn signal_leftovers(signal: nix::sys::signal::Signal) {
    match leftovers::signal_all(signal) {
        Some(0) => {}
        Some(count) => info!("sending {signal} to {count} remaining process(es)"),
        None => info!("sending {signal} to the remaining processes"),
    }
}

fn log_main_exit(status: ExitStatus) {
    match status {
        ExitStatus::Code(code) => info!("main process exited with code {code}"),
        ExitStatus::Signal(signo) => {
            info!("main process was killed by {} (exit code {})", signals::name(signo), status.code())
        }
    }
}

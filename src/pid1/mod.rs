//! PID 1's own duties: take every signal (see [`signals`]), reap every child (see [`reaper`]),
//! become a subreaper when not PID 1, forward signals, and stop whatever is left behind before
//! exiting (see [`drain`], executed by [`drain_leftovers`]).

pub mod drain;
pub mod inherited;
pub mod leftovers;
pub mod reaper;
pub mod signals;

use std::time::Duration;

use nix::unistd::Pid;
use tokio::time::sleep;
use tracing::{debug, error, info, warn};

use crate::exit_code;
use drain::{Action, Drain, Event};
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

/// Gives the heap's free pages back to the kernel. Reading the configuration takes several
/// times the memory of what is kept of it (the YAML events, the document tree, the decoded
/// processes: 3.6 MB at the peak for a thousand services), and glibc's free() returns memory to
/// the kernel only from the top of the heap, so most of it would stay resident for the life of
/// the container. Called once the configuration is planned, at boot and after each reload, and
/// after each burst of process starts (see `spawn::child`).
pub fn return_free_memory() {
    // SAFETY: malloc_trim only hands free memory of the allocator back; it is safe to call at
    // any time.
    #[cfg(target_env = "gnu")]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Sends `signo` to `to`, or to its process group. Raw kill: real-time signals have no
/// `nix::sys::signal::Signal` variant.
pub fn forward(signo: i32, to: Pid, group: bool) {
    let target = if group { -to.as_raw() } else { to.as_raw() };
    // SAFETY: kill(2) has no memory-safety preconditions.
    let mut result = unsafe { nix::libc::kill(target, signo) };
    if result != 0 && group && nix::errno::Errno::last() == nix::errno::Errno::ESRCH {
        // A child just started may not have made its group yet (it is between clone and
        // setsid, with every signal blocked until its exec): it gets the signal itself.
        // SAFETY: as above.
        result = unsafe { nix::libc::kill(to.as_raw(), signo) };
    }
    let whom = if group { "process group" } else { "pid" };
    if result == 0 {
        debug!("forwarded {} to {whom} {to}", signals::name(signo));
    } else {
        debug!(
            "could not forward {} to {whom} {to}: {}",
            signals::name(signo),
            std::io::Error::last_os_error()
        );
    }
}

/// SIGTERM and SIGINT ask the init to stop (what `docker stop` and Ctrl-C send).
pub fn is_stop_request(signo: i32) -> bool {
    signo == nix::libc::SIGTERM || signo == nix::libc::SIGINT
}

/// Stops the leftovers and returns the code to exit with: `code`, or 70 if signals can no
/// longer be read.
pub async fn drain_leftovers(signals: &mut Signals, code: i32, grace: Duration) -> i32 {
    let (mut machine, mut actions) = Drain::start(code, grace, reaper::reap().children_left);
    let mut timer = Box::pin(sleep(Duration::MAX));
    loop {
        let mut follow_ups = Vec::new();
        for action in std::mem::take(&mut actions) {
            match action {
                Action::SignalLeftovers(signal) => {
                    signal_leftovers(signal);
                    follow_ups.push(Event::Reaped(reaper::reap()));
                }
                Action::ArmTimer(after) => timer.as_mut().reset(tokio::time::Instant::now() + after),
                Action::GiveUpOnLeftovers => {
                    warn!("some processes survived SIGKILL (stuck in the kernel?); exiting without them")
                }
                Action::Exit(code) => return code,
            }
        }
        let event = match follow_ups.pop() {
            Some(event) => event,
            None => tokio::select! {
                received = signals.recv() => match received {
                    Ok(received) if received.signo == nix::libc::SIGCHLD => Event::Reaped(reaper::reap()),
                    Ok(received) if is_stop_request(received.signo) => Event::StopRequested,
                    Ok(_) => continue,
                    Err(failure) => {
                        error!("cannot read signals any more ({failure}); exiting");
                        return exit_code::INTERNAL;
                    }
                },
                () = timer.as_mut() => Event::TimerFired,
            },
        };
        actions.extend(machine.handle(event));
    }
}

fn signal_leftovers(signal: nix::sys::signal::Signal) {
    match leftovers::signal_all(signal) {
        Some(0) => {}
        Some(count) => info!("sending {signal} to {count} remaining process(es)"),
        None => info!("sending {signal} to the remaining processes"),
    }
}

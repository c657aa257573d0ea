//! Signal intake for PID 1 through one signalfd.
//!
//! The kernel drops signals sent to a namespace's PID 1 when their disposition is the default,
//! so the init must take every signal it wants to see. Instead of handlers it blocks them and
//! reads them from a signalfd: one fd in the event loop, no async-signal-safety concerns, and
//! the sender's pid comes with each signal. Blocked signals are never "ignored" by the kernel,
//! so even PID 1 receives them. Children must start with an empty mask: see
//! [`unblock_in_child`].

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Signals the init leaves alone: the kernel raises these synchronously on a fault, and blocking
/// them would turn a crash into a hang. SIGKILL and SIGSTOP cannot be blocked at all.
const UNBLOCKABLE: [Signal; 8] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGABRT,
    Signal::SIGKILL,
];

/// Signals that are about the init's own terminal access, never meant for the main process:
/// with SIGTTOU blocked the init may hand the terminal to its child from the background.
pub const TERMINAL_HOUSEKEEPING: [i32; 2] = [nix::libc::SIGTTIN, nix::libc::SIGTTOU];

/// The set of signals the init receives through its signalfd.
fn taken() -> SigSet {
    let mut set = SigSet::all();
    for signal in UNBLOCKABLE {
        set.remove(signal);
    }
    set.remove(Signal::SIGSTOP);
    set
}

/// Blocks every signal the init takes. Must run before any thread or child exists, so that the
/// mask is the process's and no signal slips through to a default disposition.
pub fn block() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&taken()), None).map_err(io::Error::from)
}

/// Restores an empty signal mask. Runs in a freshly forked child before exec: a blocked mask is
/// inherited across exec and would leave the program deaf to the signals we forward to it.
/// Only async-signal-safe calls: it runs between fork and exec.
pub fn unblock_in_child() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// One signal read from the signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// The sending process as seen from the init's PID namespace (0 for the kernel or another
    /// namespace).
    pub sender: i32,
}

/// The signalfd, registered with the event loop.
pub struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    /// Opens the signalfd for the blocked set; call [`block`] first.
    pub fn open() -> io::Result<Self> {
        let fd = SignalFd::with_flags(&taken(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // SAFETY: the SignalFd owns its descriptor and never replaces it; `fd` is only reached
        // through `get_inner_mut` to read from it, so it stays the same open fd for the
        // AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Waits for the next signal. The kernel's directory notifications are not signals anyone
    /// sent: they go to [`crate::fswatch`] and are not returned.
    pub async fn recv(&mut self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            match guard.get_inner_mut().read_signal() {
                Ok(Some(info)) => {
                    let signo = info.ssi_signo as i32;
                    if crate::fswatch::is_notification(signo, info.ssi_code) {
                        crate::fswatch::changed();
                        continue;
                    }
                    return Ok(Received { signo, sender: info.ssi_pid as i32 });
                }
                Ok(None) => guard.clear_ready(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// A signal's conventional name (`SIGTERM`), or `signal N` for real-time and unknown numbers.
pub fn name(signo: i32) -> String {
    Signal::try_from(signo).map_or_else(|_| format!("signal {signo}"), |s| s.as_str().to_string())
}

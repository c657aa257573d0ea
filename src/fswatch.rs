//! [`Removal`] notices that a file the init serves on (the control socket, the notify socket)
//! was deleted or moved away, by a start-up script cleaning /run or by hand, so that it can be
//! made again.
//!
//! It watches with dnotify (`fcntl(F_NOTIFY)`), not inotify: closing an inotify instance waits
//! in the kernel for the watch's marks to be freed after a grace period
//! (`fsnotify_destroy_group`), 2 to 15 ms measured on this kind of machine, which the init paid
//! at every exit (`INIT -- /bin/true` took 5 ms instead of 1.8) and, blocking its event loop,
//! at every socket bound again. A dnotify watch ends with its directory's descriptor at no such
//! cost. dnotify reports through a signal: the kernel queues [`signal`] with the code
//! `POLL_MSG`, which no process can send (the kernel refuses a positive code from anyone but
//! the kernel), and the signal intake ([`crate::pid1::signals`]) passes those to [`changed`]
//! instead of forwarding them to the main process.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::stat::Mode;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep};

/// `F_SETSIG` from linux/fcntl.h (x86-64): the signal a descriptor's notifications come as.
const F_SETSIG: libc::c_int = 10;
/// dnotify's events from linux/fcntl.h: an entry deleted, an entry renamed, and keep the
/// watch after its first event.
const DN_DELETE: libc::c_int = 0x8;
const DN_RENAME: libc::c_int = 0x10;
const DN_MULTISHOT: libc::c_int = 0x8000_0000_u32 as libc::c_int;
/// The signal code of a queued descriptor notification (asm-generic/siginfo.h).
const POLL_MSG: i32 = 3;

/// After its file is found gone, a removal waits until its directories have been still this
/// long: a cleanup that deletes the directory as well (`rm -rf /run/nix2gpu`) deletes the
/// socket first, and a socket bound again at once would make its last step, the rmdir, fail.
const SETTLE: Duration = Duration::from_millis(100);
/// ... but not longer than this, however busy the directories are.
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// Wakes every [`Removal`] waiting to look again; see [`changed`].
static CHANGES: Notify = Notify::const_new();

/// The real-time signal dnotify is asked to queue. Signals of this number that a process sends
/// are still forwarded: only the kernel's notifications carry [`POLL_MSG`].
pub fn signal() -> i32 {
    libc::SIGRTMAX()
}

/// Whether a signal read from the signalfd is a directory notification: [`signal`] queued by
/// the kernel, or, when the queue of real-time signals was full, the plain SIGIO the kernel
/// sends instead (code `SI_KERNEL`, which no process can send either).
pub fn is_notification(signo: i32, code: i32) -> bool {
    (signo == signal() && code == POLL_MSG) || (signo == libc::SIGIO && code == libc::SI_KERNEL)
}

/// Something changed in a watched directory: every removal waiting looks at its file again.
pub fn changed() {
    CHANGES.notify_waiters();
}

/// A watch on one file (by its inode), through its directory and that directory's parent.
pub struct Removal {
    path: PathBuf,
    /// The device and inode the path named when the watch began.
    identity: (u64, u64),
    /// The watched directories: the watches end when these close.
    _directories: Vec<OwnedFd>,
}

impl Removal {
    /// Watches for the removal of the file at `path`, which must exist: deleted, moved away,
    /// or gone with its directory (deleted or moved), which the parent's watch sees.
    pub fn watch(path: &Path) -> io::Result<Self> {
        let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory"));
        };
        let metadata = std::fs::symlink_metadata(path)?;
        let mut directories = vec![watch_directory(directory)?];
        if let Some(parent) = directory.parent().filter(|p| !p.as_os_str().is_empty()) {
            directories.push(watch_directory(parent)?);
        }
        Ok(Self {
            path: path.to_path_buf(),
            identity: (metadata.dev(), metadata.ino()),
            _directories: directories,
        })
    }

    /// Whether the path no longer names the file the watch began with.
    fn gone(&self) -> bool {
        std::fs::symlink_metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != self.identity)
    }

    /// Resolves once the file is gone and its directories have settled (see [`SETTLE`]).
    pub async fn removed(&self) {
        loop {
            let next = CHANGES.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if self.gone() {
                break;
            }
            next.await;
        }
        let limit = Instant::now() + SETTLE_AT_MOST;
        loop {
            tokio::select! {
                () = CHANGES.notified() => {}
                () = sleep(SETTLE) => return,
            }
            if Instant::now() >= limit {
                return;
            }
        }
    }
}

/// Opens `directory` and asks for a notification when an entry in it is deleted or renamed.
fn watch_directory(directory: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = open(directory, flags, Mode::empty())?;
    // SAFETY: plain fcntl calls on a descriptor this function owns; neither takes a pointer.
    let armed = unsafe {
        libc::fcntl(fd.as_raw_fd(), F_SETSIG, signal()) == 0
            && libc::fcntl(fd.as_raw_fd(), libc::F_NOTIFY, DN_DELETE | DN_RENAME | DN_MULTISHOT) == 0
    };
    if !armed {
        return Err(io::Error::other(format!(
            "dnotify on {}: {}",
            directory.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(fd)
}

/// Resolves when `removal` does; never without one.
pub async fn removed(removal: Option<&Removal>) {
    match removal {
        Some(removal) => removal.removed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kernels_notifications_are_taken_from_the_signals() {
        assert!(is_notification(signal(), POLL_MSG));
        assert!(is_notification(libc::SIGIO, libc::SI_KERNEL));
        // Sent by a process: kill(2) (SI_USER), sigqueue(3) (SI_QUEUE), tgkill(2) (SI_TKILL).
        for code in [libc::SI_USER, libc::SI_QUEUE, libc::SI_TKILL] {
            assert!(!is_notification(signal(), code));
            assert!(!is_notification(libc::SIGIO, code));
        }
        assert!(!is_notification(libc::SIGTERM, POLL_MSG));
    }
}

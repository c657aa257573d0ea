//! inotify for the event loop: tokio's `AsyncFd` around nix's `Inotify`, and [`Removal`], which
//! notices that a file the init serves on (the control socket, the notify socket) was deleted
//! or moved away, by a start-up script cleaning /run or by hand, so that it can be made again.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An inotify instance as tokio's `AsyncFd` wants it (nix's only offers `AsFd`).
pub struct Watcher(pub Inotify);

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    /// A non-blocking, close-on-exec inotify instance registered with the event loop.
    pub fn register() -> io::Result<AsyncFd<Watcher>> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the Watcher owns the inotify descriptor and never replaces or closes it, so
        // the fd stays the same open file for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(Watcher(inotify), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }
}

/// A watch on one file's directory that resolves when the file, or the directory itself, is
/// deleted or moved away.
pub struct Removal {
    events: AsyncFd<Watcher>,
    name: OsString,
}

impl Removal {
    /// Watches for the removal of `path` (which must have a directory and a file name).
    pub fn watch(path: &Path) -> io::Result<Self> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory"));
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let events = Watcher::register()?;
        let mask = AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        events.get_ref().0.add_watch(dir, mask)?;
        Ok(Self { events, name: name.to_os_string() })
    }

    /// Resolves once the file or its directory is gone; an error if the watch itself fails.
    pub async fn removed(&self) -> io::Result<()> {
        let directory_gone =
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED;
        loop {
            let mut guard = self.events.readable().await?;
            match guard.try_io(|watcher| watcher.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) => {
                    let gone = events.iter().any(|event| {
                        event.mask.intersects(directory_gone)
                            || event.name.as_deref() == Some(self.name.as_os_str())
                    });
                    if gone {
                        return Ok(());
                    }
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => {}
            }
        }
    }
}

/// Resolves when `removal` does; never without one.
pub async fn removed(removal: Option<&Removal>) -> io::Result<()> {
    match removal {
        Some(removal) => removal.removed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nix2gpu-fswatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Whether `removal` resolves within a short time.
    async fn resolves(removal: &Removal) -> bool {
        tokio::time::timeout(Duration::from_secs(2), removal.removed()).await.is_ok()
    }

    #[test]
    fn deleting_or_moving_the_file_or_its_directory_is_noticed_and_other_files_are_not() {
        let dir = scratch("file");
        let file = dir.join("control.sock");
        runtime().block_on(async {
            std::fs::write(&file, "").unwrap();
            let removal = Removal::watch(&file).unwrap();
            std::fs::write(dir.join("other"), "").unwrap();
            std::fs::remove_file(dir.join("other")).unwrap();
            let quiet = tokio::time::timeout(Duration::from_millis(200), removal.removed()).await.is_err();
            assert!(quiet, "another file's removal is not ours");
            std::fs::remove_file(&file).unwrap();
            assert!(resolves(&removal).await, "deleted");

            std::fs::write(&file, "").unwrap();
            let removal = Removal::watch(&file).unwrap();
            std::fs::rename(&file, dir.join("moved")).unwrap();
            assert!(resolves(&removal).await, "moved away");

            std::fs::write(&file, "").unwrap();
            let removal = Removal::watch(&file).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            assert!(resolves(&removal).await, "its directory deleted");
        });
    }
}

//! Waiting for the NVIDIA driver to be injected: the driver libraries in one of the toolkit's
//! directories and the control device. Event-driven (inotify on the directories, and on the
//! nearest existing parent of a directory that does not exist yet) and bounded; a progress line
//! every few seconds says what is still missing, so a person at `docker logs` knows what the
//! container waits for.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// The libraries whose presence means "the driver's user space was injected".
pub const LIBRARIES: [&str; 2] = ["libnvidia-ml.so", "libcuda.so"];
/// The device the driver creates; present when the container was given GPUs.
pub const CONTROL_DEVICE: &str = "/dev/nvidiactl";
/// How often the wait says what it still waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The size of a 64-bit ELF header (a 32-bit one is shorter).
const ELF_HEADER_LEN: usize = 64;

/// What was found: each library's directory and file, and whether the device exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `(name in LIBRARIES, the file found)`, for those found.
    pub libraries: Vec<(&'static str, PathBuf)>,
    /// Files named like a driver library that are not complete ELF files (still being copied
    /// in, truncated, or not a library at all), for the verdict when they stay that way.
    pub unusable: Vec<PathBuf>,
    /// The control device looked for, and whether it exists.
    pub device_path: PathBuf,
    pub device: bool,
}

impl Found {
    pub fn complete(&self) -> bool {
        self.libraries.len() == LIBRARIES.len() && self.device
    }

    /// What is still missing, for messages.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = LIBRARIES
            .iter()
            .filter(|name| !self.libraries.iter().any(|(found, _)| found == *name))
            .map(|name| format!("{name}.*"))
            .collect();
        if !self.device {
            missing.push(self.device_path.display().to_string());
        }
        missing
    }

    /// The directory NVML was found in: the driver's directory.
    pub fn driver_dir(&self) -> Option<&Path> {
        self.libraries.iter().find(|(name, _)| *name == LIBRARIES[0]).and_then(|(_, file)| file.parent())
    }
}

/// Looks for the driver in `dirs` (first match wins) and `device`. Each directory is listed
/// once for all the libraries: the system's library directory, searched before the driver's
/// in some layouts, holds a thousand entries or more.
pub fn look(dirs: &[PathBuf], device: &Path) -> Found {
    let mut unusable = Vec::new();
    let mut files: [Option<PathBuf>; LIBRARIES.len()] = Default::default();
    for dir in dirs {
        if files.iter().all(Option::is_some) {
            break;
        }
        let Ok(listing) = fs::read_dir(dir) else { continue };
        let names: Vec<OsString> = listing.filter_map(Result::ok).map(|entry| entry.file_name()).collect();
        for (file, name) in files.iter_mut().zip(LIBRARIES) {
            if file.is_none() {
                *file = library_in(dir, &names, name, &mut unusable);
            }
        }
    }
    let libraries = LIBRARIES.iter().zip(files).filter_map(|(name, file)| Some((*name, file?))).collect();
    Found { libraries, unusable, device_path: device.to_path_buf(), device: device.exists() }
}

/// A complete ELF file among the entries `names` of `dir` named `name.<something>` (the soname
/// link `name.1` or the versioned file). A file still being copied in is not complete: its
/// section headers, at the end of the file, are not there yet. Candidates that are not
/// complete go to `unusable`.
fn library_in(dir: &Path, names: &[OsString], name: &str, unusable: &mut Vec<PathBuf>) -> Option<PathBuf> {
    let prefix = format!("{name}.");
    let mut candidates: Vec<PathBuf> = names
        .iter()
        .filter(|entry| entry.to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|entry| dir.join(entry))
        .collect();
    candidates.sort();
    let (complete, incomplete): (Vec<PathBuf>, Vec<PathBuf>) =
        candidates.into_iter().partition(|p| complete_elf(p));
    unusable.extend(incomplete);
    complete.into_iter().next()
}

/// Whether `path` is an ELF file whose section header table lies within it. Only the ELF
/// header is read, and the length from the file's metadata: libcuda alone is tens of megabytes.
fn complete_elf(path: &Path) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    let mut head = Vec::with_capacity(ELF_HEADER_LEN);
    if (&mut file).take(ELF_HEADER_LEN as u64).read_to_end(&mut head).is_err() {
        return false;
    }
    let (Ok(header), Ok(metadata)) = (goblin::elf::Elf::parse_header(&head), file.metadata()) else {
        return false;
    };
    let table_end = header.e_shoff.saturating_add(u64::from(header.e_shnum) * u64::from(header.e_shentsize));
    table_end <= metadata.len()
}

/// Waits until the driver is complete in `dirs` and `device`, or `limit` passed; `progress`
/// gets the missing items and the time waited so far, every few seconds. Without inotify (no
/// kernel support, or no watches left) there is nothing to wait on: the error says so.
pub fn wait(
    dirs: &[PathBuf],
    device: &Path,
    limit: Duration,
    mut progress: impl FnMut(&[String], Duration),
) -> Result<Found, String> {
    let started = Instant::now();
    // Injected before the init started, as it nearly always is: no watch at all. Closing an
    // inotify instance costs milliseconds (see crate::fswatch), more than the whole look.
    let found = look(dirs, device);
    if found.complete() || limit.is_zero() {
        return Ok(found);
    }
    let watcher =
        Watcher::new().map_err(|e| format!("cannot watch for the driver's files (inotify): {e}"))?;
    let mut next_progress = started + PROGRESS_EVERY;
    loop {
        watcher.watch(dirs.iter().map(PathBuf::as_path).chain(device.parent()));
        let found = look(dirs, device);
        let now = Instant::now();
        let deadline = started + limit;
        if found.complete() || now >= deadline {
            return Ok(found);
        }
        if now >= next_progress {
            progress(&found.missing(), now - started);
            next_progress += PROGRESS_EVERY;
        }
        watcher.next_change(deadline.min(next_progress) - now);
    }
}

/// inotify watches on the directories (or their nearest existing parents).
struct Watcher {
    inotify: Inotify,
}

impl Watcher {
    fn new() -> nix::Result<Self> {
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map(|inotify| Self { inotify })
    }

    /// Watches each directory, or the nearest parent that exists (to see it created). A watch
    /// added twice is the same watch.
    fn watch<'a>(&self, dirs: impl Iterator<Item = &'a Path>) {
        let events = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB;
        for dir in dirs {
            if let Some(existing) = dir.ancestors().find(|a| a.is_dir()) {
                let _ = self.inotify.add_watch(existing, events);
            }
        }
    }

    /// Waits up to `limit` for any change, then drains the queue.
    fn next_change(&self, limit: Duration) {
        let millis = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(millis)).unwrap_or(0) > 0 {
            while self.inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Scratch;

    /// This test binary itself: a complete ELF file to stand in for a library.
    fn some_elf() -> Vec<u8> {
        fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn files_arriving_later_end_the_wait_at_once() {
        let scratch = Scratch::new("arrive");
        let root = scratch.0.clone();
        let libs = root.join("usr/lib64");
        let device = root.join("dev/nvidiactl");
        let (libs2, device2) = (libs.clone(), device.clone());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::create_dir_all(&libs2).unwrap();
            fs::write(libs2.join("libnvidia-ml.so.1"), some_elf()).unwrap();
            fs::write(libs2.join("libcuda.so.1"), some_elf()).unwrap();
            fs::create_dir_all(device2.parent().unwrap()).unwrap();
            fs::write(&device2, "").unwrap();
            Instant::now()
        });
        let found = wait(std::slice::from_ref(&libs), &device, Duration::from_secs(20), |_, _| {}).unwrap();
        let done = Instant::now();
        let written = writer.join().unwrap();
        assert!(found.complete(), "{found:?}");
        assert_eq!(found.driver_dir(), Some(libs.as_path()));
        assert!(done.duration_since(written) < Duration::from_secs(1), "noticed late");
    }

    #[test]
    fn each_library_comes_from_the_first_directory_holding_it_complete() {
        let scratch = Scratch::new("dirs");
        let (first, second) = (scratch.0.join("first"), scratch.0.join("second"));
        fs::create_dir_all(&first).unwrap();
        fs::create_dir_all(&second).unwrap();
        let elf = some_elf();
        fs::write(first.join("libcuda.so.1"), &elf).unwrap();
        fs::write(first.join("libnvidia-ml.so.1"), &elf[..elf.len() / 2]).unwrap();
        fs::write(second.join("libnvidia-ml.so.1"), &elf).unwrap();
        fs::write(second.join("libcuda.so.1"), &elf).unwrap();
        let found = look(&[scratch.0.join("missing"), first.clone(), second.clone()], &first.join("none"));
        assert_eq!(
            found.libraries,
            [
                ("libnvidia-ml.so", second.join("libnvidia-ml.so.1")),
                ("libcuda.so", first.join("libcuda.so.1"))
            ]
        );
        assert_eq!(found.unusable, [first.join("libnvidia-ml.so.1")]);
        assert_eq!(found.driver_dir(), Some(second.as_path()));
    }

    #[test]
    fn a_truncated_library_is_not_found_and_the_deadline_holds() {
        let scratch = Scratch::new("truncated");
        let root = scratch.0.clone();
        let elf = some_elf();
        fs::write(root.join("libnvidia-ml.so.1"), &elf[..elf.len() / 2]).unwrap();
        let started = Instant::now();
        let found =
            wait(std::slice::from_ref(&root), &root.join("nvidiactl"), Duration::from_millis(300), |_, _| {})
                .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            found.missing(),
            ["libnvidia-ml.so.*", "libcuda.so.*", &*root.join("nvidiactl").to_string_lossy()]
        );
        assert_eq!(found.unusable, [root.join("libnvidia-ml.so.1")], "named for the verdict");
    }
}

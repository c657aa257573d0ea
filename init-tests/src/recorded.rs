//! A file of JSON lines that a program under test appends to (the tailscaled stand-in's record
//! of requests), read with bounded waits on inotify events: no sleeping between looks.

use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::Value;

/// A fresh, empty record file in the temp dir, removed when dropped.
pub struct Recorded {
    path: PathBuf,
    inotify: Inotify,
}

impl Recorded {
    /// A new record file named after `name` and this test process.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("nix2gpu-test-{}-{name}.jsonl", std::process::id()));
        fs::write(&path, "").expect("the temp dir is writable");
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
        inotify.add_watch(&path, AddWatchFlags::IN_MODIFY).expect("watch the record file");
        Self { path, inotify }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }

    /// Every complete line recorded so far, parsed.
    pub fn entries(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.path).expect("the record file exists");
        text.lines().map(|line| serde_json::from_str(line).expect("each record is JSON")).collect()
    }

    /// Waits at most `limit` for `check` to hold for the entries; `Err` holds the last entries
    /// seen when it never did.
    pub fn wait_until(
        &self,
        limit: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, Vec<Value>> {
        let deadline = Instant::now() + limit;
        loop {
            let entries = self.entries();
            if check(&entries) {
                return Ok(entries);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(entries);
            }
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            poll(&mut [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)], timeout).expect("poll");
            // Drain what woke us; the next look reads the file itself.
            while let Ok(events) = self.inotify.read_events() {
                if events.is_empty() {
                    break;
                }
            }
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

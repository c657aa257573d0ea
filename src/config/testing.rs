//! Helpers shared by the config tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::accounts::AccountFiles;

/// A scratch directory, removed when dropped.
pub(super) struct Dir(pub PathBuf);

impl Dir {
    pub(super) fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("nix2gpu-{name}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Writes a file in the directory and returns its path.
    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// passwd and group files with root and alice (uid 1000, member of video and render).
pub(super) fn fixture_accounts() -> (Dir, AccountFiles) {
    let dir = Dir::new("accounts");
    let passwd =
        dir.write("passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
    let group = dir.write("group", "root:x:0:\nalice:x:1000:\nvideo:x:44:alice,bob\nrender:x:105:alice\n");
    (dir, AccountFiles { passwd, group })
}

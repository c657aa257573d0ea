//! Files the `sshd` node owns or edits, replaced whole: written beside the target, then
//! renamed over it, so sshd or a login never reads half a file and a crash leaves the old one.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::Path;

/// Who a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Replaces `path` with `contents`, with `mode` and, when given, `owner`. A symlink at `path`
/// is replaced, not followed (an image's /etc/shadow may link into a read-only store).
pub fn replace(path: &Path, contents: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::other("not a file path"))?;
    let temporary = path.with_file_name(format!(".{}.nix2gpu-new", name.to_string_lossy()));
    let written = write_new(&temporary, contents, mode, owner).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

fn write_new(path: &Path, contents: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    // Created private; the final owner and mode are set before anything is written.
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    if let Some(owner) = owner {
        fchown(&file, Some(owner.uid), Some(owner.gid))?;
    }
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes `path` a directory with exactly `mode` (and `owner`), creating it and its parents
/// when missing.
pub fn ensure_dir(path: &Path, mode: u32, owner: Option<Owner>) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    if !fs::metadata(path)?.is_dir() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
    }
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))?;
    }
    fs::set_permissions(path, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_replaced_file_has_its_mode_and_a_symlink_is_replaced_not_followed() {
        let dir = std::env::temp_dir().join(format!("nix2gpu-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        ensure_dir(&dir.join("a/b"), 0o700, None).unwrap();
        assert_eq!(fs::metadata(dir.join("a/b")).unwrap().mode() & 0o7777, 0o700);
        let target = dir.join("read-only-target");
        fs::write(&target, "store").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("shadow")).unwrap();
        replace(&dir.join("shadow"), b"new", 0o640, None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("shadow")).unwrap(), "new");
        assert!(!fs::symlink_metadata(dir.join("shadow")).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(dir.join("shadow")).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_to_string(&target).unwrap(), "store");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3, "no temporary file is left");
        fs::remove_dir_all(dir).unwrap();
    }
}

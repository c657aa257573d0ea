//! The boot basics nix2gpu's startup script did, done idempotently: runtime directories with
//! their modes, and the environment (TMPDIR, HOME, XDG_*) that everything the init starts gets.
//!
//! Each step degrades on its own: without the permission to create a directory (a non-root
//! init, a read-only root) the init warns and goes on.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::accounts;

pub mod secrets;

/// A directory the system expects at runtime.
struct RuntimeDir {
    path: &'static str,
    mode: u32,
    /// Re-apply the mode when the directory already exists. Only for directories whose mode is
    /// a correctness matter (world-writable temp dirs, sshd's privilege-separation dir).
    enforce: bool,
}

const RUNTIME_DIRS: [RuntimeDir; 6] = [
    RuntimeDir { path: "tmp", mode: 0o1777, enforce: true },
    RuntimeDir { path: "var/tmp", mode: 0o1777, enforce: true },
    RuntimeDir { path: "run", mode: 0o755, enforce: false },
    RuntimeDir { path: "run/sshd", mode: 0o755, enforce: true },
    RuntimeDir { path: "var/log", mode: 0o755, enforce: false },
    RuntimeDir { path: "var/empty", mode: 0o755, enforce: true },
];

/// A step that could not be done, for the caller to warn about.
#[derive(Debug)]
pub struct Degraded {
    pub path: PathBuf,
    pub error: io::Error,
}

/// Creates the runtime directories under `root` ("/" in production) with their modes.
pub fn make_runtime_dirs(root: &Path) -> Vec<Degraded> {
    RUNTIME_DIRS
        .iter()
        .filter_map(|dir| {
            let path = root.join(dir.path);
            ensure_dir(&path, dir.mode, dir.enforce).err().map(|error| Degraded { path, error })
        })
        .collect()
}

fn ensure_dir(path: &Path, mode: u32, enforce: bool) -> io::Result<()> {
    match DirBuilder::new().mode(mode).create(path) {
        // The umask narrowed the mode given to mkdir; set it exactly.
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(mode)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let metadata = fs::metadata(path)?;
            if !metadata.is_dir() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
            }
            if enforce && metadata.permissions().mode() & 0o7777 != mode {
                fs::set_permissions(path, Permissions::from_mode(mode))?;
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// The environment for the processes the init starts: its own, with defaults filled in where
/// unset.
pub fn environment(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    uid: u32,
    passwd: &Path,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = inherited.into_iter().collect();
    // /etc/passwd is read only when HOME is not set (container runtimes set it).
    let home = env.get(OsStr::new("HOME")).cloned().unwrap_or_else(|| {
        accounts::by_uid(passwd, uid)
            .map_or_else(|| OsString::from(if uid == 0 { "/root" } else { "/" }), |a| OsString::from(a.home))
    });
    let home_str = home.to_string_lossy().trim_end_matches('/').to_string();
    let runtime_dir = format!("/run/user/{uid}");
    let defaults: [(&str, String); 11] = [
        ("HOME", home.to_string_lossy().into_owned()),
        ("TMPDIR", "/tmp".into()),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("XDG_DATA_HOME", format!("{home_str}/.local/share")),
        ("XDG_CONFIG_HOME", format!("{home_str}/.config")),
        ("XDG_STATE_HOME", format!("{home_str}/.local/state")),
        ("XDG_CACHE_HOME", format!("{home_str}/.cache")),
        ("XDG_BIN_HOME", format!("{home_str}/.local/bin")),
        ("XDG_DATA_DIRS", "/usr/local/share:/usr/share".into()),
        ("XDG_CONFIG_DIRS", "/etc/xdg".into()),
        ("XDG_RUNTIME_DIR", runtime_dir),
    ];
    for (key, value) in defaults {
        env.entry(OsString::from(key)).or_insert_with(|| OsString::from(value));
    }
    env
}

/// Creates `$XDG_RUNTIME_DIR` with the 0700 mode the XDG spec requires (nix2gpu exported the
/// variable without creating the directory).
pub fn make_user_runtime_dir(env: &BTreeMap<OsString, OsString>) -> Option<Degraded> {
    let dir = PathBuf::from(env.get(OsStr::new("XDG_RUNTIME_DIR"))?);
    dir.parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| ensure_dir(&dir, 0o700, true))
        .err()
        .map(|error| Degraded { path: dir, error })
}

/// The shell for an interactive session: $SHELL, else the account's login shell, else /bin/sh.
pub fn user_shell(env: &BTreeMap<OsString, OsString>, uid: u32, passwd: &Path) -> OsString {
    env.get(OsStr::new("SHELL"))
        .filter(|shell| !shell.is_empty())
        .cloned()
        .or_else(|| {
            accounts::by_uid(passwd, uid)
                .map(|a| a.shell)
                .filter(|shell| {
                    !shell.is_empty() && !shell.ends_with("/nologin") && !shell.ends_with("/false")
                })
                .map(OsString::from)
        })
        .unwrap_or_else(|| OsString::from("/bin/sh"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("nix2gpu-boot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("var")).unwrap();
        root
    }

    #[test]
    fn runtime_dirs_get_their_modes_and_a_second_run_changes_nothing() {
        let root = temp_root("dirs");
        fs::create_dir(root.join("tmp")).unwrap();
        fs::set_permissions(root.join("tmp"), Permissions::from_mode(0o700)).unwrap();
        assert!(make_runtime_dirs(&root).is_empty());
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777, "existing /tmp is fixed");
        assert_eq!(mode("var/tmp"), 0o1777);
        assert_eq!(mode("run/sshd"), 0o755);
        assert_eq!(mode("var/empty"), 0o755);
        assert!(make_runtime_dirs(&root).is_empty(), "idempotent");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_reported_not_fatal() {
        let root = temp_root("file");
        fs::write(root.join("run"), "").unwrap();
        let degraded = make_runtime_dirs(&root);
        let paths: Vec<_> =
            degraded.iter().map(|d| d.path.strip_prefix(&root).unwrap().to_path_buf()).collect();
        assert_eq!(paths, vec![PathBuf::from("run"), PathBuf::from("run/sshd")]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn environment_fills_defaults_and_keeps_what_is_set() {
        let root = temp_root("env");
        let passwd = root.join("passwd");
        fs::write(&passwd, "alice:x:4242:4242::/home/alice:/bin/zsh\n").unwrap();
        let inherited = vec![(OsString::from("TMPDIR"), OsString::from("/scratch"))];
        let env = environment(inherited, 4242, &passwd);
        let get = |k: &str| env.get(&OsString::from(k)).map(|v| v.to_string_lossy().into_owned());
        assert_eq!(get("TMPDIR").as_deref(), Some("/scratch"));
        assert_eq!(get("HOME").as_deref(), Some("/home/alice"));
        assert_eq!(get("XDG_CONFIG_HOME").as_deref(), Some("/home/alice/.config"));
        assert_eq!(get("XDG_RUNTIME_DIR").as_deref(), Some("/run/user/4242"));
        assert_eq!(user_shell(&env, 4242, &passwd), OsString::from("/bin/zsh"));
        fs::remove_dir_all(&root).unwrap();
    }
}

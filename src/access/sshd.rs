//! The `sshd` node: prepares what OpenSSH needs, then becomes sshd (`sshd -D -e`).
//!
//! Every start prepares again (the keys given in the environment, root's password, missing
//! host keys, the config), then execs sshd, so the node's pid is sshd's own: the supervisor's
//! signals reach it directly, and a restarted node picks up changed keys or settings.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::authorized_keys::{self, Source};
use super::files::{self, Owner};
use super::password::{self, RootPassword};
use super::sshd_config::{self, RootLogin};
use super::{find_beside, find_program, note, warn};
use crate::accounts;
use crate::config::builtins::SshNode;
use crate::exit_code;

/// The account files the node reads and edits.
const PASSWD: &str = "/etc/passwd";
const SHADOW: &str = "/etc/shadow";

/// The variables sshd keeps: it builds each session's environment itself, so nothing else of
/// the node's (which the init has already cleared of secrets) needs to reach it.
const SSHD_ENV: [&str; 2] = ["PATH", "TZ"];

/// Runs the node; returns only when sshd could not be started (the exit code).
pub fn run(node: SshNode) -> i32 {
    let path = std::env::var_os("PATH");
    let Some(sshd) = find_program(&node.sshd, path.as_deref()).filter(|p| p.is_file()) else {
        eprintln!(
            "error: the OpenSSH server `{}` was not found (PATH={}): install it in the image or set nix2gpu.ssh.sshd",
            node.sshd,
            path.as_deref().unwrap_or_default().to_string_lossy()
        );
        return exit_code::NOT_FOUND;
    };
    if let Err(failure) = prepare(&node, &sshd, path.as_deref()) {
        eprintln!("error: {failure}");
        return 1;
    }
    let error = Command::new(&sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&node.config_file)
        .env_clear()
        .envs(SSHD_ENV.iter().filter_map(|name| Some((*name, std::env::var_os(name)?))))
        .exec();
    eprintln!("error: cannot run {}: {error}", sshd.display());
    if error.kind() == std::io::ErrorKind::NotFound {
        exit_code::NOT_FOUND
    } else {
        exit_code::NOT_EXECUTABLE
    }
}

/// Keys, password, host keys and config; an error is what sshd cannot run without.
fn prepare(node: &SshNode, sshd: &Path, path: Option<&std::ffi::OsStr>) -> Result<(), String> {
    let root = accounts::by_uid(Path::new(PASSWD), 0);
    let home = PathBuf::from(root.as_ref().map_or("/root", |account| account.home.as_str()));
    let owner = Owner { uid: 0, gid: root.as_ref().map_or(0, |account| account.gid) };
    install_authorized_keys(node, &home, owner);
    let root_login = set_root_password(node);
    let keygen = find_beside("ssh-keygen", sshd, path);
    let (host_keys, problems) = super::host_keys::ensure(&node.host_key_dir, keygen.as_deref());
    for problem in &problems {
        warn(problem);
    }
    if host_keys.is_empty() {
        return Err(format!("no host key in {}: sshd cannot start without one", node.host_key_dir.display()));
    }
    let config = sshd_config::render(&sshd_config::Settings {
        port: node.port,
        host_keys,
        password_auth: node.password_auth,
        root: root_login,
    });
    if let Some(dir) = node.config_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    files::replace(&node.config_file, config.as_bytes(), 0o644, None)
        .map_err(|e| format!("cannot write {}: {e}", node.config_file.display()))?;
    if root_login == RootLogin::EmptyPassword && node.password_auth {
        warn("root can log in over SSH without a password (nix2gpu.ssh.allow_empty_password)");
    }
    Ok(())
}

/// Writes the keys of the configured variables and file to root's authorized_keys. With no
/// source given at all, an authorized_keys already there (baked into the image, on a volume)
/// is left alone.
fn install_authorized_keys(node: &SshNode, home: &Path, owner: Owner) {
    let mut sources = Vec::new();
    for name in &node.authorized_keys_env {
        match std::env::var_os(name).map(OsString::into_string) {
            None => {}
            Some(Ok(text)) if text.trim().is_empty() => {}
            Some(Ok(text)) => sources.push(Source { name: format!("${name}"), text }),
            Some(Err(_)) => warn(format_args!("${name} is not UTF-8 text: its keys are skipped")),
        }
    }
    if let Some(file) = &node.authorized_keys_file {
        match std::fs::read_to_string(file) {
            Ok(text) => sources.push(Source { name: file.display().to_string(), text }),
            Err(e) => warn(format_args!("cannot read the authorized keys file {}: {e}", file.display())),
        }
    }
    if sources.is_empty() && node.authorized_keys_file.is_none() {
        return;
    }
    let merged = authorized_keys::merge(&sources);
    for skipped in &merged.skipped {
        warn(skipped);
    }
    let dir = home.join(".ssh");
    let file = dir.join("authorized_keys");
    let mut text = merged.lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    // A missing home is made private; an existing one keeps its mode (root's home may be /).
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .and_then(|()| files::ensure_dir(&dir, 0o700, Some(owner)))
        .and_then(|()| files::replace(&file, text.as_bytes(), 0o600, Some(owner)));
    match written {
        Ok(()) => note(format_args!(
            "{} authorized key(s) in {} ({} duplicate(s), {} line(s) skipped)",
            merged.lines.len(),
            file.display(),
            merged.duplicates,
            merged.skipped.len()
        )),
        Err(e) => warn(format_args!("cannot write {}: {e}; key logins will not work", file.display())),
    }
}

/// Sets root's entry in /etc/shadow from the settings; returns how root may log in.
fn set_root_password(node: &SshNode) -> RootLogin {
    let password = match &node.root_password_file {
        None => None,
        Some(file) => match password::read(file) {
            Ok(Some(password)) => Some(password),
            Ok(None) => {
                warn(format_args!("the root password file {} is empty: no root password", file.display()));
                None
            }
            Err(failure) => {
                warn(format_args!("{failure}: no root password"));
                None
            }
        },
    };
    let (login, field) = match password.map(|p| password::hash(&p)) {
        Some(Ok(hash)) => {
            if node.allow_empty_password {
                note("root has a password, so allow_empty_password changes nothing");
            }
            (RootLogin::Password, RootPassword::Hash(hash))
        }
        Some(Err(failure)) => {
            warn(format_args!("{failure}: no root password"));
            (RootLogin::KeysOnly, RootPassword::KeysOnly)
        }
        None if node.allow_empty_password => (RootLogin::EmptyPassword, RootPassword::Empty),
        None => (RootLogin::KeysOnly, RootPassword::KeysOnly),
    };
    match password::set_root(Path::new(SHADOW), &field) {
        Ok(changed) => {
            if changed {
                note(format_args!("root's password in {SHADOW}: {}", field.describe()));
            }
            login
        }
        Err(failure) if login == RootLogin::KeysOnly => {
            warn(failure);
            login
        }
        Err(failure) => {
            warn(format_args!("{failure}: root cannot log in with a password"));
            RootLogin::KeysOnly
        }
    }
}

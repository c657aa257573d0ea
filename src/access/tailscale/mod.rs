//! The `tailscale` built-in node (`nix2gpu-init builtin tailscale SETTINGS`): runs `tailscaled`
//! as its child and logs it in through the LocalAPI (see [`login`]); never with the key on a
//! command line, where `ps` shows it.
//!
//! The node lives exactly as long as its tailscaled: it forwards SIGTERM and SIGINT to it, and
//! when tailscaled ends the node exits with its status, so the init restarts both with backoff.
//! tailscaled stays in the node's process group (the init's stop and kill signals reach it
//! directly) and gets SIGTERM if the node itself dies (PR_SET_PDEATHSIG).

use std::ffi::OsString;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid};
use tokio::time::{Instant, sleep_until};

use crate::config::builtins::TailscaleNode;
use crate::exit_code;
use crate::pid1::reaper::{self, ExitStatus};
use crate::pid1::signals::{self, Signals};
use crate::pid1::{forward, is_stop_request};
use crate::spawn::SpawnError;

pub mod ipn;
mod localapi;
mod login;

/// How long tailscaled has to exit after the node asked it to, before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the node; returns its exit code.
pub fn run(node: TailscaleNode) -> i32 {
    // Before any thread or child: SIGCHLD and the stop signals are read from a signalfd.
    if let Err(failure) = signals::block() {
        eprintln!("cannot block signals: {failure}");
        return exit_code::INTERNAL;
    }
    let key = match node.auth_key_file.as_deref().map(read_key).transpose() {
        Ok(key) => key,
        Err(failure) => {
            eprintln!("{failure}");
            return 1;
        }
    };
    // A report left by the last run describes a tailscaled that is gone.
    let _ = fs::remove_file(&node.report_file);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(failure) => {
            eprintln!("cannot start the event loop: {failure}");
            return exit_code::INTERNAL;
        }
    };
    runtime.block_on(supervise(&node, key.as_deref()))
}

/// The auth key: the file's content without surrounding whitespace (nix2gpu passed the path
/// itself as the key). Errors name the file, never its content.
fn read_key(file: &Path) -> Result<String, String> {
    let text = fs::read_to_string(file)
        .map_err(|e| format!("cannot read the auth key from {}: {e}", file.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("the auth key file {} is empty", file.display()));
    }
    Ok(key.to_string())
}

/// Starts tailscaled, logs it in, and waits for it to end.
async fn supervise(node: &TailscaleNode, key: Option<&str>) -> i32 {
    let mut signals = match Signals::open() {
        Ok(signals) => signals,
        Err(failure) => {
            eprintln!("cannot open a signalfd: {failure}");
            return exit_code::INTERNAL;
        }
    };
    if let Err(failure) = prepare_dirs(node) {
        eprintln!("{failure}");
        return 1;
    }
    let tailscaled = match start_tailscaled(node) {
        Ok(pid) => pid,
        Err(failure) => {
            eprintln!(
                "{failure} (install tailscale in the image, or point nix2gpu.tailscale.tailscaled at tailscaled)"
            );
            return failure.exit_code();
        }
    };
    let login = login::log_in(node, key);
    tokio::pin!(login);
    let mut logging_in = true;
    // Set once the node gave up on this tailscaled and asked it to exit.
    let mut kill_at: Option<Instant> = None;
    let mut gave_up = false;
    loop {
        tokio::select! {
            outcome = &mut login, if logging_in => {
                logging_in = false;
                if let Err(failure) = outcome {
                    eprintln!("{failure}; stopping tailscaled to start over");
                    forward(nix::libc::SIGTERM, tailscaled, false);
                    kill_at = Some(Instant::now() + STOP_GRACE);
                    gave_up = true;
                }
            }
            () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                kill_at = None;
                forward(nix::libc::SIGKILL, tailscaled, false);
            }
            received = signals.recv() => match received {
                Ok(received) if received.signo == nix::libc::SIGCHLD => {
                    if let Some(status) = ended(tailscaled) {
                        eprintln!("tailscaled {status}");
                        return if gave_up { 1 } else { status.code() };
                    }
                }
                Ok(received) if is_stop_request(received.signo) => forward(received.signo, tailscaled, false),
                Ok(_) => {}
                Err(failure) => {
                    eprintln!("cannot read signals: {failure}");
                    return exit_code::INTERNAL;
                }
            },
        }
    }
}

/// The state directory (private: it holds the machine's keys) and the socket's directory.
fn prepare_dirs(node: &TailscaleNode) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&node.state_dir)
        .map_err(|e| format!("cannot create the state directory {}: {e}", node.state_dir.display()))?;
    if let Some(dir) = node.socket.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create the socket's directory {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// tailscaled's command line: state file, socket, and userspace networking when asked.
fn tailscaled_args(node: &TailscaleNode) -> Vec<OsString> {
    let flag = |name: &str, path: &Path| {
        let mut arg = OsString::from(name);
        arg.push(path.as_os_str());
        arg
    };
    let mut args =
        vec![flag("--state=", &node.state_dir.join("tailscaled.state")), flag("--socket=", &node.socket)];
    if node.userspace_networking {
        args.push("--tun=userspace-networking".into());
    }
    args
}

/// Starts tailscaled (found on PATH unless the setting is a path), in the node's process group.
fn start_tailscaled(node: &TailscaleNode) -> Result<Pid, SpawnError> {
    let parent = getpid();
    let mut command = Command::new(&node.tailscaled);
    command.args(tailscaled_args(node));
    // SAFETY: runs in the forked child before exec and only makes async-signal-safe system
    // calls (sigprocmask, prctl, getppid); nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            signals::unblock_in_child()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // The node died before the line above: nobody would send that signal.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    match command.spawn() {
        // Its status is collected by `ended`, after SIGCHLD; the handle is not needed.
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(error) => {
            Err(SpawnError { program: node.tailscaled.clone(), error, path_var: std::env::var("PATH").ok() })
        }
    }
}

/// How tailscaled ended, if it has.
fn ended(tailscaled: Pid) -> Option<ExitStatus> {
    reaper::reap().exited.into_iter().find(|(pid, _)| *pid == tailscaled).map(|(_, status)| status)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn tailscaled_gets_state_socket_and_the_tun_choice_and_never_the_key() {
        let mut node = TailscaleNode {
            auth_key_file: Some(PathBuf::from("/run/nix2gpu/secrets/tailscale_authkey")),
            hostname: None,
            state_dir: PathBuf::from("/var/lib/tailscale"),
            socket: PathBuf::from("/run/tailscale/tailscaled.sock"),
            userspace_networking: true,
            ssh: false,
            tags: Vec::new(),
            accept_routes: false,
            tailscaled: "tailscaled".into(),
            report_file: PathBuf::from("/run/nix2gpu/tailscale.json"),
        };
        assert_eq!(
            tailscaled_args(&node),
            [
                "--state=/var/lib/tailscale/tailscaled.state",
                "--socket=/run/tailscale/tailscaled.sock",
                "--tun=userspace-networking"
            ]
        );
        node.userspace_networking = false;
        assert_eq!(tailscaled_args(&node).len(), 2);
    }

    #[test]
    fn the_key_is_the_trimmed_content_and_errors_never_show_it() {
        let dir = std::env::temp_dir().join(format!("nix2gpu-tskey-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        fs::write(&file, "  tskey-auth-secret\n").unwrap();
        assert_eq!(read_key(&file).unwrap(), "tskey-auth-secret");
        fs::write(&file, "\n \n").unwrap();
        assert_eq!(read_key(&file).unwrap_err(), format!("the auth key file {} is empty", file.display()));
        let missing = read_key(&dir.join("missing")).unwrap_err();
        assert!(missing.starts_with("cannot read the auth key from "), "{missing}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Readiness notification with systemd's notify protocol (sd_notify(3)), for processes with
//! `notify: true`.
//!
//! The init listens on one unix datagram socket; a notify process finds it in `NOTIFY_SOCKET`.
//! A datagram holds `KEY=VALUE` assignments, one per line: `READY=1`, `STATUS=...`,
//! `WATCHDOG=1` and `STOPPING=1` mean something to the init, anything else is ignored (as the
//! protocol asks). The socket has `SO_PASSCRED` on, so the kernel attaches the sender's pid to
//! every datagram: the supervisor counts a notification only for the node that pid belongs to.
//! Descriptors sent along (the pipe of `systemd-notify`'s `BARRIER=1`) are closed as soon as
//! they arrive, after the datagrams before them were read, which is what the barrier waits for.
//!
//! Hand-written on nix's `recvmsg`: tokio's datagram sockets do not pass ancillary data on.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::fswatch::{self, Removal};
use crate::graph::Notice;

/// Where the socket is when `$NIX2GPU_NOTIFY_SOCKET` does not say otherwise. Directly in /run,
/// so that a process running as another user can reach it (the init's own directory is
/// root-only).
pub const DEFAULT_PATH: &str = "/run/nix2gpu-notify.sock";
/// The environment variable naming another socket path (several inits side by side).
pub const PATH_ENV: &str = "NIX2GPU_NOTIFY_SOCKET";
/// The variable a notify process finds the socket in (systemd's name).
pub const SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The variable that tells a process its watchdog period, in microseconds (systemd's name).
pub const WATCHDOG_ENV: &str = "WATCHDOG_USEC";
/// The longest datagram read; a longer one is dropped whole (notifications are a few lines).
pub const MAX_DATAGRAM: usize = 4096;
/// `STATUS=` texts are cut to this many characters.
pub const MAX_STATUS_CHARS: usize = 200;
/// Descriptors one datagram may carry and still be closed by us; the kernel closes any beyond.
const MAX_FDS: usize = 8;
/// Datagrams read ahead of the supervisor loop, at most; then the socket's own queue fills and
/// senders wait, rather than the init's memory growing.
pub const QUEUE: usize = 64;

/// The socket path: `$NIX2GPU_NOTIFY_SOCKET`, else [`DEFAULT_PATH`].
pub fn path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

/// One notification as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's pid in the init's pid namespace, from the kernel; `None` or 0 when the
    /// kernel could not tell (a sender in another pid namespace).
    pub sender: Option<i32>,
    pub text: Vec<u8>,
}

/// Binds the socket at `path` (mode 0666: whoever sends, the sender's pid decides what
/// counts). A missing directory is created (0755). A socket file left by an init that was
/// killed (nobody receives on it) is replaced; a live one is never taken over.
pub fn bind(path: &Path) -> io::Result<UnixDatagram> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    if fs::symlink_metadata(path).is_ok() {
        if UnixDatagram::unbound()?.connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another init receives on {}; not taking it over", path.display()),
            ));
        }
        fs::remove_file(path)?;
    }
    let socket = UnixDatagram::bind(path)?;
    fs::set_permissions(path, Permissions::from_mode(0o666))?;
    setsockopt(&socket, sockopt::PassCred, &true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Reads datagrams as they come and hands them to `sink`, until `sink` is closed. When the
/// socket's file at `path` is deleted (a start-up script that cleans /run), it is bound again:
/// a notify process sends to the path each time, so its next datagram finds the new socket.
pub fn serve(path: PathBuf, socket: UnixDatagram, sink: mpsc::Sender<Datagram>) -> impl Future<Output = ()> {
    // Watched now, not at the task's first poll, which comes after processes started (see
    // control::socket::serve).
    let removal = watch(&path);
    serve_watched(path, socket, removal, sink)
}

/// [`serve`], with the socket's watch already in place.
async fn serve_watched(
    path: PathBuf,
    socket: UnixDatagram,
    mut removal: Option<Removal>,
    sink: mpsc::Sender<Datagram>,
) {
    let Some(mut socket) = register(socket) else { return };
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        tokio::select! {
            ready = socket.readable() => {
                let Ok(mut ready) = ready else { return };
                match ready.try_io(|socket| receive(socket.get_ref(), &mut buffer)) {
                    Ok(Ok(Some(datagram))) => {
                        if sink.send(datagram).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(failure)) => debug!("notify socket: {failure}"),
                    Err(_would_block) => {}
                }
            }
            () = fswatch::removed(removal.as_ref()) => {
                removal = None;
                warn!("the notify socket {} was deleted; binding it again", path.display());
                match bind(&path).map(register) {
                    Ok(Some(again)) => {
                        socket = again;
                        removal = watch(&path);
                        info!("notify socket {} bound again", path.display());
                    }
                    Ok(None) => {}
                    Err(failure) => warn!(
                        "cannot bind the notify socket {} again ({failure}): notify processes will not become ready",
                        path.display()
                    ),
                }
            }
        }
    }
}

/// The socket registered with the event loop, or `None` with a warning.
fn register(socket: UnixDatagram) -> Option<AsyncFd<UnixDatagram>> {
    // SAFETY: the AsyncFd owns the socket and never replaces it, so the registered descriptor
    // stays the same open socket for the AsyncFd's whole life.
    match unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) } {
        Ok(socket) => Some(socket),
        Err(failure) => {
            let failure = failure.into_parts().1;
            warn!("cannot watch the notify socket ({failure}): notifications will not arrive");
            None
        }
    }
}

/// A watch for the socket's removal, or `None` (with a warning) if it cannot be set up.
fn watch(path: &Path) -> Option<Removal> {
    Removal::watch(path)
        .map_err(|failure| {
            warn!(
                "cannot watch the notify socket {} ({failure}): if it is deleted, it stays deleted",
                path.display()
            )
        })
        .ok()
}

/// One datagram, or `None` for one that was too long (dropped whole, never half-read).
fn receive(socket: &UnixDatagram, buffer: &mut [u8]) -> io::Result<Option<Datagram>> {
    let mut control = nix::cmsg_space!(nix::libc::ucred, [RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buffer)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut control), flags)?;
    let mut sender = None;
    for item in message.cmsgs()? {
        match item {
            ControlMessageOwned::ScmCredentials(credentials) => sender = Some(credentials.pid()),
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    // SAFETY: the kernel has just installed this descriptor in our table for
                    // this message; nothing else knows it, so closing it here is its only use.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            _ => {}
        }
    }
    let (length, truncated) = (message.bytes, message.flags.contains(MsgFlags::MSG_TRUNC));
    if truncated {
        debug!("dropping a notification longer than {MAX_DATAGRAM} bytes from pid {sender:?}");
        return Ok(None);
    }
    Ok(Some(Datagram { sender, text: buffer.get(..length).unwrap_or_default().to_vec() }))
}

/// The assignments of one datagram that mean something to the init, in order.
pub fn parse(text: &[u8]) -> Vec<Notice> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| match line.split_once('=')? {
            ("READY", "1") => Some(Notice::Ready),
            ("WATCHDOG", "1") => Some(Notice::Watchdog),
            ("STOPPING", "1") => Some(Notice::Stopping),
            ("STATUS", status) => Some(Notice::Status(printable(status))),
            _ => None,
        })
        .collect()
}

/// Status text fit for a one-line table cell: control characters become spaces, and it is cut
/// to [`MAX_STATUS_CHARS`].
fn printable(text: &str) -> String {
    text.chars().take(MAX_STATUS_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_that_mean_something_are_read_in_order_and_the_rest_ignored() {
        let text = b"STATUS=loading model\nMAINPID=42\nREADY=1\nWATCHDOG=1\nSTOPPING=1\nREADY=0\nWATCHDOG=trigger\nnonsense\n";
        assert_eq!(
            parse(text),
            [Notice::Status("loading model".into()), Notice::Ready, Notice::Watchdog, Notice::Stopping]
        );
        assert_eq!(parse(b""), []);
        assert_eq!(parse(b"STATUS="), [Notice::Status(String::new())]);
    }

    #[test]
    fn status_text_stays_on_one_line_and_short() {
        assert_eq!(parse(b"STATUS=a\tb\x1b[31mc"), [Notice::Status("a b [31mc".into())]);
        assert_eq!(parse(b"STATUS=caf\xc3\xa9 \xff"), [Notice::Status("caf\u{e9} \u{fffd}".into())]);
        let long = format!("STATUS={}", "x".repeat(1000));
        assert_eq!(parse(long.as_bytes()), [Notice::Status("x".repeat(MAX_STATUS_CHARS))]);
    }

    /// A scratch socket path.
    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nix2gpu-notify-{name}-{}.sock", std::process::id()))
    }

    #[test]
    fn datagrams_arrive_with_the_senders_pid_and_passed_descriptors_are_closed() {
        let path = scratch("recv");
        let socket = bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let mut buffer = vec![0; MAX_DATAGRAM];
        let datagram = receive(&socket, &mut buffer).unwrap().unwrap();
        assert_eq!(datagram.sender, Some(std::process::id() as i32));
        assert_eq!(datagram.text, b"READY=1\nSTATUS=up");

        // A barrier: a pipe's write end passed along; once we close our copy, the reader sees
        // the end of the pipe.
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let fds = [write_end.as_raw_fd()];
        let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"BARRIER=1")];
        nix::sys::socket::sendmsg(
            sender.as_raw_fd(),
            &iov,
            &rights,
            MsgFlags::empty(),
            Some(&nix::sys::socket::UnixAddr::new(&path).unwrap()),
        )
        .unwrap();
        drop(write_end);
        assert_eq!(receive(&socket, &mut buffer).unwrap().unwrap().text, b"BARRIER=1");
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&read_end, &mut byte).unwrap(), 0, "our copy was closed");

        let error = receive(&socket, &mut buffer).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        sender.send_to(&vec![b'x'; MAX_DATAGRAM + 1], &path).unwrap();
        assert_eq!(receive(&socket, &mut buffer).unwrap(), None, "too long: dropped whole");
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
        let path = scratch("stale");
        let live = bind(&path).unwrap();
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(live);
        let again = bind(&path).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let metadata = fs::metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o666);
        drop(again);
        fs::remove_file(&path).unwrap();
    }
}

//! The control socket: a unix socket, root-only (the directory 0700, the socket 0600), one
//! request per connection.
//!
//! Every connection is served by its own task with bounds: the request must arrive whole within
//! [`REQUEST_TIMEOUT`] and be at most [`MAX_REQUEST_BYTES`]; each write of the answer must
//! finish within [`WRITE_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once, and beyond
//! that a connection is closed at once. A malformed, oversized, slow or abandoned request gets
//! an error or is dropped; the supervisor loop never waits for a client.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::protocol::{Envelope, MAX_REQUEST_BYTES, Response, parse_request};
use super::{Answer, ControlHandle, LogLine};
use crate::fswatch::{self, Removal};

/// Where the socket is when `$NIX2GPU_CONTROL_SOCKET` does not say otherwise.
pub const DEFAULT_PATH: &str = "/run/nix2gpu/control.sock";
/// The environment variable naming another socket path (several inits side by side in tests).
pub const PATH_ENV: &str = "NIX2GPU_CONTROL_SOCKET";
/// A request must arrive whole within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Each write of an answer must finish within this, or the client is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, at most.
pub const MAX_CONNECTIONS: usize = 64;
/// The pause after a failed accept (EMFILE: no descriptor left), so that the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The socket path: `$NIX2GPU_CONTROL_SOCKET`, else [`DEFAULT_PATH`].
pub fn path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

/// Binds the socket at `path`. Its directory is created root-only (0700) when missing; an
/// existing directory is left as it is (it may be shared, like /tmp) and the socket's own 0600
/// keeps others out. A socket file left by an init that was killed (nobody answers on it) is
/// replaced; a live one is never taken over: that is an error naming it.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another init answers on {}; not taking it over", path.display()),
                ));
            }
            Err(_) => fs::remove_file(path)?,
        }
    }
    // bind(2) creates the socket 0600 under this umask, rather than open to everyone until a
    // chmod: bound again while services run, it must never be reachable by them, not even for
    // a moment. (The umask is the process's; no other thread creates files meanwhile.)
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(umask);
    listener
}

/// Accepts connections on `listener`, bound at `path`, until the task is dropped. When the
/// socket's file is deleted or moved away (a start-up script that cleans /run), it is bound
/// again at once: `status`, and `health` in Docker's HEALTHCHECK, reach the init only through
/// it, and a container whose health check cannot connect is declared unhealthy.
pub fn serve(path: PathBuf, listener: UnixListener, control: ControlHandle) -> impl Future<Output = ()> {
    // Watched before the task is spawned, not at its first poll: that comes after the first
    // processes started, and work of the init while a child still shares its memory (before
    // its exec) slows the child down (see spawn::child).
    let removal = watch(&path);
    serve_watched(path, listener, removal, control)
}

/// [`serve`], with the socket's watch already in place.
async fn serve_watched(
    path: PathBuf,
    mut listener: UnixListener,
    mut removal: Option<Removal>,
    control: ControlHandle,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_in_slot(stream, &slots, &control),
                Err(error) => {
                    // EMFILE and the like leave the connection queued: accepting again at once
                    // would spin.
                    debug!("control socket: accept failed: {error}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            () = fswatch::removed(removal.as_ref()) => {
                warn!("the control socket {} was deleted; binding it again", path.display());
                removal = None;
                if let Some((again, watched)) = bind_again(&path) {
                    listener = again;
                    removal = watched;
                    info!("control socket {} bound again", path.display());
                }
            }
        }
    }
}

/// Binds the socket at `path` again and watches it; tries again while it disappears before its
/// watch is in place (a cleanup still running), a few times. `None` (with a warning) when it
/// cannot be bound.
fn bind_again(path: &Path) -> Option<(UnixListener, Option<Removal>)> {
    const TRIES: usize = 3;
    for _ in 0..TRIES {
        let listener = match bind(path) {
            Ok(listener) => listener,
            Err(error) => {
                warn!(
                    "cannot bind the control socket {} again ({error}): status, health and logs will not answer",
                    path.display()
                );
                return None;
            }
        };
        if fs::symlink_metadata(path).is_ok() {
            return Some((listener, watch(path)));
        }
    }
    warn!("the control socket {} keeps being deleted; giving up on it", path.display());
    None
}

/// A watch for the socket's removal, or `None` (with a warning) if it cannot be set up.
fn watch(path: &Path) -> Option<Removal> {
    match Removal::watch(path) {
        Ok(removal) => Some(removal),
        Err(error) => {
            warn!(
                "cannot watch the control socket {} ({error}): if it is deleted, it stays deleted",
                path.display()
            );
            None
        }
    }
}

/// Serves one connection in a task of its own, or closes it at once when all slots are taken.
fn serve_in_slot(stream: UnixStream, slots: &Arc<Semaphore>, control: &ControlHandle) {
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        debug!("control socket: too many connections; closing a new one");
        return;
    };
    let control = control.clone();
    tokio::spawn(async move {
        serve_one(stream, &control).await;
        drop(slot);
    });
}

async fn serve_one(stream: UnixStream, control: &ControlHandle) {
    let (mut reader, mut writer) = stream.into_split();
    let request = match timeout(REQUEST_TIMEOUT, read_request(&mut reader)).await {
        Ok(Ok(envelope)) => envelope,
        Ok(Err(message)) => {
            let _ = write_line(&mut writer, &Response::Error { message }).await;
            return;
        }
        Err(_) => return,
    };
    match control.ask(request.request).await {
        Answer::One(response) => {
            let _ = write_line(&mut writer, &response).await;
        }
        Answer::Lines { history, follow } => {
            for line in history {
                if write_line(&mut writer, &Response::Log(line)).await.is_err() {
                    return;
                }
            }
            if let Some(mut live) = follow {
                // A follower that went away (Ctrl-C) is let go at once, not at the next line,
                // which in a quiet container may never come: until then it would hold a slot
                // and a descriptor. After the request a client sends nothing, so anything
                // readable means it closed its end.
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        line = live.recv() => {
                            let Some(line) = line else { break };
                            if write_line(&mut writer, &Response::Log(line)).await.is_err() {
                                return;
                            }
                        }
                        _ = reader.read(&mut probe) => return,
                    }
                }
            }
            let _ = write_line(&mut writer, &Response::Done { message: "end of log".into() }).await;
        }
    }
}

/// Reads one request line, refusing what is too long, not JSON, or of another version.
async fn read_request(reader: &mut tokio::net::unix::OwnedReadHalf) -> Result<Envelope, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(reader.take(MAX_REQUEST_BYTES as u64 + 1));
    limited.read_until(b'\n', &mut line).await.map_err(|e| format!("cannot read the request: {e}"))?;
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    parse_request(&line)
}

async fn write_line<W: AsyncWriteExt + Unpin>(writer: &mut W, response: &Response) -> io::Result<()> {
    // Serializing these plain types cannot fail.
    let mut text = serde_json::to_vec(response).unwrap_or_default();
    text.push(b'\n');
    match timeout(WRITE_TIMEOUT, writer.write_all(&text)).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// A follow stream's lines arrive through this many slots; a client that reads slower loses
/// lines (and is told so) rather than making the init buffer without bound.
pub const FOLLOW_BUFFER: usize = 1024;

/// A log line for a client, from a node's name and a line of its output.
pub fn log_line(name: &str, stream: &str, time: std::time::SystemTime, text: &[u8]) -> LogLine {
    LogLine {
        name: name.to_string(),
        stream: stream.to_string(),
        ts: humantime::format_rfc3339_millis(time).to_string(),
        msg: String::from_utf8_lossy(text).into_owned(),
    }
}

//! A client of tailscaled's LocalAPI: HTTP/1.1 over its unix socket, on hyper (already in the
//! binary for probes and the health endpoint). The tailscale-localapi crate only GETs (status,
//! whois), and login needs POST `start` and the streaming `watch-ipn-bus` (crates.md §1.6).
//!
//! tailscaled accepts a request when its Host is `local-tailscaled.sock` (or empty) and it has
//! no Referer or Origin (tailscale's `ipn/localapi`); who may write is decided by the socket's
//! peer credentials, so nothing else is needed from a root client.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::time::{Instant, timeout_at};

use super::ipn::Notify;

/// The Host every LocalAPI request carries.
const HOST_NAME: &str = "local-tailscaled.sock";
/// The most a whole answer (status, errors) or one bus notification may take in memory.
const MAX_BODY: usize = 4 << 20;
/// How long one request-and-answer may take once tailscaled listens.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// tailscaled's LocalAPI at `socket`.
pub struct LocalApi {
    socket: PathBuf,
}

impl LocalApi {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_path_buf() }
    }

    /// GET `path`, expecting 200 and a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let what = format!("GET {path}");
        let answer = self.bounded(&what, self.exchange(Method::GET, path, None)).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| format!("{what}: the answer is not what tailscaled sends: {e}"))
    }

    /// POST `body` (JSON) to `path`, expecting a 2xx answer.
    pub async fn post(&self, path: &str, body: Option<&serde_json::Value>) -> Result<(), String> {
        let what = format!("POST {path}");
        let body = body.map(|json| Bytes::from(json.to_string()));
        self.bounded(&what, self.exchange(Method::POST, path, body)).await.map(drop)
    }

    /// Subscribes to the IPN bus with the `ipn.NotifyWatchOpt` bits in `mask`.
    pub async fn watch(&self, mask: u64) -> Result<Watch, String> {
        let path = format!("/localapi/v0/watch-ipn-bus?mask={mask}");
        let what = format!("GET {path}");
        let response = timeout_at(Instant::now() + REQUEST_TIMEOUT, self.send(Method::GET, &path, None))
            .await
            .map_err(|_| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = read_body(response.into_body()).await.unwrap_or_default();
            return Err(format!(
                "{what}: tailscaled answered {status}: {}",
                String::from_utf8_lossy(&text).trim()
            ));
        }
        Ok(Watch { body: response.into_body(), pending: BytesMut::new() })
    }

    async fn bounded(
        &self,
        what: &str,
        exchange: impl Future<Output = Result<Bytes, String>>,
    ) -> Result<Bytes, String> {
        timeout_at(Instant::now() + REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{what}: {e}"))
    }

    /// One request; the whole answer when it is a success, its text in the error otherwise.
    async fn exchange(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Bytes, String> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let answer = read_body(response.into_body()).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!("tailscaled answered {status}: {}", String::from_utf8_lossy(&answer).trim()))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, String> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        // The connection ends with the answer (or when a watch is dropped).
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header(HOST, HOST_NAME);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        sender.send_request(request).await.map_err(|e| format!("no answer: {e}"))
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("cannot read the answer: {e}"))
}

/// The IPN bus: one JSON `ipn.Notify` per line, for as long as tailscaled runs.
pub struct Watch {
    body: Incoming,
    pending: BytesMut,
}

impl Watch {
    /// The next notification; `None` when tailscaled closed the stream.
    pub async fn next(&mut self) -> Result<Option<Notify>, String> {
        loop {
            if let Some(line) = take_line(&mut self.pending) {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| format!("a notification from tailscaled is not JSON: {e}"));
            }
            if self.pending.len() > MAX_BODY {
                return Err(format!("a notification from tailscaled is over {MAX_BODY} bytes"));
            }
            let Some(frame) = self.body.frame().await else { return Ok(None) };
            let frame = frame.map_err(|e| format!("the IPN bus broke: {e}"))?;
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }
}

/// Removes and returns the first complete line of `pending`, without its newline.
fn take_line(pending: &mut BytesMut) -> Option<BytesMut> {
    let end = memchr::memchr(b'\n', pending)?;
    let mut line = pending.split_to(end + 1);
    line.truncate(end);
    Some(line)
}

/// An inotify instance as tokio's `AsyncFd` wants it (nix's only offers `AsFd`). The tailscale
/// node is a child of the init, not PID 1, and waits once: what closing an inotify instance
/// costs (see [`crate::fswatch`]) does not matter here.
struct Watcher(Inotify);

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    /// A non-blocking, close-on-exec inotify instance registered with the event loop.
    fn register() -> io::Result<AsyncFd<Watcher>> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the Watcher owns the inotify descriptor and never replaces or closes it, so
        // the fd stays the same open file for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(Watcher(inotify), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }
}

/// Waits until something listens on `socket`, for at most `limit`: tries once, then again each
/// time inotify reports the socket's name created, moved in, or its mode changed in its
/// directory. tailscaled removes a stale socket, listens, then chmods the new one: the chmod
/// comes after listen(2), so the last event always finds it listening.
pub async fn wait_for_socket(socket: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let (dir, name) = match (socket.parent(), socket.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => (dir, name),
        _ => return Err(format!("the socket path {} has no directory", socket.display())),
    };
    let events = Watcher::register().map_err(|e| format!("cannot watch {}: inotify: {e}", dir.display()))?;
    events
        .get_ref()
        .0
        .add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    loop {
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        loop {
            let Ok(ready) = timeout_at(deadline, events.readable()).await else {
                return Err(format!("tailscaled did not listen on {} within {limit:?}", socket.display()));
            };
            let mut guard = ready.map_err(|e| format!("watching {}: {e}", dir.display()))?;
            match guard.try_io(|watcher| watcher.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) if events.iter().any(|event| event.name.as_deref() == Some(name)) => break,
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(e)) => return Err(format!("watching {}: {e}", dir.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_taken_whole_and_partial_ones_wait() {
        let mut pending = BytesMut::from(&b"{\"State\":2}\n{\"Sta"[..]);
        assert_eq!(take_line(&mut pending).as_deref(), Some(&b"{\"State\":2}"[..]));
        assert_eq!(take_line(&mut pending), None);
        pending.extend_from_slice(b"te\":6}\n");
        assert_eq!(take_line(&mut pending).as_deref(), Some(&b"{\"State\":6}"[..]));
        assert!(pending.is_empty());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nix2gpu-localapi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_wait_ends_when_a_listener_appears_and_is_bounded_otherwise() {
        let dir = temp_dir("wait");
        let socket = dir.join("tailscaled.sock");
        // A stale socket (nobody listens) does not end the wait; the new one does.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        runtime().block_on(async {
            let listen = {
                let socket = socket.clone();
                async move {
                    tokio::task::yield_now().await;
                    std::fs::remove_file(&socket).unwrap();
                    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
                    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .unwrap();
                    listener
                }
            };
            let (waited, _listener) = tokio::join!(wait_for_socket(&socket, Duration::from_secs(10)), listen);
            assert_eq!(waited, Ok(()));
        });
        let missing = dir.join("never.sock");
        let waited = runtime().block_on(wait_for_socket(&missing, Duration::from_millis(50)));
        assert!(waited.unwrap_err().contains("did not listen on"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

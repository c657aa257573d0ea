//! The HTTP endpoint (`nix2gpu.health.listen`): `GET /healthz`, `/readyz`, `/status` and
//! `/metrics`, over HTTP/1.1.
//!
//! Every answer comes from the supervisor loop through the [`ControlHandle`] (a `Health` or
//! `Status` request), so nothing is served that `nix2gpu-init status` would not show: no
//! environment, no command line, no secret.
//!
//! The init is PID 1, so no client may hold it up, slow or hostile:
//! - each connection is served in its own task; the accept loop never waits for one;
//! - at most 64 connections at a time: one beyond that is closed at once, unanswered;
//! - the request head must arrive within 5 s of connecting (hyper's `header_read_timeout`,
//!   which also runs while nothing at all has arrived) and fit in 8 KiB (else 431); request
//!   bodies are never read;
//! - one request per connection (no keep-alive), and a connection lasts at most 15 s from
//!   accept to close, whatever the client does;
//! - the loop's answer is awaited at most 2 s (then 503: that is what `/healthz` is for);
//! - any error (garbage, a reset, a timeout) ends that connection and nothing else.
//!
//! Only `GET` (and `HEAD`, which HTTP requires with it) is served: other methods get 405,
//! other paths 404.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{Answer, ControlHandle, Request, Response, StatusReport, metrics};

/// The time a client has to send its request head, from the moment it connects.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection lasts, from accept to close.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// The longest the supervisor loop's answer is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at the same time.
const MAX_CONNECTIONS: usize = 64;
/// The largest request head accepted (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// hyper's read buffer per connection (its minimum is 8 KiB).
const MAX_BUFFER_BYTES: usize = 16 * 1024;
/// The most header fields in a request.
const MAX_HEADERS: usize = 32;
/// The pause after a failed accept (such as EMFILE), so that the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

type Reply = hyper::Response<Full<Bytes>>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The bounds of [`serve`]; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    connection_deadline: Duration,
    answer_timeout: Duration,
    max_connections: usize,
}

impl Limits {
    const DEFAULT: Self = Self {
        header_read_timeout: HEADER_READ_TIMEOUT,
        connection_deadline: CONNECTION_DEADLINE,
        answer_timeout: ANSWER_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
    };
}

/// Listens on `listen`: an IP address and a port (`0.0.0.0:8080`, `127.0.0.1:9100`,
/// `[::]:8080`). Names are refused: PID 1 is a static binary without NSS and does no DNS.
pub async fn bind(listen: &str) -> io::Result<TcpListener> {
    let address: SocketAddr = listen.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{listen}` is not an IP address and a port, such as `0.0.0.0:8080` or `[::]:8080` (no DNS \
                 lookups)"
            ),
        )
    })?;
    TcpListener::bind(address)
        .await
        .map_err(|error| io::Error::new(error.kind(), format!("cannot listen on {address}: {error}")))
}

/// Serves the endpoint on `listener` until the task is dropped or aborted (connections in
/// progress then finish on their own, within their deadline). Never returns on its own:
/// errors end one connection, not the loop.
pub async fn serve(listener: TcpListener, control: ControlHandle) {
    serve_with(listener, control, Limits::DEFAULT).await;
}

/// The JSON of `GET /status`: the report, pretty-printed, with a final newline. The CLI's
/// `status --json` prints the same.
pub fn status_json(report: &StatusReport) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(text) => text + "\n",
        // Not reachable with these types (string keys only); never panic in PID 1.
        Err(error) => format!("{{\"error\": {:?}}}\n", error.to_string()),
    }
}

async fn serve_with(listener: TcpListener, control: ControlHandle, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!("health endpoint: accept failed: {error}");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        // Beyond the limit the connection is closed (dropped) at once.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let connection = serve_connection_with(stream, control.clone(), limits);
        tokio::spawn(async move {
            connection.await;
            drop(slot);
        });
    }
}

/// Serves one connection with the endpoint's limits: one request read, answered, then the
/// connection closed, all within the connection deadline. `io` is the accepted TCP stream, or
/// any byte stream that stands in for one (the fuzz target's in-memory pipe).
pub async fn serve_connection<I>(io: I, control: ControlHandle)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_with(io, control, Limits::DEFAULT).await;
}

async fn serve_connection_with<I>(io: I, control: ControlHandle, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES)
        .max_headers(MAX_HEADERS);
    let answer_timeout = limits.answer_timeout;
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let control = control.clone();
        async move {
            // The body (if any) is dropped unread; the connection closes after the answer.
            let reply = respond(request.method(), request.uri().path(), &control, answer_timeout).await;
            Ok::<_, Infallible>(reply)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(limits.connection_deadline, connection).await;
}

/// The endpoints.
#[derive(Clone, Copy)]
enum Route {
    Healthz,
    Readyz,
    Status,
    Metrics,
}

async fn respond(method: &Method, path: &str, control: &ControlHandle, wait: Duration) -> Reply {
    let route = match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => return text(StatusCode::NOT_FOUND, "not found: try /healthz, /readyz, /status or /metrics\n"),
    };
    if method != Method::GET && method != Method::HEAD {
        let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        reply.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    let request = match route {
        Route::Healthz | Route::Readyz => Request::Health,
        Route::Status | Route::Metrics => Request::Status,
    };
    let response = match ask(control, request, wait).await {
        Ok(response) => response,
        Err(message) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n")),
    };
    match (route, response) {
        (Route::Healthz, Response::Health(_)) => text(StatusCode::OK, "ok\n"),
        (Route::Readyz, Response::Health(health)) if health.ready => text(StatusCode::OK, "ready\n"),
        (Route::Readyz, Response::Health(health)) if health.reasons.is_empty() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
        (Route::Readyz, Response::Health(health)) => {
            let reasons: String = health.reasons.iter().map(|reason| format!("{reason}\n")).collect();
            text(StatusCode::SERVICE_UNAVAILABLE, reasons)
        }
        (Route::Status, Response::Status(report)) => reply(StatusCode::OK, JSON, status_json(&report)),
        (Route::Metrics, Response::Status(report)) => {
            reply(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render(&report))
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "the init gave an unexpected answer\n"),
    }
}

/// The loop's answer to `request`, or why there is none (it is busy, gone, or too slow).
async fn ask(control: &ControlHandle, request: Request, wait: Duration) -> Result<Response, String> {
    match tokio::time::timeout(wait, control.ask(request)).await {
        Ok(Answer::One(Response::Error { message })) => Err(message),
        Ok(Answer::One(response)) => Ok(response),
        Ok(Answer::Lines { .. }) => Err("the init gave an unexpected answer".into()),
        Err(_) => Err(format!("the init did not answer within {}", humantime::format_duration(wait))),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, TEXT, body)
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = hyper::Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    use super::*;
    use crate::control::{Ask, HealthReport, NodeReport};

    /// Every wait in these tests is bounded by this.
    const BOUND: Duration = Duration::from_secs(10);

    fn report() -> StatusReport {
        use crate::control::metrics::tests::node;
        StatusReport {
            nodes: vec![
                NodeReport { pid: Some(41), ready: true, uptime_seconds: Some(12.5), ..node("web", "ready") },
                NodeReport { exit_code: Some(0), ..node("migrate", "completed") },
                NodeReport {
                    restarts: 4,
                    exit_code: Some(3),
                    reason: Some("exited with 3".into()),
                    ..node("worker", "backoff")
                },
            ],
            platform: None,
            gpu: Some(serde_json::json!({"devices": 0})),
            tailscale: None,
        }
    }

    fn not_ready() -> HealthReport {
        HealthReport {
            ready: false,
            reasons: vec!["worker: backoff (exited with 3)".into(), "db: starting".into()],
        }
    }

    /// A stand-in for the supervisor loop: answers `Status` with [`report`] and `Health` with
    /// whatever `health` holds at the time.
    fn fake_loop(health: Arc<Mutex<HealthReport>>) -> ControlHandle {
        let (control, mut asks) = ControlHandle::new();
        tokio::spawn(async move {
            while let Some(Ask { request, reply }) = asks.recv().await {
                let response = match request {
                    Request::Status => Response::Status(report()),
                    Request::Health => Response::Health(health.lock().unwrap().clone()),
                    _ => Response::Error { message: "not in this test".into() },
                };
                let _ = reply.send(Answer::One(response));
            }
        });
        control
    }

    async fn start(control: ControlHandle, limits: Limits) -> SocketAddr {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, control, limits));
        address
    }

    async fn ready_server(limits: Limits) -> (SocketAddr, Arc<Mutex<HealthReport>>) {
        let health = Arc::new(Mutex::new(not_ready()));
        (start(fake_loop(Arc::clone(&health)), limits).await, health)
    }

    /// An answer as the client saw it.
    #[derive(Debug)]
    struct Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answered {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    fn parse(bytes: &[u8]) -> Option<Answered> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        let headers = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Some(Answered { status, headers, body: body.to_string() })
    }

    /// Everything the server sends until it closes (a reset counts as a close).
    async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match tokio::time::timeout(BOUND, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return received,
                Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
                Err(_) => panic!("the server did not close the connection within {BOUND:?}"),
            }
        }
    }

    async fn exchange(address: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // The server may close before reading everything (a refused connection, garbage).
        let _ = stream.write_all(request).await;
        read_until_closed(&mut stream).await
    }

    async fn send(address: SocketAddr, method: &str, path: &str) -> Answered {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        let bytes = exchange(address, request.as_bytes()).await;
        parse(&bytes).unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&bytes)))
    }

    async fn get(address: SocketAddr, path: &str) -> Answered {
        send(address, "GET", path).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn healthz_answers_while_the_loop_does() {
        let (address, _) = ready_server(Limits::DEFAULT).await;
        let answer = get(address, "/healthz").await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));
        assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert_eq!(answer.header("connection"), Some("close"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn readyz_gives_the_reasons_until_ready() {
        let (address, health) = ready_server(Limits::DEFAULT).await;
        let answer = get(address, "/readyz").await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "worker: backoff (exited with 3)\ndb: starting\n");
        assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));
        *health.lock().unwrap() = HealthReport { ready: true, reasons: Vec::new() };
        let answer = get(address, "/readyz").await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));
        *health.lock().unwrap() = HealthReport { ready: false, reasons: Vec::new() };
        assert_eq!(get(address, "/readyz").await.body, "not ready\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_is_the_report_as_json() {
        let (address, _) = ready_server(Limits::DEFAULT).await;
        let answer = get(address, "/status?pretty=1").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.body, status_json(&report()));
        assert_eq!(serde_json::from_str::<StatusReport>(&answer.body).unwrap(), report());
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        for key in ["nodes", "platform", "gpu"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        for key in ["name", "state", "pid", "restarts", "exit_code", "ready"] {
            assert!(json["nodes"][0].get(key).is_some(), "{key} in {json}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn metrics_are_openmetrics_text() {
        let (address, _) = ready_server(Limits::DEFAULT).await;
        let answer = get(address, "/metrics").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some(metrics::CONTENT_TYPE));
        assert_eq!(answer.body, metrics::render(&report()));
        assert!(answer.body.ends_with("# EOF\n"));
        let sample = regex_lite::Regex::new(r"^([a-z_][a-z0-9_]*)\{([^}]*)\} (-?[0-9]+)$").unwrap();
        let label = regex_lite::Regex::new(r#"^([a-z_][a-z0-9_]*)="([^"\\]*)"$"#).unwrap();
        let mut series = Vec::new();
        for line in answer.body.lines() {
            if line.starts_with("# HELP nix2gpu_node_") || line.starts_with("# TYPE nix2gpu_node_") {
                assert!(!line.starts_with("# TYPE") || line.ends_with(" gauge"), "{line}");
                continue;
            }
            if line == "# EOF" {
                continue;
            }
            let captures = sample.captures(line).unwrap_or_else(|| panic!("not a sample: {line}"));
            let labels: Vec<(String, String)> = captures[2]
                .split(',')
                .map(|pair| {
                    let pair =
                        label.captures(pair).unwrap_or_else(|| panic!("not a label: {pair} in {line}"));
                    (pair[1].to_string(), pair[2].to_string())
                })
                .collect();
            series.push((captures[1].to_string(), labels, captures[3].parse::<i64>().unwrap()));
        }
        let value = |name: &str, node: &str| {
            series
                .iter()
                .find(|(n, labels, _)| n == name && labels[0] == ("node".to_string(), node.to_string()))
                .map(|(_, _, value)| *value)
        };
        for node in ["web", "migrate", "worker"] {
            assert!(answer.body.contains(&format!("node=\"{node}\"")), "{node}");
        }
        assert_eq!(value("nix2gpu_node_up", "web"), Some(1));
        assert_eq!(value("nix2gpu_node_up", "worker"), Some(0));
        assert_eq!(value("nix2gpu_node_ready", "web"), Some(1));
        assert_eq!(value("nix2gpu_node_restarts", "worker"), Some(4));
        assert_eq!(value("nix2gpu_node_last_exit_code", "worker"), Some(3));
        assert_eq!(value("nix2gpu_node_last_exit_code", "web"), None, "no exit yet, no series");
        let states: Vec<&Vec<(String, String)>> =
            series.iter().filter(|(n, _, _)| n == "nix2gpu_node_state").map(|(_, l, _)| l).collect();
        assert_eq!(states.len(), 3, "one state series per node");
        assert!(
            states.contains(&&vec![("node".into(), "worker".into()), ("state".into(), "backoff".into())])
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn other_methods_and_paths_are_refused() {
        let (address, _) = ready_server(Limits::DEFAULT).await;
        let request = b"POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\npartial body";
        let answer = parse(&exchange(address, request).await).unwrap();
        assert_eq!((answer.status, answer.header("allow")), (405, Some("GET, HEAD")));
        assert_eq!(answer.body, "method not allowed: use GET\n");
        assert_eq!(send(address, "DELETE", "/healthz").await.status, 405);
        let answer = get(address, "/nope").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(answer.body.starts_with("not found"));
        assert_eq!(get(address, "/healthz/").await.status, 404);
        let head = send(address, "HEAD", "/healthz").await;
        assert_eq!((head.status, head.body.as_str()), (200, ""));
        // A GET with a body is answered; the body is not read.
        let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(&exchange(address, request).await).unwrap().status, 200);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_loop_that_does_not_answer_is_unhealthy() {
        let limits = Limits { answer_timeout: Duration::from_millis(200), ..Limits::DEFAULT };
        // A loop that takes requests but never answers them.
        let (control, mut asks) = ControlHandle::new();
        let (keep, mut kept) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ask) = asks.recv().await {
                let _ = keep.send(ask);
            }
        });
        let address = start(control, limits).await;
        let started = Instant::now();
        let answer = get(address, "/healthz").await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "the init did not answer within 200ms\n");
        assert!(started.elapsed() < BOUND);
        assert!(kept.try_recv().is_ok(), "the request reached the loop");
        // A loop that is gone.
        let (control, asks) = ControlHandle::new();
        drop(asks);
        let address = start(control, limits).await;
        for path in ["/healthz", "/readyz", "/status", "/metrics"] {
            let answer = get(address, path).await;
            assert_eq!(answer.status, 503, "{path}");
            assert!(answer.body.contains("shutting down"), "{path}: {}", answer.body);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stalled_client_is_cut_off_while_others_are_served() {
        let timeout = Duration::from_secs(1);
        let (address, _) = ready_server(Limits { header_read_timeout: timeout, ..Limits::DEFAULT }).await;
        let started = Instant::now();
        let mut stalled = TcpStream::connect(address).await.unwrap();
        stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
        let mut silent = TcpStream::connect(address).await.unwrap();
        let stalled = tokio::spawn(async move { (read_until_closed(&mut stalled).await, started.elapsed()) });
        let silent = tokio::spawn(async move { (read_until_closed(&mut silent).await, started.elapsed()) });
        // Others are served meanwhile, while the stalled ones still hold their connections.
        assert_eq!(get(address, "/healthz").await.status, 200);
        assert_eq!(get(address, "/status").await.status, 200);
        let served_after = started.elapsed();
        for task in [stalled, silent] {
            let (received, closed_after) = task.await.unwrap();
            assert!(closed_after >= timeout && closed_after < BOUND, "closed after {closed_after:?}");
            assert!(served_after < closed_after, "served after {served_after:?}, cut off {closed_after:?}");
            // hyper closes without an answer (a 408 would do too); it never answers the request.
            let shown = String::from_utf8_lossy(&received);
            assert!(received.is_empty() || shown.starts_with("HTTP/1.1 408"), "{shown}");
        }
        assert_eq!(get(address, "/healthz").await.status, 200);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hundred_concurrent_clients_are_all_answered() {
        // More slots than clients: this checks that connections are served concurrently, not
        // the limit (see `connections_beyond_the_limit_are_closed_at_once`).
        let (address, _) = ready_server(Limits { max_connections: 128, ..Limits::DEFAULT }).await;
        let clients: Vec<_> = (0..100)
            .map(|i| {
                let path = ["/healthz", "/readyz", "/status", "/metrics"][i % 4];
                tokio::spawn(async move { (path, get(address, path).await.status) })
            })
            .collect();
        for client in clients {
            let (path, status) = client.await.unwrap();
            assert_eq!(status, if path == "/readyz" { 503 } else { 200 }, "{path}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_beyond_the_limit_are_closed_at_once() {
        let limits = Limits { max_connections: 4, header_read_timeout: BOUND, ..Limits::DEFAULT };
        let (address, _) = ready_server(limits).await;
        let mut stalled = Vec::new();
        for _ in 0..4 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            stalled.push(stream);
        }
        // Let the server accept them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let refused = exchange(address, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(refused.is_empty(), "{:?}", String::from_utf8_lossy(&refused));
        assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
        // Once they are gone, their slots are free again.
        drop(stalled);
        let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
        loop {
            match parse(&exchange(address, request).await) {
                Some(answer) => break assert_eq!(answer.status, 200),
                None if started.elapsed() < BOUND => tokio::time::sleep(Duration::from_millis(20)).await,
                None => panic!("no slot came free within {BOUND:?}"),
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn garbage_ends_that_connection_only() {
        let (address, _) = ready_server(Limits::DEFAULT).await;
        let oversized =
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        let many_headers: String = (0..100).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let many_headers = format!("GET /healthz HTTP/1.1\r\n{many_headers}\r\n");
        let garbage: [&[u8]; 6] = [
            b"\x00\x01\x02\xff\xfe garbage\r\n\r\n",
            b"GET /healthz SPDY/9\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
            oversized.as_bytes(),
            many_headers.as_bytes(),
        ];
        for request in garbage {
            let received = exchange(address, request).await;
            let shown = String::from_utf8_lossy(&received);
            assert!(received.is_empty() || shown.starts_with("HTTP/1.1 4"), "{shown}");
            assert_eq!(get(address, "/healthz").await.status, 200, "still serving after {shown}");
        }
        // Half a request, then the client goes away.
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /hea").await.unwrap();
        drop(stream);
        assert_eq!(get(address, "/healthz").await.status, 200);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bind_takes_an_address_and_a_port_only() {
        for bad in ["localhost:8080", "8080", "0.0.0.0", "::1:80"] {
            let error = bind(bad).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(error.to_string().contains("is not an IP address and a port"), "{bad}: {error}");
        }
        let listener = bind("127.0.0.1:0").await.unwrap();
        let taken = listener.local_addr().unwrap().to_string();
        let error = bind(&taken).await.unwrap_err();
        assert!(error.to_string().starts_with(&format!("cannot listen on {taken}: ")), "{error}");
        assert!(bind("[::1]:0").await.is_ok() || std::net::TcpListener::bind("[::1]:0").is_err());
    }
}

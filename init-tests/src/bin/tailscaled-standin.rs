//! A stand-in for `tailscaled` in the tests (tailscaled is in no package the tests may
//! install). It takes tailscaled's flags, listens on `--socket`, and serves the LocalAPI
//! endpoints the `tailscale` node uses the way tailscale's `ipn/localapi` does: Host must be
//! `local-tailscaled.sock` (or empty) with no Referer or Origin; `status` answers an
//! ipnstate.Status; `start` (POST, an ipn.Options body) answers 204; `login-interactive` (POST)
//! answers 204; `watch-ipn-bus?mask=N` streams one ipn.Notify per line, chunked, with the
//! current state first when the mask has NotifyInitialState (2).
//!
//! Every request (method, path, headers, body) and the command line are appended as JSON lines
//! to `$TAILSCALED_STANDIN_RECORD` when it is set.
//!
//! What control does with a login: a key starting `tskey-good` is accepted (the bus goes
//! Starting, then Running, and the state file remembers the machine, which then starts Running
//! next time, as a real node with its state kept does); any other key is refused with
//! tailscale's ErrMessage; no key offers a login URL. Like tailscaled, `start` alone logs in
//! only a machine that has a node key; a new one waits for `login-interactive`.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::exit;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{Value, json};

const NEEDS_LOGIN: u64 = 2;
const STARTING: u64 = 5;
const RUNNING: u64 = 6;
const STATE_NAMES: [&str; 7] =
    ["NoState", "InUseOtherUser", "NeedsLogin", "NeedsMachineAuth", "Stopped", "Starting", "Running"];
const NOTIFY_INITIAL_STATE: u64 = 1 << 1;
const VERSION: &str = "1.0.0-standin";
const TAILNET: &str = "standin@example.com";
const SUFFIX: &str = "tailnet-standin.ts.net";
const IPS: [&str; 2] = ["100.100.7.7", "fd7a:115c:a1e0::7"];
/// What the state file holds once the machine logged in.
const LOGGED_IN: &str = "logged-in";

/// The backend: its state, what `start` gave it, and the bus's subscribers.
struct Backend {
    state: u64,
    have_node_key: bool,
    auth_key: String,
    hostname: String,
    state_file: PathBuf,
    watchers: Vec<Sender<Value>>,
}

impl Backend {
    fn notify(&mut self, notify: Value) {
        self.watchers.retain(|watcher| watcher.send(notify.clone()).is_ok());
    }

    fn enter(&mut self, state: u64) {
        self.state = state;
        self.notify(json!({"Version": VERSION, "State": state}));
    }

    fn status(&self) -> Value {
        let running = self.state == RUNNING;
        let host = if self.hostname.is_empty() { "standin-host" } else { &self.hostname };
        json!({
            "Version": VERSION,
            "BackendState": STATE_NAMES[self.state as usize],
            "HaveNodeKey": self.have_node_key,
            "TailscaleIPs": if running { json!(IPS) } else { Value::Null },
            "Self": {
                "HostName": host,
                "DNSName": if running { format!("{host}.{SUFFIX}.") } else { String::new() },
                "TailscaleIPs": if running { json!(IPS) } else { Value::Null },
            },
            "Health": [],
            "MagicDNSSuffix": if running { SUFFIX } else { "" },
            "CurrentTailnet": if running {
                json!({"Name": TAILNET, "MagicDNSSuffix": SUFFIX, "MagicDNSEnabled": true})
            } else {
                Value::Null
            },
        })
    }

    /// What control says to a login with the key `start` gave.
    fn log_in(&mut self) {
        if self.auth_key.starts_with("tskey-good") {
            self.have_node_key = true;
            if let Err(e) = fs::write(&self.state_file, LOGGED_IN) {
                eprintln!("standin: cannot write {}: {e}", self.state_file.display());
            }
            self.enter(STARTING);
            self.notify(json!({"LoginFinished": {}}));
            self.enter(RUNNING);
        } else if self.auth_key.is_empty() {
            self.notify(json!({"BrowseToURL": "https://login.tailscale.com/a/standin"}));
        } else {
            self.notify(json!({"ErrMessage": "invalid key: unable to validate API key"}));
        }
    }
}

/// Appends JSON lines to the record file.
struct Recorder(Option<PathBuf>);

impl Recorder {
    fn record(&self, entry: &Value) {
        let Some(path) = &self.0 else { return };
        let line = format!("{entry}\n");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("standin: cannot record to {}: {e}", path.display());
        }
    }
}

struct Flags {
    state: PathBuf,
    socket: PathBuf,
}

/// tailscaled's flags, as Go's flag package takes them (`-name=value`, `--name value`, ...).
fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let name = arg.trim_start_matches('-');
        let (name, value) = match name.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (name.to_string(), rest.next().ok_or(format!("flag needs an argument: {arg}"))?.clone()),
        };
        if !["state", "socket", "tun", "statedir"].contains(&name.as_str()) {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        values.insert(name, value);
    }
    // The real daemon has defaults; the stand-in insists, so a test never touches the host's.
    let state = values.remove("state").ok_or("the stand-in needs --state")?;
    let socket = values.remove("socket").ok_or("the stand-in needs --socket")?;
    Ok(Flags { state: state.into(), socket: socket.into() })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let recorder = Arc::new(Recorder(std::env::var_os("TAILSCALED_STANDIN_RECORD").map(PathBuf::from)));
    recorder.record(&json!({"argv": args}));
    let flags = parse_flags(&args[1..]).unwrap_or_else(|e| {
        eprintln!("{e}");
        exit(2)
    });
    let logged_in = fs::read_to_string(&flags.state).is_ok_and(|s| s == LOGGED_IN);
    let backend = Arc::new(Mutex::new(Backend {
        state: if logged_in { RUNNING } else { NEEDS_LOGIN },
        have_node_key: logged_in,
        auth_key: String::new(),
        hostname: String::new(),
        state_file: flags.state,
        watchers: Vec::new(),
    }));
    let listener = listen(&flags.socket).unwrap_or_else(|e| {
        eprintln!("standin: {e}");
        exit(1)
    });
    eprintln!("standin tailscaled: LocalAPI on {}", flags.socket.display());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (backend, recorder) = (backend.clone(), recorder.clone());
        thread::spawn(move || serve(stream, &backend, &recorder));
    }
}

/// Listens as tailscale's safesocket does: a live socket is an error, a stale one is replaced,
/// and the mode is set after listening.
fn listen(socket: &PathBuf) -> Result<UnixListener, String> {
    if UnixStream::connect(socket).is_ok() {
        return Err(format!("{}: address already in use", socket.display()));
    }
    let _ = fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    Ok(listener)
}

/// One request, read and recorded.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length = headers.get("content-length").and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request { method, path: path.to_string(), query: query.to_string(), headers, body })
}

fn serve(stream: UnixStream, backend: &Mutex<Backend>, recorder: &Recorder) {
    let Ok(read_half) = stream.try_clone() else { return };
    let Some(request) = read_request(&mut BufReader::new(read_half)) else { return };
    let target = if request.query.is_empty() {
        request.path.clone()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    recorder.record(&json!({
        "method": request.method,
        "path": target,
        "headers": request.headers,
        "body": String::from_utf8_lossy(&request.body),
    }));
    let mut stream = stream;
    let host = request.headers.get("host").map_or("", String::as_str);
    if !matches!(host, "" | "local-tailscaled.sock")
        || request.headers.contains_key("referer")
        || request.headers.contains_key("origin")
    {
        return reply(&mut stream, 403, "invalid localapi request\n");
    }
    let lock = || backend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match (request.path.as_str(), request.method.as_str()) {
        ("/localapi/v0/status", _) => {
            let status = lock().status();
            reply_json(&mut stream, &status)
        }
        ("/localapi/v0/start" | "/localapi/v0/login-interactive", method) if method != "POST" => {
            reply(&mut stream, 400, "want POST\n")
        }
        ("/localapi/v0/start", _) => {
            let options: Value = match serde_json::from_slice(&request.body) {
                Ok(options) => options,
                Err(e) => return reply(&mut stream, 400, &format!("{e}\n")),
            };
            // Taken before answering: the client's next request may be login-interactive.
            let mut backend = lock();
            backend.auth_key = options["AuthKey"].as_str().unwrap_or("").to_string();
            backend.hostname = options["UpdatePrefs"]["Hostname"].as_str().unwrap_or("").to_string();
            reply(&mut stream, 204, "");
            if backend.have_node_key {
                backend.enter(STARTING);
                backend.enter(RUNNING);
            }
        }
        ("/localapi/v0/login-interactive", _) => {
            reply(&mut stream, 204, "");
            lock().log_in();
        }
        ("/localapi/v0/watch-ipn-bus", _) => {
            let mask = request.query.split('&').find_map(|pair| pair.strip_prefix("mask=")).unwrap_or("0");
            let Ok(mask) = mask.parse::<u64>() else { return reply(&mut stream, 400, "bad mask\n") };
            watch(stream, backend, mask)
        }
        _ => reply(&mut stream, 404, "404 page not found\n"),
    }
}

/// Streams the bus to one subscriber until it goes away.
fn watch(mut stream: UnixStream, backend: &Mutex<Backend>, mask: u64) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let (sender, notifications) = channel();
    {
        let mut backend = backend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if mask & NOTIFY_INITIAL_STATE != 0 {
            let _ = sender.send(json!({"Version": VERSION, "SessionID": "standin", "State": backend.state}));
        }
        backend.watchers.push(sender);
    }
    for notify in notifications {
        let line = format!("{notify}\n");
        if write!(stream, "{:x}\r\n{line}\r\n", line.len()).is_err() {
            return;
        }
    }
}

fn reply(stream: &mut UnixStream, code: u16, text: &str) {
    let reason = match code {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Not Found",
    };
    let content_type = if text.starts_with('{') { "application/json" } else { "text/plain; charset=utf-8" };
    // A 204 has no body, and so no Content-Length either (RFC 9110, 8.6).
    let length = if code == 204 { String::new() } else { format!("Content-Length: {}\r\n", text.len()) };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n{length}Connection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(text.as_bytes()));
}

fn reply_json(stream: &mut UnixStream, value: &Value) {
    reply(stream, 200, &value.to_string());
}

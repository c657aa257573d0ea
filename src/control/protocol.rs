//! The control protocol: what `nix2gpu-init status|health|logs|start|stop|restart` ask the
//! running init, and what it answers. Over the control socket it is newline-delimited JSON,
//! one request per connection (`{"v":1,"cmd":"status"}`), answered by one JSON line, or by a
//! stream of lines for `logs --follow`. The same types back the HTTP endpoint's JSON.

use serde::{Deserialize, Serialize};

use crate::runtime::Platform;

/// The protocol version a request must carry; a different one is refused with an error that
/// names both.
pub const VERSION: u32 = 1;
/// The largest request accepted; anything longer is refused.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One request line as it arrived on the socket (its newline, if any, included): the
/// envelope, or why it is refused in words for the client: not JSON, another protocol version,
/// or not a request this init knows. Any bytes give one or the other, never a panic.
pub fn parse_request(line: &[u8]) -> Result<Envelope, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("the request is not JSON: {e}"))?;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(format!("protocol version {version:?} is not supported; this init speaks {VERSION}"));
    }
    serde_json::from_value(value).map_err(|e| format!("not a valid request: {e}"))
}

/// A request with its protocol version, as it travels on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Every node, the platform and the GPU.
    Status,
    /// Whether the container is ready, and if not, why.
    Health,
    /// Recent output lines of one node (or of all), optionally followed as they come.
    Logs { name: Option<String>, lines: usize, follow: bool },
    /// Start a node that is not running (dependency conditions are not waited for: the
    /// operator asked).
    Start { name: String },
    /// Stop a running node (with its shutdown settings); it stays stopped.
    Stop { name: String },
    /// Stop a running node and start it again, or start it if it is not running.
    Restart { name: String },
    /// Read the configuration again and apply the difference (with `dry_run`, only say what
    /// would change).
    Reload {
        #[serde(default)]
        dry_run: bool,
    },
}

/// What the init answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Health(HealthReport),
    /// One output line (a `logs` answer is a sequence of these, then `Done`).
    Log(LogLine),
    /// The request was carried out; `message` says what happened.
    Done {
        message: String,
    },
    /// The request was refused; `message` says why, in words a person understands.
    Error {
        message: String,
    },
    /// What a reload changed (or, as a dry run, would change).
    Reload(ReloadReport),
    /// A reload found the configuration invalid and changed nothing: every error, located
    /// (`file:line:col: message`).
    InvalidConfig {
        errors: Vec<String>,
    },
}

/// The answer to a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// False for a dry run: nothing was changed.
    pub applied: bool,
    /// Every node of the old and the new configuration: the new ones in order, then those
    /// removed.
    pub changes: Vec<PlannedChange>,
}

/// What a reload does to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub name: String,
    /// `start`, `stop`, `restart` or `unchanged`.
    pub change: String,
}

/// The status contract (DESIGN.md "Status and health"): `nodes`, `platform`, `gpu`, and
/// `tailscale` when that node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub nodes: Vec<NodeReport>,
    /// The platform detected at startup (see [`crate::runtime`]).
    pub platform: Option<Platform>,
    /// The GPU report (GPU bring-up work); `null` until it exists.
    pub gpu: Option<serde_json::Value>,
    /// The `tailscale` node's report (backend state, tailnet, IPs), once it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tailscale: Option<serde_json::Value>,
}

/// One node in the status report. Never carries a secret (no environment, no command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    /// One of the contract's states: pending, starting, running, ready, completed, failed,
    /// backoff, stopping, stopped, skipped, disabled.
    pub state: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    pub ready: bool,
    /// Why the node is skipped, failed or not ready, when there is a reason.
    pub reason: Option<String>,
    /// The last `STATUS=` text of a notify process.
    #[serde(default)]
    pub status_text: Option<String>,
    /// Seconds since the current process started, while one runs.
    pub uptime_seconds: Option<f64>,
}

/// The health verdict: ready when every enabled node is ready (or has completed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub ready: bool,
    /// One line per node that keeps the container from being ready.
    pub reasons: Vec<String>,
}

/// One line of a node's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub name: String,
    pub stream: String,
    /// RFC 3339 UTC.
    pub ts: String,
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let envelope = Envelope { v: VERSION, request: Request::Restart { name: "web".into() } };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(text, r#"{"v":1,"cmd":"restart","name":"web"}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        let status: Envelope = serde_json::from_str(r#"{"v":1,"cmd":"status"}"#).unwrap();
        assert_eq!(status.request, Request::Status);
    }

    #[test]
    fn reload_requests_default_to_applying() {
        let reload: Envelope = serde_json::from_str(r#"{"v":1,"cmd":"reload"}"#).unwrap();
        assert_eq!(reload.request, Request::Reload { dry_run: false });
        let dry = Envelope { v: VERSION, request: Request::Reload { dry_run: true } };
        assert_eq!(serde_json::to_string(&dry).unwrap(), r#"{"v":1,"cmd":"reload","dry_run":true}"#);
    }

    #[test]
    fn responses_are_tagged() {
        let text = serde_json::to_string(&Response::Error { message: "no".into() }).unwrap();
        assert_eq!(text, r#"{"type":"error","message":"no"}"#);
    }
}

//! Logging tailscaled in through its LocalAPI the way `tailscale up --auth-key` does (tailscale's
//! `cmd/tailscale/cli/up.go`), then following its state for the node's report:
//!
//! 1. wait, bounded, for the socket to listen; `GET status` (it answers once the backend is up);
//! 2. subscribe to the IPN bus asking for the current state first, so no change is missed;
//! 3. if the backend waits for a login: `POST start` with the auth key and the prefs, and for a
//!    machine that never logged in (no node key) `POST login-interactive`, which with a key
//!    logs in without a browser (without one, tailscaled offers a URL, printed here);
//! 4. follow the bus (subscribing again if tailscaled drops the subscription but still
//!    answers): Running writes the report and prints the ready line; an error before Running
//!    (a refused key) is printed once and not retried: the node stays up, not ready.

use std::fs::{self, DirBuilder};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use super::ipn::{self, NOTIFY_INITIAL_STATE, Notify, RUNNING, Report, Status};
use super::localapi::{self, LocalApi, Watch};
use crate::config::builtins::{TAILSCALE_READY_LINE, TailscaleNode};

const STATUS: &str = "/localapi/v0/status?peers=false";
const START: &str = "/localapi/v0/start";
const LOGIN_INTERACTIVE: &str = "/localapi/v0/login-interactive";

/// How long tailscaled may take to listen on its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(30);

/// Logs in and follows the IPN bus for as long as tailscaled answers. An error means this
/// tailscaled cannot be talked to (it never listened, or refused a request): the caller stops
/// it, and the node starts over with backoff.
pub async fn log_in(node: &TailscaleNode, key: Option<&str>) -> Result<(), String> {
    let api = LocalApi::new(&node.socket);
    localapi::wait_for_socket(&node.socket, SOCKET_WAIT).await?;
    let status: Status = api.get(STATUS).await?;
    let mut watch = api.watch(NOTIFY_INITIAL_STATE).await?;
    let mut follower = Follower {
        api,
        node,
        key,
        have_node_key: status.have_node_key,
        state: status.backend_state,
        started: false,
        running: false,
        refusal: None,
    };
    loop {
        let (delivered, ended) = follower.follow(&mut watch).await?;
        // Mostly the bus ends because tailscaled is exiting, and its exit is what the node
        // reports. If it still answers, it only dropped this subscriber (tailscaled drops slow
        // ones): subscribe again, as long as the last subscription was of any use.
        match follower.api.watch(NOTIFY_INITIAL_STATE).await {
            Ok(again) if delivered => watch = again,
            Ok(_) => {
                eprintln!("stopped following tailscaled's IPN bus: {ended}");
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

/// What the node knows of the login while it follows the bus.
struct Follower<'a> {
    api: LocalApi,
    node: &'a TailscaleNode,
    key: Option<&'a str>,
    have_node_key: bool,
    /// The backend's last state.
    state: String,
    /// `start` was sent: it never is twice by the same node (no retry storm on a bad key).
    started: bool,
    running: bool,
    /// Why control refused the login, kept in the report until the backend runs.
    refusal: Option<String>,
}

impl Follower<'_> {
    /// Acts on the notifications of one subscription until it ends; says whether it delivered
    /// any, and how it ended.
    async fn follow(&mut self, watch: &mut Watch) -> Result<(bool, String), String> {
        let mut delivered = false;
        loop {
            match watch.next().await {
                Ok(Some(notify)) => {
                    delivered = true;
                    self.on_notify(notify).await?;
                }
                Ok(None) => return Ok((delivered, "tailscaled closed it".into())),
                Err(failure) => return Ok((delivered, failure)),
            }
        }
    }

    async fn on_notify(&mut self, notify: Notify) -> Result<(), String> {
        let refused = notify.err_message.is_some() && !self.running;
        if let Some(message) = notify.err_message {
            let message = self.redact(&message);
            if self.running {
                eprintln!("tailscale reports an error: {message}");
            } else {
                eprintln!(
                    "tailscale refused the login: {message}. Not retrying: fix the auth key, then run \
                     `nix2gpu-init restart tailscale`"
                );
                self.refusal = Some(message);
            }
        }
        if let Some(url) = notify.browse_to_url {
            println!("to log this machine in to tailscale, visit {url}");
        }
        if let Some(state) = notify.state.map(ipn::state_name) {
            self.on_state(&state).await?;
        } else if refused {
            self.report(&Report { error: self.refusal.clone(), ..Report::state(&self.state) });
        }
        Ok(())
    }

    async fn on_state(&mut self, state: &str) -> Result<(), String> {
        self.state = state.to_string();
        self.running = state == RUNNING;
        if self.running {
            self.refusal = None;
            let status: Status = self.api.get(STATUS).await?;
            let report = Report::from_status(&status);
            self.report(&report);
            println!("{TAILSCALE_READY_LINE}: {}", report.summary());
            return Ok(());
        }
        match state {
            "NeedsMachineAuth" => {
                println!("tailscale backend is {state}: an admin must approve this machine")
            }
            _ => println!("tailscale backend is {state}"),
        }
        self.report(&Report { error: self.refusal.clone(), ..Report::state(state) });
        if ipn::needs_start(state) && !self.started {
            self.start().await?;
        }
        Ok(())
    }

    async fn start(&mut self) -> Result<(), String> {
        self.started = true;
        match (self.key, &self.node.auth_key_file) {
            (Some(_), Some(file)) => println!("logging in with the auth key from {}", file.display()),
            _ => println!("no auth key given: tailscale will offer a URL to log in"),
        }
        let body = ipn::start_body(self.key, self.node);
        self.api.post(START, Some(&body)).await.map_err(|e| self.redact(&e))?;
        if !self.have_node_key {
            self.api.post(LOGIN_INTERACTIVE, None).await.map_err(|e| self.redact(&e))?;
        }
        Ok(())
    }

    fn report(&self, report: &Report) {
        if let Err(failure) = write_report(&self.node.report_file, report) {
            eprintln!("cannot write the report {}: {failure}", self.node.report_file.display());
        }
    }

    /// `text` with the key, should tailscaled ever echo it, replaced.
    fn redact(&self, text: &str) -> String {
        match self.key {
            Some(key) if !key.is_empty() => text.replace(key, "[auth key]"),
            _ => text.to_string(),
        }
    }
}

/// Writes the report for `status`, replacing the last one at once (written aside, renamed).
fn write_report(file: &Path, report: &Report) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    let aside = file.with_extension("new");
    fs::File::create(&aside)?.write_all(&json)?;
    fs::rename(&aside, file)
}

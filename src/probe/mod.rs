//! Readiness and liveness probes: exec, http_get and tcp_socket.
//!
//! A probe task runs one check per period and reports each result; the graph counts them
//! against the thresholds (success_threshold really is honoured there, unlike in
//! process-compose). Every check is bounded by the probe's timeout. An exec probe's process is
//! reaped by the init's one reaper, which hands its status back through [`ProbeExits`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::config::{ProbeCheck, ProbePlan};
use crate::pid1::reaper::ExitStatus;
use crate::spawn::{self, Credentials, Environment};

/// Exec-probe processes waiting for their exit status, by pid. Shared between the probe tasks
/// (which register a pid right after spawning it, with no await in between, so the reaper on
/// the same thread cannot miss it) and the reaper (which delivers the status).
#[derive(Clone, Default)]
pub struct ProbeExits(Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>);

impl ProbeExits {
    /// Delivers `status` if `pid` is an exec probe's process; returns whether it was.
    pub fn deliver(&self, pid: i32, status: ExitStatus) -> bool {
        let waiter = self.0.lock().ok().and_then(|mut waiting| waiting.remove(&pid));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(status);
                true
            }
            None => false,
        }
    }

    fn register(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiting) = self.0.lock() {
            waiting.insert(pid, sender);
        }
        receiver
    }
}

/// What an exec probe runs with: the service's environment and identity.
#[derive(Clone)]
pub struct ExecContext {
    pub env: Environment,
    pub credentials: Option<Credentials>,
    pub exits: ProbeExits,
}

/// Runs the probe forever: the initial delay, then one check per period, each result passed to
/// `report`. The task is aborted when the node stops.
pub async fn run(plan: ProbePlan, context: ExecContext, mut report: impl FnMut(bool)) {
    tokio::time::sleep(plan.initial_delay).await;
    loop {
        report(check(&plan.check, plan.timeout, &context).await);
        tokio::time::sleep(plan.period).await;
    }
}

/// One check, bounded by `limit`.
pub async fn check(check: &ProbeCheck, limit: Duration, context: &ExecContext) -> bool {
    match check {
        ProbeCheck::Exec { argv, working_dir } => exec(argv, working_dir.as_deref(), limit, context).await,
        ProbeCheck::Http { addr, path, host_header, status } => {
            timeout(limit, http(*addr, path, host_header, *status)).await.unwrap_or(false)
        }
        ProbeCheck::Tcp { addr } => timeout(limit, TcpStream::connect(addr)).await.is_ok_and(|c| c.is_ok()),
    }
}

async fn exec(
    argv: &[String],
    working_dir: Option<&std::path::Path>,
    limit: Duration,
    context: &ExecContext,
) -> bool {
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let spec = spawn::Spec {
        argv: &argv,
        env: &context.env,
        working_dir,
        credentials: context.credentials.as_ref(),
        output: spawn::Output::Discard,
        main: false,
        foreground: false,
    };
    let Ok(spawned) = spawn::spawn(&spec) else { return false };
    let exited = context.exits.register(spawned.pid.as_raw());
    match timeout(limit, exited).await {
        Ok(Ok(status)) => status == ExitStatus::Code(0),
        _ => {
            // Too slow: the check failed; its process group must not linger.
            let _ = nix::sys::signal::killpg(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            false
        }
    }
}

/// A GET over HTTP/1.1: 2xx or 3xx passes, or exactly `status` when one is configured.
async fn http(addr: SocketAddr, path: &str, host_header: &str, status: Option<u16>) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else { return false };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    let driver = tokio::spawn(connection);
    // An empty `Full` rather than `Empty`: the body type the tailscale node's LocalAPI client
    // sends, so hyper's client code is in the binary once (8 KB).
    let request = Request::get(path).header(hyper::header::HOST, host_header).body(Full::<Bytes>::default());
    let passed = match request {
        Ok(request) => match sender.send_request(request).await {
            Ok(response) => {
                let code = response.status().as_u16();
                status.map_or((200..400).contains(&code), |wanted| wanted == code)
            }
            Err(_) => false,
        },
        Err(_) => false,
    };
    driver.abort();
    passed
}

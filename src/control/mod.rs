//! The control plane: the unix control socket (`status`, `health`, `logs`, `start`, `stop`,
//! `restart`) and the HTTP endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`).
//!
//! Both only talk to the supervisor loop through a [`ControlHandle`]: the loop owns the graph,
//! answers each request between two events, and never waits for a client. Client-side slowness
//! (a half-open connection, a slow reader) is the serving task's problem, bounded there.

pub mod http;
pub mod metrics;
pub mod protocol;
pub mod socket;

use tokio::sync::{mpsc, oneshot};

pub use protocol::{
    HealthReport, LogLine, NodeReport, PlannedChange, ReloadReport, Request, Response, StatusReport,
};

/// One request on its way to the supervisor loop, with where to send the answer. A `logs`
/// request with `follow` gets its history through `reply` and its new lines through the
/// stream the loop attaches (see `Follow`).
pub struct Ask {
    pub request: Request,
    pub reply: oneshot::Sender<Answer>,
}

/// The loop's answer: one response, or for `logs` the lines so far plus, when following, a
/// receiver of the lines to come.
pub enum Answer {
    One(Response),
    Lines { history: Vec<LogLine>, follow: Option<mpsc::Receiver<LogLine>> },
}

/// How serving tasks reach the supervisor loop. Cheap to clone.
#[derive(Clone)]
pub struct ControlHandle {
    sender: mpsc::Sender<Ask>,
}

/// Requests waiting for the loop, at most; a client beyond that is answered "busy" at once
/// rather than queued without bound.
pub const QUEUE: usize = 256;

impl ControlHandle {
    /// A handle and the receiving end the supervisor loop reads.
    pub fn new() -> (Self, mpsc::Receiver<Ask>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (Self { sender }, receiver)
    }

    /// Asks the loop; an error response if the loop is gone or too busy.
    pub async fn ask(&self, request: Request) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.sender.try_send(Ask { request, reply }).is_err() {
            return Answer::One(Response::Error {
                message: "the init is busy or shutting down; try again".into(),
            });
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::One(Response::Error { message: "the init is shutting down".into() }))
    }
}

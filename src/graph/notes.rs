//! The human-readable lines the graph asks the runtime to log, and the words they are made of.
//! One place for the wording keeps the log consistent from node to node.

use std::time::Duration;

use super::event::{Action, NoteLevel};
use super::spec::NodeId;
use crate::pid1::reaper::ExitStatus;
use crate::pid1::signals;

/// Appends a note about `node`.
pub(super) fn note(out: &mut Vec<Action>, node: NodeId, level: NoteLevel, message: impl Into<String>) {
    out.push(Action::Note { node, level, message: message.into() });
}

/// How a process ended: `exited with code 1`, `killed by SIGTERM`.
pub(super) fn ended(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exited with code {code}"),
        ExitStatus::Signal(signo) => format!("killed by {}", signals::name(signo)),
    }
}

/// A duration as people write it: `2s`, `0.5s`.
pub(super) fn secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_name_the_code_or_the_signal() {
        assert_eq!(ended(ExitStatus::Code(3)), "exited with code 3");
        assert_eq!(ended(ExitStatus::Signal(15)), "killed by SIGTERM");
        assert_eq!(ended(ExitStatus::Signal(64)), "killed by signal 64");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(secs(Duration::from_secs(2)), "2s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5s");
        assert_eq!(secs(Duration::ZERO), "0s");
    }
}

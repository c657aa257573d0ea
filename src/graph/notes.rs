//! The human-readable lines the graph asks the runtime to log, and the words they are made of.
//! One place for the wording keeps the log consistent from node to node.

use std::time::Duration;

use super::event::{Action, NoteLevel};
use super::spec::NodeId;

/// Appends a note about `node`.
pub(super) fn note(out: &mut Vec<Action>, node: NodeId, level: NoteLevel, message: impl Into<String>) {
    out.push(Action::Note { node, level, message: message.into() });
}

/// A duration as people write it: `2s`, `0.5s`.
pub(super) fn secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(secs(Duration::from_secs(2)), "2s");
        assert_eq!(secs(Duration::from_millis(500)), "0.5s");
        assert_eq!(secs(Duration::ZERO), "0s");
    }
}

//! Everything that reaches the init's stdout (contract: DESIGN.md "Logs"): service output as
//! `NAME | line` (or JSON objects), and the init's own messages under the name `init`.
//!
//! One writer thread owns stdout. Readers of service pipes hand it batches of whole lines; it
//! frames them and writes whole lines, so lines are never interleaved mid-line. The thread is
//! the one deliberate exception to "single-threaded": a write to stdout blocks when the reader
//! of the container log is slow, and PID 1's event loop must never block (it would stop reaping
//! and answering signals). The loop hands lines over and moves on; when more than
//! [`BUFFER_BYTES`] are waiting, service readers pause, the pipes fill, and the services block
//! in their own writes: backpressure instead of unbounded memory or lost lines.

mod framing;
mod init_layer;
mod output;
mod pump;
mod recent;

use std::sync::Arc;
use std::time::SystemTime;

pub use framing::{LineSplitter, MAX_LINE};
pub use init_layer::{LEVEL_ENV, effective_level, init};
pub use output::{BUFFER_BYTES, Output, Style};
pub use pump::{PARTIAL_LINE_QUIET, PumpTarget, Pumps, ReadyLine};
pub use recent::Recent;

/// The name the init's own lines carry.
pub const INIT_NAME: &str = "init";

/// Which of a process's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Whole lines read at once from one stream of one process.
#[derive(Debug)]
pub struct Batch {
    pub name: Arc<str>,
    pub stream: Stream,
    pub time: SystemTime,
    /// Lines, each ending in `\n`, none longer than [`MAX_LINE`].
    text: Vec<u8>,
    /// How many lines `text` holds, counted once: the recent-lines ring asks often.
    lines: usize,
}

impl Batch {
    /// `text` must be whole lines, each ending in `\n` (what [`LineSplitter`] produces).
    pub fn new(name: Arc<str>, stream: Stream, text: Vec<u8>) -> Self {
        let lines = memchr::memchr_iter(b'\n', &text).count();
        Self { name, stream, time: SystemTime::now(), text, lines }
    }

    /// The lines, without their newlines.
    pub fn lines(&self) -> Lines<'_> {
        Lines { rest: &self.text }
    }

    /// The lines as they came, each ending in `\n`.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    pub fn line_count(&self) -> usize {
        self.lines
    }

    pub fn byte_len(&self) -> usize {
        self.text.len()
    }
}

/// The lines of a [`Batch`], found with memchr: the output thread walks every line of every
/// batch, and a byte-by-byte split was most of its time under a log flood.
pub struct Lines<'a> {
    /// What is left, each line ending in `\n`.
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', self.rest).unwrap_or(self.rest.len());
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or_default();
        Some(line)
    }
}

impl DoubleEndedIterator for Lines<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let body = self.rest.strip_suffix(b"\n").unwrap_or(self.rest);
        let start = memchr::memrchr(b'\n', body).map_or(0, |at| at + 1);
        self.rest = self.rest.get(..start).unwrap_or_default();
        body.get(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> (Vec<&[u8]>, Vec<&[u8]>) {
        let forward = Lines { rest: text }.collect();
        let mut backward: Vec<&[u8]> = Lines { rest: text }.rev().collect();
        backward.reverse();
        (forward, backward)
    }

    #[test]
    fn lines_come_out_the_same_from_either_end() {
        for (text, expected) in [
            (&b"one\ntwo\n"[..], vec![&b"one"[..], b"two"]),
            (b"a\n\nb\n", vec![b"a", b"", b"b"]),
            (b"\n", vec![b""]),
            (b"", vec![]),
            (b"no newline", vec![b"no newline"]),
        ] {
            let (forward, backward) = lines(text);
            assert_eq!(forward, expected, "{text:?}");
            assert_eq!(backward, expected, "{text:?}");
        }
        let mut both = Lines { rest: b"1\n2\n3\n" };
        assert_eq!(both.next(), Some(&b"1"[..]));
        assert_eq!(both.next_back(), Some(&b"3"[..]));
        assert_eq!(both.next(), Some(&b"2"[..]));
        assert_eq!(both.next_back(), None);
    }
}

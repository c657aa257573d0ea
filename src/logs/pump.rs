//! Reading one stream of one process: whole lines go to the output and to the node's recent
//! lines; a partial line is flushed after a short quiet period or at the end of the stream; the
//! first line matching the node's `ready_log_line` is reported.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex_lite::Regex;
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

use super::{Batch, LineSplitter, Output, Recent, Stream};

/// How long an unfinished line (a prompt, a progress bar) waits for its end before it is shown.
pub const PARTIAL_LINE_QUIET: Duration = Duration::from_millis(200);
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// One read buffer for every pump: they all run on the event loop's thread, and a read and
    /// the splitting of what it returned happen with no await in between. A buffer per pump
    /// would cost 64 KiB per stream, 128 MiB for a thousand services.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

/// A node's `ready_log_line`: the pattern, and what to do on the first line that matches it.
pub struct ReadyLine {
    pub pattern: Regex,
    pub notify: Box<dyn FnOnce() + Send>,
}

/// Where a pump's lines go.
pub struct PumpTarget {
    pub name: Arc<str>,
    pub stream: Stream,
    pub output: Output,
    pub recent: Arc<Mutex<Recent>>,
    /// Watched for until it matches once.
    pub ready: Option<ReadyLine>,
    /// Where `logs --follow` clients listen.
    pub live: broadcast::Sender<Arc<Batch>>,
}

/// Reads `fd` until end of stream. A read error ends the pump like end of stream does: the
/// process's exit is reported by the reaper either way.
pub async fn pump(fd: OwnedFd, mut target: PumpTarget) {
    let Ok(pipe) = pipe::Receiver::from_owned_fd(fd) else { return };
    let mut splitter = LineSplitter::default();
    loop {
        let mut lines = Vec::new();
        let ended = if splitter.has_partial() {
            tokio::select! {
                ready = pipe.readable() => ready.is_err() || read(&pipe, &mut splitter, &mut lines),
                () = tokio::time::sleep(PARTIAL_LINE_QUIET) => {
                    splitter.flush(&mut lines);
                    false
                }
            }
        } else {
            pipe.readable().await.is_err() || read(&pipe, &mut splitter, &mut lines)
        };
        if ended {
            splitter.flush(&mut lines);
        }
        deliver(&mut target, lines).await;
        if ended {
            return;
        }
    }
}

/// Reads what the pipe holds into the splitter; returns whether the stream ended. A spurious
/// wake-up (nothing to read after all) is not an end.
fn read(pipe: &pipe::Receiver, splitter: &mut LineSplitter, lines: &mut Vec<u8>) -> bool {
    READ_BUFFER.with_borrow_mut(|buffer| match pipe.try_read(buffer) {
        Ok(0) => true,
        Ok(count) => {
            splitter.push(&buffer[..count], lines);
            false
        }
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    })
}

async fn deliver(target: &mut PumpTarget, lines: Vec<u8>) {
    if lines.is_empty() {
        return;
    }
    let batch = Arc::new(Batch::new(Arc::clone(&target.name), target.stream, lines));
    let matched = target.ready.as_ref().is_some_and(|ready| {
        batch.lines().any(|line| ready.pattern.is_match(&String::from_utf8_lossy(line)))
    });
    if matched && let Some(ready) = target.ready.take() {
        (ready.notify)();
    }
    if let Ok(mut recent) = target.recent.lock() {
        recent.push(Arc::clone(&batch));
    }
    // No follower is the usual case: the send then fails at once, at no cost.
    let _ = target.live.send(Arc::clone(&batch));
    target.output.send(batch).await;
}

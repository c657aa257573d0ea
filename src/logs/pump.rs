//! Reading the processes' output pipes: whole lines go to the output and to the node's recent
//! lines; a partial line is flushed after a short quiet period or at the end of the stream; the
//! first line matching the node's `ready_log_line` is reported.
//!
//! One task reads every pipe, through an epoll instance of its own that the event loop watches
//! as a single descriptor. A task and an event-loop registration per pipe would cost about 1 KB
//! per pipe (tokio pads both to cache lines), 2 MB for a thousand services with their two
//! pipes each; here a pipe costs its [`Pipe`], under a hundred bytes.
//!
//! The reader behaves as one reader per pipe would. Each pipe is read as its data comes, a
//! round of at most [`EVENTS`] ready pipes at a time, one read each, so a busy pipe cannot
//! starve the others. When the output has no room for a batch (backpressure, see [`Output`]),
//! only that pipe waits: its batch is held here and the pipe leaves the epoll set until the batch
//! is passed on, so each pipe holds at most one batch, the other pipes are still read, and
//! their ready lines still seen.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use regex_lite::Regex;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Batch, LineSplitter, Output, Recent, Stream};

/// How long an unfinished line (a prompt, a progress bar) waits for its end before it is shown.
pub const PARTIAL_LINE_QUIET: Duration = Duration::from_millis(200);
/// The most one read takes from a pipe (a full pipe buffer, by default).
const READ_SIZE: usize = 64 * 1024;
/// Ready pipes taken from the epoll instance per round; the rest come in the next round.
const EVENTS: usize = 64;

/// A node's `ready_log_line`: the pattern, and what to do on the first line that matches it.
pub struct ReadyLine {
    pub pattern: Regex,
    pub notify: Box<dyn FnOnce() + Send>,
}

/// Where one pipe's lines go besides the output.
pub struct PumpTarget {
    pub name: Arc<str>,
    pub stream: Stream,
    pub recent: Arc<Mutex<Recent>>,
    /// Watched for until it matches once. Boxed: most nodes have none, and every pipe carries
    /// this field.
    pub ready: Option<Box<ReadyLine>>,
}

/// The reader of every output pipe.
pub struct Pumps {
    /// Pipes to read from now on.
    pipes: mpsc::UnboundedSender<(OwnedFd, PumpTarget)>,
    reader: JoinHandle<()>,
}

impl Pumps {
    /// Starts the reader; every batch of lines goes to `output`, and to `live` for
    /// `logs --follow` clients.
    pub fn start(output: Output, live: broadcast::Sender<Arc<Batch>>) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // SAFETY: the PipeSet owns the epoll descriptor and never replaces or closes it, so it
        // stays the same open fd for the AsyncFd's whole life.
        let epoll = unsafe { AsyncFd::register_with_interest(PipeSet(epoll), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let (pipes, added) = mpsc::unbounded_channel();
        let reader = Reader {
            pipes: Vec::new(),
            free: Vec::new(),
            waiting: VecDeque::new(),
            quiet: VecDeque::new(),
            output,
            live,
            buffer: Vec::new(),
        };
        Ok(Self { pipes, reader: tokio::spawn(reader.run(epoll, added)) })
    }

    /// Reads `fd` from now on, until its end.
    pub fn add(&self, fd: OwnedFd, target: PumpTarget) {
        // The reader stops only after this handle is gone (or with the event loop), so the
        // send cannot fail while it matters.
        let _ = self.pipes.send((fd, target));
    }

    /// Waits until every pipe has ended and its last lines are passed on, or until `deadline`
    /// (a pipe may have been handed to something outside the init's reach).
    pub async fn finish(self, deadline: Instant) {
        drop(self.pipes);
        let _ = tokio::time::timeout_at(deadline, self.reader).await;
    }
}

/// The reader's epoll instance as tokio's `AsyncFd` wants it (nix's only offers its `OwnedFd`).
struct PipeSet(Epoll);

impl AsRawFd for PipeSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// One open pipe.
struct Pipe {
    fd: OwnedFd,
    target: PumpTarget,
    splitter: LineSplitter,
    /// When the partial line is flushed if nothing more comes; `None` without a partial line,
    /// and while a batch of this pipe waits for the output.
    quiet_until: Option<Instant>,
}

struct Reader {
    /// Open pipes by token (their epoll data: the index here).
    pipes: Vec<Option<Pipe>>,
    /// Tokens of empty slots in `pipes`, for the next pipes.
    free: Vec<usize>,
    /// Batches the output had no room for yet, oldest first, with the token of their pipe
    /// (`None` once the pipe has ended). Such a pipe is out of the epoll set until its batch
    /// is passed on.
    waiting: VecDeque<(Option<usize>, Arc<Batch>)>,
    /// Partial-line deadlines with the token of their pipe, soonest first (each is a read's time
    /// plus the same quiet period, so pushing keeps the order). An entry whose pipe's deadline
    /// has moved since is stale and skipped.
    quiet: VecDeque<(Instant, usize)>,
    output: Output,
    /// Where `logs --follow` clients listen.
    live: broadcast::Sender<Arc<Batch>>,
    /// One read buffer for every pipe: a read and the splitting of what it returned happen
    /// with nothing in between. Allocated at the first read (services that never write, and
    /// an init without services, do not need it), and again after a full read became a batch.
    buffer: Vec<u8>,
}

impl Reader {
    /// Reads until no more pipes can come (the [`Pumps`] handle is gone) and every pipe has
    /// ended with its lines passed on.
    async fn run(
        mut self,
        epoll: AsyncFd<PipeSet>,
        mut added: mpsc::UnboundedReceiver<(OwnedFd, PumpTarget)>,
    ) {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut accepting = true;
        while accepting || !self.is_done() {
            let set = &epoll.get_ref().0;
            let next_quiet = self.quiet.front().map(|&(at, _)| at);
            let oldest = self.waiting.front().map(|(_, batch)| Arc::clone(batch));
            tokio::select! {
                pipe = added.recv(), if accepting => match pipe {
                    Some((fd, target)) => self.add(set, fd, target),
                    None => accepting = false,
                },
                // Polled, not awaited with `readable()`: polling counts against the task's
                // budget, so round after round of ready pipes still lets the event loop's other
                // tasks run in between.
                ready = std::future::poll_fn(|cx| epoll.poll_read_ready(cx)) => {
                    // An error here means the event loop is going away, and the reader with it.
                    let Ok(mut guard) = ready else { return };
                    match set.wait(&mut events, EpollTimeout::ZERO) {
                        Ok(count) if count > 0 => {
                            for event in &events[..count] {
                                self.read(set, event.data());
                            }
                        }
                        // Nothing ready after all: wait for the next readiness.
                        _ => guard.clear_ready(),
                    }
                }
                () = sleep_until(next_quiet) => self.flush_quiet(set),
                () = send(&self.output, oldest) => self.resume(set),
            }
        }
    }

    /// Every pipe has ended and nothing waits for the output.
    fn is_done(&self) -> bool {
        self.waiting.is_empty() && self.pipes.iter().all(Option::is_none)
    }

    fn add(&mut self, set: &Epoll, fd: OwnedFd, target: PumpTarget) {
        let token = self.free.pop().unwrap_or(self.pipes.len());
        // Reads must not block the event loop; without the flag or the epoll entry the pipe
        // cannot be read, and dropping it closes it (the process's writes then fail).
        let nonblocking = fcntl(fd.as_fd(), FcntlArg::F_GETFL).and_then(|flags| {
            fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))
        });
        if nonblocking.and_then(|_| set.add(fd.as_fd(), readable(token))).is_err() {
            self.free.push(token);
            return;
        }
        let pipe = Pipe { fd, target, splitter: LineSplitter::default(), quiet_until: None };
        if token == self.pipes.len() {
            self.pipes.push(Some(pipe));
        } else {
            self.pipes[token] = Some(pipe);
        }
    }

    /// One read from the pipe `token`; its end closes it. A read error ends it like the end of
    /// the stream does: the process's exit is reported by the reaper either way.
    fn read(&mut self, set: &Epoll, token: u64) {
        let token = token as usize;
        let Some(pipe) = self.pipes.get_mut(token).and_then(Option::as_mut) else { return };
        let mut lines = Vec::new();
        let mut buffer = std::mem::take(&mut self.buffer);
        let ended = match read_into(&pipe.fd, &mut buffer) {
            Ok(0) => true,
            Ok(count) if count >= READ_SIZE / 2 => {
                // A full read is kept as the batch when it can be (see `push_owned`); a small
                // one is copied, so that a batch never holds a mostly empty 64 KiB.
                self.buffer = pipe.splitter.push_owned(buffer, &mut lines).unwrap_or_default();
                false
            }
            Ok(_) => {
                pipe.splitter.push(&buffer, &mut lines);
                self.buffer = buffer;
                false
            }
            // A spurious wake-up: nothing to read after all.
            Err(Errno::EAGAIN) => {
                self.buffer = buffer;
                return;
            }
            Err(_) => true,
        };
        pipe.quiet_until = None;
        if ended {
            pipe.splitter.flush(&mut lines);
        } else if pipe.splitter.has_partial() {
            let at = Instant::now() + PARTIAL_LINE_QUIET;
            pipe.quiet_until = Some(at);
            self.quiet.push_back((at, token));
        }
        let batch = record(&mut pipe.target, &self.live, lines);
        if ended {
            self.close(set, token);
        }
        if let Some(batch) = batch {
            self.pass_on(set, (!ended).then_some(token), batch);
        }
    }

    /// Flushes the partial lines whose quiet period is over.
    fn flush_quiet(&mut self, set: &Epoll) {
        let now = Instant::now();
        while let Some(&(at, token)) = self.quiet.front().filter(|&&(at, _)| at <= now) {
            self.quiet.pop_front();
            let Some(pipe) = self.pipes.get_mut(token).and_then(Option::as_mut) else { continue };
            if pipe.quiet_until != Some(at) {
                continue;
            }
            pipe.quiet_until = None;
            let mut lines = Vec::new();
            pipe.splitter.flush(&mut lines);
            if let Some(batch) = record(&mut pipe.target, &self.live, lines) {
                self.pass_on(set, Some(token), batch);
            }
        }
    }

    /// Hands `batch` to the output, or keeps it until there is room, taking its pipe (if it is
    /// still open) out of the epoll set meanwhile. Batches go out in the order they were read.
    fn pass_on(&mut self, set: &Epoll, token: Option<usize>, batch: Arc<Batch>) {
        let batch = if self.waiting.is_empty() {
            match self.output.try_send(batch) {
                Ok(()) => return,
                Err(batch) => batch,
            }
        } else {
            batch
        };
        if let Some(pipe) = token.and_then(|token| self.pipes.get_mut(token)).and_then(Option::as_mut) {
            // The pipe stays open; out of the set it is just not read for now.
            let _ = set.delete(pipe.fd.as_fd());
            pipe.quiet_until = None;
        }
        self.waiting.push_back((token, batch));
    }

    /// The oldest waiting batch has gone to the output: its pipe is read again, and a partial
    /// line it holds gets a fresh quiet period.
    fn resume(&mut self, set: &Epoll) {
        let Some((Some(token), _)) = self.waiting.pop_front() else { return };
        let Some(pipe) = self.pipes.get_mut(token).and_then(Option::as_mut) else { return };
        if set.add(pipe.fd.as_fd(), readable(token)).is_err() {
            // It cannot be read any more: close it, as at a read error.
            self.close(set, token);
            return;
        }
        if pipe.splitter.has_partial() {
            let at = Instant::now() + PARTIAL_LINE_QUIET;
            pipe.quiet_until = Some(at);
            self.quiet.push_back((at, token));
        }
    }

    fn close(&mut self, set: &Epoll, token: usize) {
        if let Some(pipe) = self.pipes.get_mut(token).and_then(Option::take) {
            let _ = set.delete(pipe.fd.as_fd());
            self.free.push(token);
        }
    }
}

/// Sleeps until `at`; without it, never ends.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands `batch` to the output once it has room; without a batch, never ends.
async fn send(output: &Output, batch: Option<Arc<Batch>>) {
    match batch {
        Some(batch) => output.send(batch).await,
        None => std::future::pending().await,
    }
}

/// The epoll entry of the pipe `token`: level-triggered, so a pipe with more than one read's
/// worth comes back in the next round.
fn readable(token: usize) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN, token as u64)
}

/// One read from `fd` into `buffer`, which is cleared first and given [`READ_SIZE`] of room;
/// the bytes read become its contents.
fn read_into(fd: &OwnedFd, buffer: &mut Vec<u8>) -> nix::Result<usize> {
    buffer.clear();
    buffer.reserve_exact(READ_SIZE);
    let room = buffer.spare_capacity_mut();
    // SAFETY: read(2) writes at most `room.len()` bytes into the buffer's spare capacity, which
    // is allocated and exclusively borrowed for the call.
    let count = unsafe { nix::libc::read(fd.as_raw_fd(), room.as_mut_ptr().cast(), room.len()) };
    let count = Errno::result(count)?.unsigned_abs();
    // SAFETY: the kernel initialized the first `count` bytes, and `count <= room.len()`.
    unsafe { buffer.set_len(count) };
    Ok(count)
}

/// Makes a batch of `lines` (none if empty) and records it where it goes besides the output:
/// the ready line's watch, the node's recent lines and the `logs --follow` clients.
fn record(
    target: &mut PumpTarget,
    live: &broadcast::Sender<Arc<Batch>>,
    lines: Vec<u8>,
) -> Option<Arc<Batch>> {
    if lines.is_empty() {
        return None;
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
    let _ = live.send(Arc::clone(&batch));
    Some(batch)
}

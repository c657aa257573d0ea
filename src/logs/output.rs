//! The writer thread that owns stdout (see the module documentation of `logs` for why a thread).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Level;

use super::{Batch, INIT_NAME, init_layer};
use crate::config::LogFormat;

/// Service output waiting for stdout, at most; past it service readers wait (backpressure).
pub const BUFFER_BYTES: usize = 1024 * 1024;
/// Credit is counted in KiB so one permit never stands for a huge batch.
const CREDIT_UNIT: usize = 1024;
/// The largest write: POSIX makes pipe writes up to PIPE_BUF atomic, so a process that shares
/// the init's stdout (the main process) can never cut one of our lines in half.
const WRITE_CHUNK: usize = 4096;

/// How lines look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub format: LogFormat,
    pub timestamps: bool,
    /// Names are padded to this width in text lines, so the `|` line up.
    pub name_width: usize,
    /// Another process writes to the same stdout (the main process does): writes are then cut
    /// at line boundaries within PIPE_BUF so they stay atomic; otherwise they are as large as
    /// what is waiting.
    pub shared_stdout: bool,
}

enum Message {
    Service(Arc<Batch>, usize),
    Init(Level, String, SystemTime),
    /// Answered once everything queued before it is written.
    Flush(Sender<()>),
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Output {
    sender: Sender<Message>,
    credit: Arc<Semaphore>,
    writer: Arc<Writer>,
}

/// The writer thread, started by the first line: an init with nothing to say (a quiet log
/// level and a main process that writes to stdout itself) never pays for a thread, which
/// took a sixth of `INIT -- /bin/true`'s time to create and to take down at exit.
struct Writer {
    /// What the thread takes when it starts.
    waiting: Mutex<Option<Receiver<Message>>>,
    /// Whether the thread runs (`false`: it could not be started, and lines are written by
    /// whoever hands them over).
    running: OnceLock<bool>,
    style: Style,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

impl Output {
    /// Routes the init's own lines through the writer from now on; the thread starts with the
    /// first line.
    pub fn new(style: Style) -> Output {
        let (sender, receiver) = mpsc::channel();
        let credit = Arc::new(Semaphore::new(BUFFER_BYTES / CREDIT_UNIT));
        let writer =
            Arc::new(Writer { waiting: Mutex::new(Some(receiver)), running: OnceLock::new(), style });
        let output = Output { sender, credit, writer };
        let _ = OUTPUT.set(output.clone());
        output
    }

    /// Queues a batch of service lines, waiting while the buffer is full.
    pub async fn send(&self, batch: Arc<Batch>) {
        let units = credit_units(&batch);
        // The semaphore is never closed, so acquiring can only succeed.
        if let Ok(permit) = self.credit.acquire_many(units).await {
            permit.forget();
        }
        self.deliver(Message::Service(batch, units as usize));
    }

    /// Queues a batch of service lines if the buffer has room for it now; gives it back if not.
    pub fn try_send(&self, batch: Arc<Batch>) -> Result<(), Arc<Batch>> {
        let units = credit_units(&batch);
        let Ok(permit) = self.credit.try_acquire_many(units) else { return Err(batch) };
        permit.forget();
        self.deliver(Message::Service(batch, units as usize));
        Ok(())
    }

    /// Waits until everything queued so far has been written (at exit).
    pub fn flush(&self) {
        if self.writer.running.get() != Some(&true) {
            return;
        }
        let (done, wait) = mpsc::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Hands `message` to the writer thread, starting it first if need be; without one, writes
    /// it here and now.
    fn deliver(&self, message: Message) {
        if self.writer.start(&self.credit) {
            let _ = self.sender.send(message);
            return;
        }
        let mut buffer = Vec::new();
        let units = format(&mut buffer, self.writer.style, message, &mut Vec::new());
        let _ = write_all(&buffer, WRITE_CHUNK);
        self.credit.add_permits(units);
    }
}

impl Writer {
    /// Starts the thread unless it was started (or failed to start) before; whether it runs.
    fn start(&self, credit: &Arc<Semaphore>) -> bool {
        *self.running.get_or_init(|| {
            let Some(receiver) = self.waiting.lock().ok().and_then(|mut waiting| waiting.take()) else {
                return false;
            };
            let (credit, style) = (Arc::clone(credit), self.style);
            let started = std::thread::Builder::new()
                .name("stdout".into())
                .spawn(move || write_loop(receiver, &credit, style));
            if let Err(failure) = &started {
                // Said directly: this very line may be the one that needed the thread.
                let text = format!("cannot start the output thread ({failure}); stdout is written in line");
                let mut buffer = Vec::new();
                format_init(&mut buffer, self.style, Level::ERROR, &text, SystemTime::now());
                let _ = write_all(&buffer, WRITE_CHUNK);
            }
            started.is_ok()
        })
    }
}

/// The credit a batch takes: its size in units, at least one, at most the whole buffer (so
/// that any batch can go once the buffer is empty).
fn credit_units(batch: &Batch) -> u32 {
    let units = batch.byte_len().div_ceil(CREDIT_UNIT).max(1);
    u32::try_from(units).unwrap_or(u32::MAX).min((BUFFER_BYTES / CREDIT_UNIT) as u32)
}

/// Hands one of the init's own lines to the writer, or writes it directly before the writer
/// exists (early errors). Never waits for credit: the init's lines are few.
pub(super) fn init_line(level: Level, text: &str) {
    let now = SystemTime::now();
    match OUTPUT.get() {
        Some(output) => output.deliver(Message::Init(level, text.to_string(), now)),
        None => {
            let mut buffer = Vec::new();
            let style =
                Style { format: LogFormat::Text, timestamps: false, name_width: 0, shared_stdout: true };
            format_init(&mut buffer, style, level, text, now);
            let _ = write_all(&buffer, WRITE_CHUNK);
        }
    }
}

fn write_loop(receiver: Receiver<Message>, credit: &Semaphore, style: Style) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut flushed = Vec::new();
    while let Ok(first) = receiver.recv() {
        buffer.clear();
        let mut units = format(&mut buffer, style, first, &mut flushed);
        while buffer.len() < 64 * 1024 && flushed.is_empty() {
            match receiver.try_recv() {
                Ok(next) => units += format(&mut buffer, style, next, &mut flushed),
                Err(_) => break,
            }
        }
        // Nobody can be told about a broken stdout; the lines are dropped, the init goes on.
        let _ = write_all(&buffer, if style.shared_stdout { WRITE_CHUNK } else { buffer.len() });
        credit.add_permits(units);
        for waiter in flushed.drain(..) {
            let _ = waiter.send(());
        }
    }
}

/// Appends a message's lines to `buffer`; returns the credit it held. Flush requests are
/// collected in `flushed`, to be answered after the write.
fn format(buffer: &mut Vec<u8>, style: Style, message: Message, flushed: &mut Vec<Sender<()>>) -> usize {
    match message {
        Message::Flush(waiter) => {
            flushed.push(waiter);
            0
        }
        Message::Service(batch, units) => {
            match style.format {
                LogFormat::Text => {
                    // The prefix is the same for every line of a batch: build it once.
                    let start = buffer.len();
                    text_prefix(buffer, style, &batch.name, batch.time);
                    let prefix = buffer[start..].to_vec();
                    buffer.truncate(start);
                    buffer.reserve(batch.byte_len() + batch.line_count() * prefix.len());
                    // Each line with its newline, as it stands in the batch: one search and
                    // two copies per line (this loop is the output thread's work in a flood).
                    let text = batch.text();
                    let mut start = 0;
                    for end in memchr::memchr_iter(b'\n', text) {
                        buffer.extend_from_slice(&prefix);
                        buffer.extend_from_slice(&text[start..=end]);
                        start = end + 1;
                    }
                    if let Some(rest) = text.get(start..).filter(|rest| !rest.is_empty()) {
                        buffer.extend_from_slice(&prefix);
                        buffer.extend_from_slice(rest);
                        buffer.push(b'\n');
                    }
                }
                LogFormat::Json => {
                    for line in batch.lines() {
                        format_line(
                            buffer,
                            style,
                            &batch.name,
                            batch.stream.as_str(),
                            None,
                            line,
                            batch.time,
                        );
                    }
                }
            }
            units
        }
        Message::Init(level, text, time) => {
            format_init(buffer, style, level, &text, time);
            0
        }
    }
}

fn format_init(buffer: &mut Vec<u8>, style: Style, level: Level, text: &str, time: SystemTime) {
    match style.format {
        LogFormat::Text => {
            let labelled = format!("{}{text}", init_layer::label(level));
            format_line(buffer, style, INIT_NAME, "stdout", None, labelled.as_bytes(), time);
        }
        LogFormat::Json => {
            let level = level.as_str().to_ascii_lowercase();
            format_line(buffer, style, INIT_NAME, "stdout", Some(&level), text.as_bytes(), time);
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: String,
    name: &'a str,
    stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    msg: std::borrow::Cow<'a, str>,
}

/// One framed line, ending in `\n`.
fn format_line(
    buffer: &mut Vec<u8>,
    style: Style,
    name: &str,
    stream: &str,
    level: Option<&str>,
    line: &[u8],
    time: SystemTime,
) {
    match style.format {
        LogFormat::Text => {
            text_prefix(buffer, style, name, time);
            buffer.extend_from_slice(line);
            buffer.push(b'\n');
        }
        LogFormat::Json => {
            let record = JsonLine {
                ts: humantime::format_rfc3339_millis(time).to_string(),
                name,
                stream,
                level,
                msg: String::from_utf8_lossy(line),
            };
            // Serializing plain strings into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buffer, &record);
            buffer.push(b'\n');
        }
    }
}

/// `[TIME ]NAME<padding> | `, the start of a text line.
fn text_prefix(buffer: &mut Vec<u8>, style: Style, name: &str, time: SystemTime) {
    if style.timestamps {
        let _ = write!(buffer, "{} ", humantime::format_rfc3339_millis(time));
    }
    buffer.extend_from_slice(name.as_bytes());
    buffer.resize(buffer.len() + style.name_width.saturating_sub(name.len()), b' ');
    buffer.extend_from_slice(b" | ");
}

/// Writes `data` to fd 1 in chunks of at most `chunk` bytes that end at line boundaries where a
/// line allows it. Waits for fd 1 when someone made it non-blocking (a process sharing it).
fn write_all(data: &[u8], chunk: usize) -> io::Result<()> {
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps it from being closed.
    let stdout = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut rest = data;
    while !rest.is_empty() {
        let cut = chunk_end(rest, chunk);
        match (&*stdout).write(&rest[..cut]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => rest = &rest[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => wait_writable(stdout.as_raw_fd()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The end of the next chunk: the last line boundary within `chunk` bytes, else `chunk` (a
/// line longer than that cannot be atomic anyway).
fn chunk_end(data: &[u8], chunk: usize) -> usize {
    if data.len() <= chunk {
        return data.len();
    }
    memchr::memrchr(b'\n', &data[..chunk]).map_or(chunk, |i| i + 1)
}

fn wait_writable(fd: i32) {
    let mut poll = nix::libc::pollfd { fd, events: nix::libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { nix::libc::poll(&mut poll, 1, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Stream;

    #[test]
    fn text_lines_are_padded_and_json_lines_parse() {
        let batch = Arc::new(Batch::new(Arc::from("web"), Stream::Stderr, b"one\ntwo \"q\"\n".to_vec()));
        let mut text = Vec::new();
        let style = Style { format: LogFormat::Text, timestamps: false, name_width: 5, shared_stdout: false };
        format(&mut text, style, Message::Service(Arc::clone(&batch), 1), &mut Vec::new());
        assert_eq!(String::from_utf8(text).unwrap(), "web   | one\nweb   | two \"q\"\n");
        let mut json = Vec::new();
        format(
            &mut json,
            Style { format: LogFormat::Json, ..style },
            Message::Service(batch, 1),
            &mut Vec::new(),
        );
        let lines: Vec<serde_json::Value> = json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[1]["msg"], "two \"q\"");
        assert_eq!(lines[1]["name"], "web");
        assert_eq!(lines[1]["stream"], "stderr");
        assert!(lines[1]["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn chunks_end_at_line_boundaries() {
        let mut data = Vec::new();
        for _ in 0..100 {
            data.extend_from_slice(&[b'x'; 99]);
            data.push(b'\n');
        }
        assert_eq!(chunk_end(&data, WRITE_CHUNK), 4000);
        assert_eq!(chunk_end(&[b'y'; 5000], WRITE_CHUNK), WRITE_CHUNK);
        assert_eq!(chunk_end(b"short\n", WRITE_CHUNK), 6);
    }
}

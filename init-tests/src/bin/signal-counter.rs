//! A main process for the signal-storm test: counts every signal it receives, exactly.
//!
//! Every signal is blocked and read from a signalfd, so no handler can race and real-time
//! signals, which the kernel queues one by one, are counted one by one. Usage:
//! `signal-counter REALTIME`. It prints `ready`; `got NAME #N.` for each standard signal (N: how
//! many of that signal so far); `all REALTIME real-time signals` once that many real-time
//! signals arrived; and on SIGTERM, `final` followed by `SIGNO=COUNT` for every signal number
//! seen, then exits 0.

use std::collections::BTreeMap;
use std::io::Write;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The kernel's first real-time signal number (glibc reserves 32 and 33 for itself).
const KERNEL_SIGRTMIN: u32 = 32;

fn main() {
    let expected: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: signal-counter REALTIME");
        std::process::exit(2)
    });
    let all = SigSet::all();
    all.thread_block().expect("blocking signals");
    let signals = SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC).expect("a signalfd");
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut realtime = 0u64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").expect("stdout");
    loop {
        let Some(info) = signals.read_signal().expect("reading the signalfd") else { continue };
        let signo = info.ssi_signo;
        let count = counts.entry(signo).or_default();
        *count += 1;
        if signo >= KERNEL_SIGRTMIN {
            realtime += 1;
            if realtime == expected {
                writeln!(out, "all {expected} real-time signals").expect("stdout");
            }
            continue;
        }
        let name = Signal::try_from(signo as i32).map_or("?", |s| &s.as_str()[3..]);
        writeln!(out, "got {name} #{count}.").expect("stdout");
        if signo == Signal::SIGTERM as u32 {
            let list: Vec<String> = counts.iter().map(|(signo, count)| format!("{signo}={count}")).collect();
            writeln!(out, "final {}", list.join(" ")).expect("stdout");
            return;
        }
    }
}

//! Reading many directory entries on a few threads at once. Each read is a handful of system
//! calls (open, pread, close; or one readlink) that depend on nothing else, and a driver
//! directory may hold thousands of libraries, so on a machine with several CPUs a scan takes a
//! fraction of the time. This is only a head start: whatever is not read here (too few entries
//! to repay a thread, no thread to be had, a thread that panicked) the scan reads itself.

use std::num::NonZero;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Items a thread takes from the shared list at a time: few enough to even out the threads'
/// shares, enough to keep them off each other's cache line.
const BATCH: usize = 16;
/// The fewest items per thread: starting one costs about as much as reading ten libraries.
const MIN_PER_THREAD: usize = 128;
/// More threads gain little: their reads meet in the kernel (one directory, one fd table).
const MAX_THREADS: usize = 4;

/// `read` of each of `items`, as `(item, result)` pairs in no particular order, computed on
/// this thread and up to `MAX_THREADS - 1` others; empty when one thread would do.
pub fn run<I, T>(items: &[I], read: impl Fn(I) -> T + Sync) -> Vec<(I, T)>
where
    I: Copy + Sync + Send,
    T: Send,
{
    let threads = threads(items.len());
    if threads < 2 {
        return Vec::new();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(batch) = items.get(next.fetch_add(BATCH, Ordering::Relaxed)..) {
            done.extend(batch.iter().take(BATCH).map(|&item| (item, read(item))));
        }
        done
    };
    thread::scope(|scope| {
        let helpers: Vec<_> =
            (1..threads).filter_map(|_| thread::Builder::new().spawn_scoped(scope, work).ok()).collect();
        let mut done = work();
        for helper in helpers {
            // A thread that panicked leaves its items to the scan.
            done.extend(helper.join().unwrap_or_default());
        }
        done
    })
}

/// How many threads share `count` items.
fn threads(count: usize) -> usize {
    let wanted = (count / MIN_PER_THREAD).min(MAX_THREADS);
    if wanted < 2 {
        return 1;
    }
    thread::available_parallelism().map_or(1, NonZero::get).min(wanted)
}

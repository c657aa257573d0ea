//! Reading many directory entries on a few threads while the directory is still being listed.
//! Each read is a handful of system calls (open, pread, close; or one readlink) that depend on
//! nothing else, and a driver directory may hold thousands of libraries, so on a machine with
//! several CPUs a scan takes a fraction of the time. This is only a head start: whatever is not
//! read here (a thread that panicked, say) the scan reads itself.

use std::mem;
use std::num::NonZero;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ScopedJoinHandle};

/// Items handed over at a time: few enough to even out the threads' shares, enough to keep
/// them from meeting at the queue for every item.
const BATCH: usize = 16;
/// The fewest items per thread: starting one costs about as much as reading ten libraries.
const MIN_PER_THREAD: usize = 128;
/// More threads gain little: their reads meet in the kernel (one directory, one fd table).
const MAX_THREADS: usize = 4;

/// Runs `find`, which passes each item it finds to the function it is given, and meanwhile
/// has `read` applied to the items found: by helper threads, one more for every
/// `MIN_PER_THREAD` items up to one per CPU (at most `MAX_THREADS` with this one), and by this
/// thread once `find` has returned. Returns what `find` returned and the reads, in no
/// particular order.
pub fn while_finding<I, T, R>(
    find: impl FnOnce(&mut dyn FnMut(I)) -> R,
    read: impl Fn(I) -> T + Sync,
) -> (R, Vec<T>)
where
    I: Send,
    T: Send,
{
    let queue = Queue::new();
    let work = || queue.drain(&read);
    thread::scope(|scope| {
        let mut helpers: Vec<ScopedJoinHandle<Vec<T>>> = Vec::new();
        let (mut batch, mut found, mut tried, mut most) = (Vec::with_capacity(BATCH), 0, 0, None);
        let result = find(&mut |item| {
            batch.push(item);
            found += 1;
            if batch.len() == BATCH {
                queue.put(mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            }
            // Counted by tries: a thread that cannot be started is not asked for again and again.
            if found / MIN_PER_THREAD > tried && tried + 1 < *most.get_or_insert_with(threads) {
                tried += 1;
                helpers.extend(thread::Builder::new().spawn_scoped(scope, work).ok());
            }
        });
        queue.put(batch);
        queue.finish();
        let mut done = work();
        for helper in helpers {
            // A thread that panicked leaves its items to the scan.
            done.extend(helper.join().unwrap_or_default());
        }
        (result, done)
    })
}

/// How many threads may read: one per CPU, at most `MAX_THREADS`.
fn threads() -> usize {
    thread::available_parallelism().map_or(1, NonZero::get).min(MAX_THREADS)
}

/// Batches of items waiting to be read, and whether more may come.
struct Queue<I> {
    state: Mutex<State<I>>,
    ready: Condvar,
}

struct State<I> {
    batches: Vec<Vec<I>>,
    finished: bool,
    /// Threads waiting for a batch (only they need waking).
    waiting: usize,
}

impl<I> Queue<I> {
    fn new() -> Self {
        Queue {
            state: Mutex::new(State { batches: Vec::new(), finished: false, waiting: 0 }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<I>> {
        // Nothing here panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, batch: Vec<I>) {
        if batch.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.batches.push(batch);
        if state.waiting > 0 {
            self.ready.notify_one();
        }
    }

    /// No more batches will come: the threads waiting for one stop.
    fn finish(&self) {
        self.lock().finished = true;
        self.ready.notify_all();
    }

    /// Reads the batches as they come, until there are no more.
    fn drain<T>(&self, read: impl Fn(I) -> T) -> Vec<T> {
        let mut done = Vec::new();
        while let Some(batch) = self.take() {
            done.extend(batch.into_iter().map(&read));
        }
        done
    }

    /// The next batch, waiting for one while more may come.
    fn take(&self) -> Option<Vec<I>> {
        let mut state = self.lock();
        loop {
            if let Some(batch) = state.batches.pop() {
                return Some(batch);
            }
            if state.finished {
                return None;
            }
            state.waiting += 1;
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }
}

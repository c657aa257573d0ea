//! Counting the services that run under a supervisor, from the host's /proc, cheaply enough to
//! poll every millisecond while the supervisor starts a thousand of them on a two-core machine.
//!
//! A naive poll would read the `comm` and `children` files of every process in the namespace
//! each time: thousands of reads per millisecond, which would steal the CPU the supervisor
//! needs and slow down the very thing being timed. The census remembers what cannot change
//! while a run lasts instead: a process found running the service program stays so (`sleep
//! 1000` neither execs nor exits in 30 s), and a process below the supervisor that already has
//! a service child (s6-supervise: one service each) gets no more. Each poll then reads only the
//! supervisor itself and the processes still on their way to becoming a service.

use std::collections::{HashMap, HashSet};

use super::process;

/// The `comm` of a running service: every supervisor runs `sleep 1000`.
pub const SERVICE_COMM: &str = "sleep";

/// What one run has learned about the process tree under one unshare.
pub struct Census {
    /// The unshare process; the supervisor is its child.
    root: u32,
    /// Pids known to run the service program.
    services: HashSet<u32>,
    /// Processes below the supervisor whose subtree is complete, with its service count.
    settled: HashMap<u32, usize>,
}

impl Census {
    pub fn new(root: u32) -> Self {
        Census { root, services: HashSet::new(), settled: HashMap::new() }
    }

    /// How many service processes exist now under the root.
    pub fn running(&mut self) -> usize {
        self.count_under(self.root, 0)
    }

    /// Services in the subtree of `pid`, at `depth` below the root (the supervisor is at 1).
    /// The supervisor keeps starting services, so it is never settled; a process deeper down
    /// is settled once it has a service under it.
    fn count_under(&mut self, pid: u32, depth: usize) -> usize {
        if self.services.contains(&pid) {
            return 1;
        }
        if let Some(&count) = self.settled.get(&pid) {
            return count;
        }
        if depth > 0 && process::comm(pid).as_deref() == Some(SERVICE_COMM) {
            self.services.insert(pid);
            return 1;
        }
        let count = process::children(pid).into_iter().map(|child| self.count_under(child, depth + 1)).sum();
        if depth >= 2 && count > 0 {
            self.settled.insert(pid, count);
        }
        count
    }
}

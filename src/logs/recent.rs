//! The last lines of each node, kept for `nix2gpu-init logs`. Batches of lines are shared with
//! the writer (reference counted), so keeping them costs no copy per line.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Batch;

/// The most recent lines of one node, at least `capacity` of them when that many were written.
#[derive(Debug)]
pub struct Recent {
    batches: VecDeque<Arc<Batch>>,
    lines: usize,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Self { batches: VecDeque::new(), lines: 0, capacity }
    }

    /// Keeps `batch`, dropping whole old batches that are no longer needed for `capacity` lines.
    pub fn push(&mut self, batch: Arc<Batch>) {
        self.lines += batch.line_count();
        self.batches.push_back(batch);
        while let Some(front) = self.batches.front() {
            if self.lines - front.line_count() < self.capacity {
                break;
            }
            self.lines -= front.line_count();
            self.batches.pop_front();
        }
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<(Arc<Batch>, String)> {
        let mut found: Vec<(Arc<Batch>, String)> = Vec::new();
        for batch in self.batches.iter().rev() {
            for line in batch.lines().rev() {
                if found.len() == n.min(self.capacity) {
                    found.reverse();
                    return found;
                }
                found.push((Arc::clone(batch), String::from_utf8_lossy(line).into_owned()));
            }
        }
        found.reverse();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::Stream;
    use super::*;

    fn batch(text: &str) -> Arc<Batch> {
        Arc::new(Batch::new(Arc::from("svc"), Stream::Stdout, text.as_bytes().to_vec()))
    }

    #[test]
    fn keeps_the_last_lines_across_batches() {
        let mut recent = Recent::new(3);
        recent.push(batch("1\n2\n"));
        recent.push(batch("3\n4\n"));
        recent.push(batch("5\n"));
        let last: Vec<String> = recent.last(10).into_iter().map(|(_, l)| l).collect();
        assert_eq!(last, ["3", "4", "5"]);
        assert!(recent.batches.len() <= 2, "old batches are dropped");
        let last_two: Vec<String> = recent.last(2).into_iter().map(|(_, l)| l).collect();
        assert_eq!(last_two, ["4", "5"]);
    }
}

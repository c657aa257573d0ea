//! Processes left behind when the main process ends, and how to reach them with a signal.
//!
//! As a namespace's PID 1, `kill(-1, sig)` reaches every other process in the namespace and
//! nothing outside it. As a subreaper on a host that would be every process the user owns, so
//! there the init signals only its own descendants, found by walking the parent links in /proc.

use std::collections::HashMap;
use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `signal` to every process the init is responsible for, except itself. Returns how many
/// processes were signalled when that is known (subreaper mode), or `None` (PID 1 mode).
pub fn signal_all(signal: Signal) -> Option<usize> {
    let me = std::process::id() as i32;
    if me == 1 {
        // ESRCH means nobody is left, which is the goal.
        let _ = kill(Pid::from_raw(-1), signal);
        return None;
    }
    let targets = descendants(me);
    for pid in &targets {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    Some(targets.len())
}

/// Every live descendant of `root`, from the parent links in /proc.
fn descendants(root: i32) -> Vec<i32> {
    let parents = parent_links();
    let mut children_of: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, ppid) in parents {
        children_of.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if let Some(children) = children_of.get(&pid) {
            found.extend_from_slice(children);
            queue.extend_from_slice(children);
        }
    }
    found
}

/// (pid, parent pid) of every process visible in /proc. Processes that vanish while being read
/// are skipped.
fn parent_links() -> Vec<(i32, i32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent_of(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?)))
        .collect()
}

/// The ppid field of a /proc/PID/stat line. The command name in parentheses may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parent_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_a_tricky_command_name() {
        assert_eq!(parent_of("42 (a) b (c)) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn own_children_are_descendants() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(std::process::id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }
}

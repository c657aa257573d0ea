//! The supervisor's side of readiness notification: the notify socket's life (opened when the
//! first notify node appears, at boot or by a reload; removed at exit), and the check of who
//! sent each datagram before its notices reach the graph.

use nix::unistd::{Pid, getpgid, getsid};
use tracing::{debug, warn};

use super::Supervisor;
use crate::config::NotifyAccess;
use crate::graph::{Event, NodeId};
use crate::notify::{self, Datagram};

impl Supervisor {
    /// Opens the notify socket when a node needs it and it is not open yet. A socket that
    /// cannot be opened is a warning: notify nodes then never become ready, and say why.
    pub(super) fn open_notify_socket_if_needed(&mut self) {
        let wanted =
            self.graph.ids().iter().any(|&id| self.nodes.get(id).is_some_and(|n| n.notify.is_some()))
                || self.redefinitions.values().any(|node| node.notify.is_some());
        if !wanted || self.notify_socket.is_some() {
            return;
        }
        let path = self.source.notify_socket.clone();
        match notify::bind(&path) {
            Ok(socket) => {
                let reader = tokio::spawn(notify::serve(path.clone(), socket, self.notices.clone()));
                self.notify_socket = Some((path, reader));
            }
            Err(failure) => warn!(
                "no notify socket ({}: {failure}); processes with `notify: true` will not become ready",
                path.display()
            ),
        }
    }

    /// Stops reading and removes the socket (a clean exit leaves none behind).
    pub(super) fn close_notify_socket(&mut self) {
        if let Some((path, reader)) = self.notify_socket.take() {
            reader.abort();
            let _ = std::fs::remove_file(path);
        }
    }

    /// Hands the notices of a datagram to the graph, if its sender may notify for a node.
    pub(super) fn on_datagram(&mut self, datagram: Datagram) {
        match self.notifier(datagram.sender) {
            Ok(node) => {
                for notice in notify::parse(&datagram.text) {
                    self.feed(Event::Notify { node, notice });
                }
            }
            Err(why) => {
                let text = String::from_utf8_lossy(&datagram.text);
                debug!("ignoring a notification ({why}): {:?}", text.chars().take(200).collect::<String>());
            }
        }
    }

    /// The node the sender `pid` may notify for: the node whose process it is, or, for a node
    /// with `notify_access: all`, the node whose session or process group it is in (each
    /// service leads its own). Anyone else who can reach the socket is refused, whatever the
    /// datagram says.
    fn notifier(&self, sender: Option<i32>) -> Result<NodeId, String> {
        let Some(pid) = sender.filter(|pid| *pid > 0) else {
            return Err("the sender is outside the init's pid namespace".into());
        };
        if let Some(&node) = self.pids.get(&pid) {
            return match self.nodes.get(node) {
                Some(runtime) if runtime.notify.is_some() => Ok(node),
                _ => Err(format!("pid {pid} is `{}`, which has no `notify: true`", self.nodes.name(node))),
            };
        }
        let groups: Vec<i32> = [getsid(Some(Pid::from_raw(pid))), getpgid(Some(Pid::from_raw(pid)))]
            .into_iter()
            .filter_map(|group| group.ok().map(Pid::as_raw))
            .collect();
        self.pids
            .iter()
            .filter(|(leader, _)| groups.contains(leader))
            .map(|(_, &node)| node)
            .find(|&node| self.nodes.get(node).is_some_and(|n| n.notify == Some(NotifyAccess::All)))
            .ok_or_else(|| {
                format!(
                    "pid {pid} is not the process of a notify node, nor in the session or process group \
                     of one with `notify_access: all`"
                )
            })
    }
}

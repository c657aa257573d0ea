//! The runtime side of each graph node: how to launch it, probe it and stop it. Built from the
//! config's plan and the `-- CMD` main process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex_lite::Regex;

use crate::accounts::Credentials;
use crate::config::{NotifyAccess, Plan, ProbePlan, RestartPolicy, Service};
use crate::graph::{NodeId, NodeSpec};
use crate::logs::Recent;
use crate::notify;
use crate::spawn::Environment;

/// The graph node name of the `-- CMD` main process.
pub const MAIN_NAME: &str = "main";

/// Everything the runtime needs to run one node. One is kept per service for the life of the
/// init, so what most nodes lack is boxed: two probe plans and a pattern inline would take 320
/// of the 480 bytes a node had, set or not.
pub struct Node {
    pub name: Arc<str>,
    pub argv: Vec<OsString>,
    pub env: Environment,
    pub working_dir: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    pub readiness: Option<Box<ProbePlan>>,
    pub liveness: Option<Box<ProbePlan>>,
    pub ready_log_line: Option<Box<Regex>>,
    pub shutdown_command: Option<Vec<OsString>>,
    pub shutdown_signal: i32,
    pub main: bool,
    /// Whose notifications count, for a node with `notify`; `None` for the others.
    pub notify: Option<NotifyAccess>,
    /// Output lines kept for `nix2gpu-init logs`; survives restarts of the process (and a
    /// reload's redefinition).
    pub recent: Arc<Mutex<Recent>>,
}

impl Node {
    /// Whether `other` launches, probes and stops the same way: everything but the output
    /// kept so far. A reload restarts a node when this changes (the graph compares the rest).
    pub fn same_launch(&self, other: &Node) -> bool {
        self.name == other.name
            && self.argv == other.argv
            && self.env == other.env
            && self.working_dir == other.working_dir
            && self.credentials == other.credentials
            && self.readiness == other.readiness
            && self.liveness == other.liveness
            && self.ready_log_line.as_deref().map(Regex::as_str)
                == other.ready_log_line.as_deref().map(Regex::as_str)
            && self.shutdown_command == other.shutdown_command
            && self.shutdown_signal == other.shutdown_signal
            && self.main == other.main
            && self.notify == other.notify
    }
}

/// The runtime's nodes by graph id. Ids are stable for the life of the init (see
/// `Graph::reconfigure`): a reload adds nodes under new ids and leaves an empty slot where it
/// removed one.
#[derive(Default)]
pub struct Nodes {
    slots: Vec<Option<Node>>,
}

impl Nodes {
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.slots.get(id).and_then(Option::as_ref)
    }

    /// The node's name; `?` for an empty slot.
    pub fn name(&self, id: NodeId) -> &str {
        self.get(id).map_or("?", |node| &node.name)
    }

    /// Puts `node` under `id`, replacing what was there.
    pub fn set(&mut self, id: NodeId, node: Node) {
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || None);
        }
        self.slots[id] = Some(node);
    }

    pub fn remove(&mut self, id: NodeId) -> Option<Node> {
        self.slots.get_mut(id).and_then(Option::take)
    }
}

impl From<Vec<Node>> for Nodes {
    fn from(nodes: Vec<Node>) -> Self {
        Self { slots: nodes.into_iter().map(Some).collect() }
    }
}

/// The graph's specs and the runtime's nodes, index for index: the plan's services, then the
/// main process (if any). Notify processes get `NOTIFY_SOCKET` (`notify_socket`) and, with a
/// watchdog, `WATCHDOG_USEC`; no other process gets a `NOTIFY_SOCKET` the init itself was given.
pub fn build(
    plan: Plan,
    init_env: &BTreeMap<OsString, OsString>,
    main: Vec<OsString>,
    main_grace: Duration,
    notify_socket: &Path,
) -> (Vec<NodeSpec>, Vec<Node>) {
    let log_length = plan.log_length;
    let mut base = init_env.clone();
    base.remove(&OsString::from(notify::SOCKET_ENV));
    let base = Arc::new(base);
    let (mut specs, mut nodes): (Vec<NodeSpec>, Vec<Node>) = plan
        .services
        .into_iter()
        .map(|service| from_service(service, &base, log_length, notify_socket))
        .unzip();
    if !main.is_empty() {
        specs.push(main_spec(main_grace));
        nodes.push(main_node(main, &base, log_length));
    }
    (specs, nodes)
}

fn from_service(
    service: Service,
    base: &Arc<BTreeMap<OsString, OsString>>,
    log_length: usize,
    notify_socket: &Path,
) -> (NodeSpec, Node) {
    let mut own: Vec<(OsString, OsString)> =
        service.env.into_iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
    if service.spec.notify {
        own.push((notify::SOCKET_ENV.into(), notify_socket.into()));
    }
    if let Some(watchdog) = service.spec.watchdog {
        own.push((notify::WATCHDOG_ENV.into(), watchdog.as_micros().to_string().into()));
    }
    let notify = service.spec.notify.then_some(service.notify_access);
    let node = Node {
        name: Arc::from(service.spec.name.as_str()),
        argv: service.argv.into_iter().map(OsString::from).collect(),
        env: Environment::new(Arc::clone(base), own),
        working_dir: service.working_dir,
        credentials: service.user,
        readiness: service.readiness.map(Box::new),
        liveness: service.liveness.map(Box::new),
        ready_log_line: service.ready_log_line.map(Box::new),
        shutdown_command: service.shutdown_command.map(|argv| argv.into_iter().map(OsString::from).collect()),
        shutdown_signal: service.shutdown_signal,
        main: false,
        notify,
        recent: Arc::new(Mutex::new(Recent::new(log_length))),
    };
    (service.spec, node)
}

fn main_spec(grace: Duration) -> NodeSpec {
    NodeSpec {
        name: MAIN_NAME.into(),
        depends_on: Vec::new(),
        restart: RestartPolicy::No,
        backoff: Duration::ZERO,
        max_restarts: None,
        exit_on_end: false,
        success_exit_codes: vec![0],
        readiness: None,
        liveness: None,
        has_ready_log_line: false,
        notify: false,
        watchdog: None,
        shutdown_timeout: grace,
        disabled: false,
        main: true,
    }
}

fn main_node(argv: Vec<OsString>, base: &Arc<BTreeMap<OsString, OsString>>, log_length: usize) -> Node {
    Node {
        name: Arc::from(MAIN_NAME),
        argv,
        env: Environment::new(Arc::clone(base), Vec::new()),
        working_dir: None,
        credentials: None,
        readiness: None,
        liveness: None,
        ready_log_line: None,
        shutdown_command: None,
        shutdown_signal: nix::libc::SIGTERM,
        main: true,
        notify: None,
        recent: Arc::new(Mutex::new(Recent::new(log_length))),
    }
}

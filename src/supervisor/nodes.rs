//! The runtime side of each graph node: how to launch it, probe it and stop it. Built from the
//! config's plan and the `-- CMD` main process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex_lite::Regex;

use crate::accounts::Credentials;
use crate::config::{Plan, ProbePlan, RestartPolicy, Service};
use crate::graph::NodeSpec;
use crate::logs::Recent;
use crate::spawn::Environment;

/// The graph node name of the `-- CMD` main process.
pub const MAIN_NAME: &str = "main";

/// Everything the runtime needs to run one node.
pub struct Node {
    pub name: Arc<str>,
    pub argv: Vec<OsString>,
    pub env: Environment,
    pub working_dir: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
    pub ready_log_line: Option<Regex>,
    pub shutdown_command: Option<Vec<OsString>>,
    pub shutdown_signal: i32,
    pub main: bool,
    /// Output lines kept for `nix2gpu-init logs`; survives restarts of the process.
    pub recent: Arc<Mutex<Recent>>,
}

/// The graph's specs and the runtime's nodes, index for index: the plan's services, then the
/// main process (if any).
pub fn build(
    plan: Plan,
    init_env: &BTreeMap<OsString, OsString>,
    main: Vec<OsString>,
    main_grace: Duration,
) -> (Vec<NodeSpec>, Vec<Node>) {
    let log_length = plan.log_length;
    let base = Arc::new(init_env.clone());
    let (mut specs, mut nodes): (Vec<NodeSpec>, Vec<Node>) =
        plan.services.into_iter().map(|service| from_service(service, &base, log_length)).unzip();
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
) -> (NodeSpec, Node) {
    let own = service.env.into_iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
    let node = Node {
        name: Arc::from(service.spec.name.as_str()),
        argv: service.argv.into_iter().map(OsString::from).collect(),
        env: Environment::new(Arc::clone(base), own),
        working_dir: service.working_dir,
        credentials: service.user,
        readiness: service.readiness,
        liveness: service.liveness,
        ready_log_line: service.ready_log_line,
        shutdown_command: service.shutdown_command.map(|argv| argv.into_iter().map(OsString::from).collect()),
        shutdown_signal: service.shutdown_signal,
        main: false,
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
        recent: Arc::new(Mutex::new(Recent::new(log_length))),
    }
}

//! Reloading the configuration while running (`nix2gpu-init reload [--dry-run]`, or SIGHUP
//! without a main process): the same sources are read again with the same startup environment
//! and checked exactly as at boot; an invalid configuration changes nothing and its errors go to
//! the log and to the caller. A valid one is planned into nodes, compared with the running ones
//! (the graph compares what it sees, [`Node::same_launch`] the rest) and handed to
//! [`crate::graph::Graph::reconfigure`]; a dry run asks the graph the same question without
//! applying the answer, so it says exactly what the reload would do.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{Node, Supervisor, nodes};
use crate::accounts::AccountFiles;
use crate::boot;
use crate::config::{self, Config, HealthSettings, LogLevel, LogSettings};
use crate::control::{PlannedChange, ReloadReport, Response};
use crate::graph::{Change, NodeChange, NodeSpec};
use crate::pid1;

/// What a reload reads again, as at boot.
pub struct ReloadSource {
    /// The `--config` files as given; without any, `$NIX2GPU_CONFIG` or the default file is
    /// looked for again (so a default file created since boot is read).
    pub configs: Vec<PathBuf>,
    /// The startup environment, before any plan changed it.
    pub env: BTreeMap<OsString, OsString>,
    /// The main process's argv (empty: there is none). It is never restarted.
    pub main: Vec<OsString>,
    /// Where notify processes are told to send their notifications.
    pub notify_socket: PathBuf,
    /// The settings in force that a reload cannot change.
    pub fixed: FixedSettings,
}

/// The init-wide settings that only a new start applies: how the init logs and where it serves
/// its endpoint. A reload compares them to warn when they changed; they are all it keeps of the
/// configuration in force, since the whole [`Config`] (every process's settings, the source
/// texts) would stay in memory for the life of the init only for that comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedSettings {
    pub log_level: Option<LogLevel>,
    pub log: LogSettings,
    pub health: HealthSettings,
}

impl From<Config> for FixedSettings {
    fn from(config: Config) -> Self {
        Self { log_level: config.log_level, log: config.nix2gpu.log, health: config.nix2gpu.health }
    }
}

impl Supervisor {
    /// Reads the configuration again and applies the difference (or, with `dry_run`, says what
    /// it would be). The answer lists every node's change, or every configuration error.
    pub(super) fn reload(&mut self, dry_run: bool) -> Response {
        let response = self.read_and_apply(dry_run);
        // What reading the configuration took is free again (see the function).
        pid1::return_free_memory();
        response
    }

    fn read_and_apply(&mut self, dry_run: bool) -> Response {
        let sources = config::sources(&self.source.configs);
        let (config, plan) = match config::check(&sources, &self.source.env, &AccountFiles::default()) {
            Ok(checked) => checked,
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                for line in &errors {
                    error!("reload: {line}");
                }
                error!("reload: {} error(s) in the configuration; nothing was changed", errors.len());
                return Response::InvalidConfig { errors };
            }
        };
        let mut env = self.source.env.clone();
        plan.base_env.apply(&mut env);
        let secrets = plan.secrets.clone();
        let grace = config.shutdown_timeout();
        let (specs, definitions) =
            nodes::build(plan, &env, self.source.main.clone(), grace, &self.source.notify_socket);
        let launch_changed = self.launch_changes(&definitions);
        if dry_run {
            return match self.graph.plan_reconfigure(&specs, &launch_changed) {
                Ok(changes) => Response::Reload(report(&changes, false)),
                Err(refusal) => refused(refusal),
            };
        }
        self.apply(config, specs, definitions, &launch_changed, &secrets)
    }

    fn apply(
        &mut self,
        config: Config,
        specs: Vec<NodeSpec>,
        definitions: Vec<Node>,
        launch_changed: &BTreeSet<String>,
        secrets: &[config::builtins::StashedSecret],
    ) -> Response {
        let reconfigured = match self.graph.reconfigure(specs, launch_changed, Instant::now()) {
            Ok(reconfigured) => reconfigured,
            Err(refusal) => return refused(refusal),
        };
        for failure in boot::secrets::stash(secrets, &self.source.env) {
            warn!("reload: {failure}");
        }
        self.settings.grace = config.shutdown_timeout();
        self.settings.forward_to = config.forward_to();
        let fixed = FixedSettings::from(config);
        for setting in fixed_settings_changed(&self.source.fixed, &fixed) {
            warn!("reload: `{setting}` changed; it takes effect at the next start");
        }
        self.source.fixed = fixed;
        let kinds = reconfigured.changes.iter().map(|change| change.change);
        for ((&id, mut definition), change) in reconfigured.ids.iter().zip(definitions).zip(kinds) {
            match change {
                Change::Start => self.nodes.set(id, definition),
                Change::Restart => {
                    if let Some(old) = self.nodes.get(id) {
                        definition.recent = old.recent.clone();
                    }
                    self.redefinitions.insert(id, definition);
                }
                Change::Unchanged | Change::Stop => {}
            }
        }
        for change in reconfigured.changes.iter().filter(|c| c.change != Change::Unchanged) {
            info!("reload: {} {}", change.change.as_str(), change.name);
        }
        let report = report(&reconfigured.changes, true);
        info!("reload: {}", summary(&report));
        self.open_notify_socket_if_needed();
        self.execute_all(reconfigured.actions);
        Response::Reload(report)
    }

    /// The names of the nodes whose new definition launches, probes or stops them differently
    /// from the one they have (or are about to get from an earlier reload).
    fn launch_changes(&self, definitions: &[Node]) -> BTreeSet<String> {
        definitions
            .iter()
            .filter(|new| {
                let current = self
                    .graph
                    .node_by_name(&new.name)
                    .and_then(|id| self.redefinitions.get(&id).or_else(|| self.nodes.get(id)));
                current.is_some_and(|current| !current.same_launch(new))
            })
            .map(|node| node.name.to_string())
            .collect()
    }
}

/// A reload the graph refused (the init is shutting down), logged for a reload by SIGHUP.
fn refused(refusal: String) -> Response {
    warn!("reload refused: {refusal}");
    Response::Error { message: format!("reload refused: {refusal}") }
}

fn report(changes: &[NodeChange], applied: bool) -> ReloadReport {
    let changes = changes
        .iter()
        .map(|c| PlannedChange { name: c.name.clone(), change: c.change.as_str().to_string() })
        .collect();
    ReloadReport { applied, changes }
}

/// `2 started, 0 stopped, 1 restarted, 4 unchanged`.
fn summary(report: &ReloadReport) -> String {
    let count = |what: &str| report.changes.iter().filter(|c| c.change == what).count();
    format!(
        "{} started, {} stopped, {} restarted, {} unchanged",
        count("start"),
        count("stop"),
        count("restart"),
        count("unchanged")
    )
}

/// The init-wide settings that differ between `old` and `new` and that only a new start
/// applies: how the init logs and where it serves its endpoint.
fn fixed_settings_changed(old: &FixedSettings, new: &FixedSettings) -> Vec<&'static str> {
    let settings = [
        ("log_level", old.log_level == new.log_level),
        ("nix2gpu.log", old.log == new.log),
        ("nix2gpu.health.listen", old.health == new.health),
    ];
    settings.into_iter().filter(|(_, same)| !same).map(|(name, _)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FixedSettings {
        config::parse(std::path::Path::new("c.yaml"), text).unwrap().into()
    }

    #[test]
    fn only_settings_a_new_start_applies_are_reported() {
        let old =
            parse("log_level: info\nnix2gpu: {shutdown_timeout_seconds: 5}\nprocesses: {a: {command: x}}\n");
        let new = parse("log_level: debug\nnix2gpu: {shutdown_timeout_seconds: 9, log: {format: json}}\n");
        assert_eq!(fixed_settings_changed(&old, &new), ["log_level", "nix2gpu.log"]);
        assert_eq!(fixed_settings_changed(&old, &old), Vec::<&str>::new());
        let listen = parse("nix2gpu: {health: {listen: \"127.0.0.1:9\"}}\n");
        assert_eq!(fixed_settings_changed(&old, &listen), ["log_level", "nix2gpu.health.listen"]);
    }

    /// The runtime nodes of a config text, as a reload builds them.
    fn definitions(text: &str) -> Vec<Node> {
        let dir = std::env::temp_dir().join(format!("nix2gpu-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.yaml", text.len()));
        std::fs::write(&file, text).unwrap();
        let env = BTreeMap::from([(OsString::from("PATH"), OsString::from("/bin"))]);
        let (_, plan) = config::check(std::slice::from_ref(&file), &env, &AccountFiles::default()).unwrap();
        std::fs::remove_file(file).unwrap();
        let socket = PathBuf::from("/run/test-notify.sock");
        nodes::build(plan, &env, Vec::new(), std::time::Duration::from_secs(5), &socket).1
    }

    fn same(a: &str, b: &str, name: &str) -> bool {
        let (a, b) = (definitions(a), definitions(b));
        let find = |nodes: &[Node]| nodes.iter().position(|n| &*n.name == name).unwrap();
        a[find(&a)].same_launch(&b[find(&b)])
    }

    #[test]
    fn a_changed_launch_is_seen_in_commands_environments_and_builtin_settings() {
        let web = "processes:\n  web:\n    command: serve\n    environment: [A=1]\n";
        assert!(same(web, web, "web"));
        assert!(!same(web, "processes:\n  web:\n    command: serve --fast\n    environment: [A=1]\n", "web"));
        assert!(!same(web, "processes:\n  web:\n    command: serve\n    environment: [A=2]\n", "web"));
        assert!(!same(
            web,
            "processes:\n  web:\n    command: serve\n    environment: [A=1]\n    notify: true\n",
            "web"
        ));
        // Built-in nodes carry their settings in their argv: a changed setting restarts them.
        let ssh =
            |port: u16| format!("nix2gpu: {{gpu: {{enable: false}}, ssh: {{enable: true, port: {port}}}}}\n");
        assert!(same(&ssh(22), &ssh(22), "sshd"));
        assert!(!same(&ssh(22), &ssh(2222), "sshd"));
    }

    #[test]
    fn the_summary_counts_each_change() {
        let changes =
            [("a", Change::Start), ("b", Change::Unchanged), ("c", Change::Unchanged), ("d", Change::Stop)]
                .map(|(name, change)| NodeChange { name: name.into(), change })
                .to_vec();
        assert_eq!(summary(&report(&changes, true)), "1 started, 1 stopped, 0 restarted, 2 unchanged");
    }
}

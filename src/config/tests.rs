//! End-to-end tests of the config: files in, located errors or a plan out.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::testing::{Dir, fixture_accounts};
use super::*;
use crate::graph::Thresholds;

/// The init's environment in these tests: no GPU, whatever the machine running them has.
fn init_env() -> BTreeMap<OsString, OsString> {
    [("HOME", "/root"), ("PATH", "/usr/bin:/bin"), ("NVIDIA_VISIBLE_DEVICES", "void")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// `check` on one file holding `text`; errors as `name:line:col: message`, with the fixture
/// account files' paths written `{passwd}` and `{group}`.
fn check_text(name: &str, text: &str) -> Result<(Config, Plan), Vec<String>> {
    let dir = Dir::new("check");
    let path = dir.write(name, text);
    let (_accounts_dir, accounts) = fixture_accounts();
    check(&[path], &init_env(), &accounts).map_err(|errors| {
        errors
            .iter()
            .map(|error| {
                let shown = ConfigError { file: PathBuf::from(name), ..error.clone() }.to_string();
                shown
                    .replace(&accounts.passwd.display().to_string(), "{passwd}")
                    .replace(&accounts.group.display().to_string(), "{group}")
            })
            .collect()
    })
}

fn errors_of(name: &str, text: &str) -> Vec<String> {
    match check_text(name, text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

/// The same document as one-line JSON, as Nix writes it.
fn to_json(yaml: &str) -> String {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    serde_json::to_string(&value).unwrap()
}

/// The 1-based column of the `|` in `needle` within one-line `text` (`needle` without the `|`
/// must occur in it; a needle with no `|` points at its start).
fn column_of(text: &str, needle: &str) -> usize {
    let (before, after) = needle.split_once('|').unwrap_or(("", needle));
    let start = text.find(&format!("{before}{after}")).unwrap_or_else(|| panic!("`{needle}` not in {text}"));
    text[..start + before.len()].chars().count() + 1
}

/// Asserts that `yaml` has exactly one error, `message`, at `at`; and that the same document as
/// one-line JSON has it at the `needle`.
#[track_caller]
fn assert_error(yaml: &str, at: (usize, usize), needle: &str, message: &str) {
    let (line, column) = at;
    assert_eq!(errors_of("c.yaml", yaml), [format!("c.yaml:{line}:{column}: {message}")], "YAML:\n{yaml}");
    let json = to_json(yaml);
    let column = column_of(&json, needle);
    assert_eq!(errors_of("c.json", &json), [format!("c.json:1:{column}: {message}")], "JSON:\n{json}");
}

#[test]
fn unknown_keys_suggest_the_known_one() {
    assert_error(
        "processes:\n  web:\n    comand: serve\n",
        (3, 5),
        "\"comand\"",
        "processes.web.comand: unknown key `comand`; did you mean `command`?",
    );
    assert_error(
        "log_levle: info\n",
        (1, 1),
        "\"log_levle\"",
        "log_levle: unknown key `log_levle`; did you mean `log_level`?",
    );
}

#[test]
fn unsupported_process_compose_keys_are_explained() {
    assert_error(
        "processes:\n  web:\n    command: serve\n    is_tty: true\n",
        (4, 5),
        "\"is_tty\"",
        "processes.web.is_tty: `is_tty` is a process-compose setting nix2gpu-init does not support: services \
         run without a terminal; only the main process (`-- CMD`) gets one",
    );
    assert_error(
        "is_strict: true\n",
        (1, 1),
        "\"is_strict\"",
        "is_strict: `is_strict` is a process-compose setting nix2gpu-init does not support: nix2gpu-init is \
         always strict: unknown keys are errors",
    );
}

#[test]
fn extension_keys_are_ignored() {
    let text = "x-anchors: {a: 1}\nprocesses:\n  web:\n    x-note: anything\n    command: serve\n";
    assert!(check_text("c.yaml", text).is_ok());
    assert!(check_text("c.json", &to_json(text)).is_ok());
}

#[test]
fn wrong_types_are_located() {
    assert_error(
        "processes:\n  web:\n    command: serve\n    disabled: maybe\n",
        (4, 15),
        "\"maybe\"",
        "processes.web.disabled: invalid type: string \"maybe\", expected a boolean",
    );
    assert_error(
        "processes:\n  web:\n    command: serve\n    readiness_probe:\n      tcp_socket: {port: 70000}\n",
        (5, 26),
        "\"port\":|70000",
        "processes.web.readiness_probe.tcp_socket.port: port 70000 is out of range: expected 1..=65535",
    );
    assert_error(
        "processes:\n  web:\n    command: serve\n    availability: {backoff_seconds: -2}\n",
        (4, 37),
        "\"backoff_seconds\":|-2",
        "processes.web.availability.backoff_seconds: expected a non-negative number of seconds, got -2",
    );
}

#[test]
fn undefined_dependencies_suggest_a_process() {
    assert_error(
        "processes:\n  web:\n    command: serve\n    depends_on:\n      dbb: {}\n  db:\n    command: pg\n",
        (5, 7),
        "\"dbb\"",
        "processes.web.depends_on.dbb: `web` depends on `dbb`, which is not defined; did you mean `db`?",
    );
}

#[test]
fn cycles_and_self_dependencies() {
    assert_error(
        "processes:\n  a:\n    command: x\n    depends_on: {b: {}}\n  b:\n    command: x\n    depends_on: {a: {}}\n",
        (4, 18),
        "\"depends_on\":{|\"b\"",
        "processes.a.depends_on.b: dependency cycle: a -> b -> a",
    );
    assert_error(
        "processes:\n  a:\n    command: x\n    depends_on: {a: {}}\n",
        (4, 18),
        "\"depends_on\":{|\"a\"",
        "processes.a.depends_on.a: `a` depends on itself",
    );
}

#[test]
fn conditions_need_what_they_wait_for() {
    assert_error(
        "processes:\n  web:\n    command: x\n    depends_on:\n      db: {condition: process_healthy}\n  db:\n    command: x\n",
        (5, 23),
        "\"process_healthy\"",
        "processes.web.depends_on.db.condition: `web` waits for `db` to be healthy, but `db` has no readiness_probe",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    depends_on:\n      db: {condition: process_log_ready}\n  db:\n    command: x\n",
        (5, 23),
        "\"process_log_ready\"",
        "processes.web.depends_on.db.condition: `web` waits for a ready line from `db`, but `db` has no ready_log_line",
    );
}

#[test]
fn command_or_entrypoint() {
    assert_error(
        "processes:\n  web:\n    command: x\n    entrypoint: [y]\n",
        (4, 5),
        "\"entrypoint\"",
        "processes.web.entrypoint: set either `command` (run by the shell) or `entrypoint` (an argv), not both",
    );
    assert_error(
        "processes:\n  web:\n    working_dir: /srv\n",
        (2, 3),
        "\"web\"",
        "processes.web: a process needs `command` (run by the shell) or `entrypoint` (an argv)",
    );
    assert_error(
        "processes:\n  web:\n    entrypoint: []\n",
        (3, 17),
        "\"entrypoint\":|[]",
        "processes.web.entrypoint: `entrypoint` is empty: it needs at least the program to run",
    );
}

#[test]
fn probes_need_exactly_one_check() {
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      period_seconds: 5\n",
        (4, 5),
        "\"readiness_probe\"",
        "processes.web.readiness_probe: a probe needs exactly one of `exec`, `http_get` and `tcp_socket` (found none)",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    liveness_probe:\n      exec: {command: check}\n      tcp_socket: {port: 80}\n",
        (4, 5),
        "\"liveness_probe\"",
        "processes.web.liveness_probe: a probe needs exactly one of `exec`, `http_get` and `tcp_socket` (found \
         exec and tcp_socket)",
    );
}

#[test]
fn ready_log_line_rules() {
    assert_error(
        "processes:\n  web:\n    command: x\n    ready_log_line: ready\n    readiness_probe:\n      tcp_socket: {port: 80}\n",
        (4, 5),
        "\"ready_log_line\"",
        "processes.web.ready_log_line: `ready_log_line` and `readiness_probe` cannot be used together (as in \
         process-compose): readiness comes from one or the other",
    );
    let errors = errors_of(
        "c.yaml",
        "processes:\n  web:\n    command: x\n    ready_log_line: \"listening on (port\"\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "c.yaml:4:21: processes.web.ready_log_line: `ready_log_line` is not a valid regular expression: "
        ),
        "{errors:?}"
    );
}

#[test]
fn notify_rules() {
    assert_error(
        "processes:\n  web:\n    command: x\n    notify: true\n    readiness_probe:\n      tcp_socket: {port: 80}\n",
        (4, 5),
        "\"notify\"",
        "processes.web.notify: `notify` and `readiness_probe` cannot be used together: readiness comes from one or the other",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    notify: true\n    ready_log_line: up\n",
        (4, 5),
        "\"notify\"",
        "processes.web.notify: `notify` and `ready_log_line` cannot be used together: readiness comes from one or the other",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    watchdog_seconds: 5\n",
        (4, 5),
        "\"watchdog_seconds\"",
        "processes.web.watchdog_seconds: `watchdog_seconds` needs `notify: true`: the watchdog is fed by the \
         process's WATCHDOG=1 notifications",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    notify: false\n    notify_access: all\n",
        (5, 5),
        "\"notify_access\"",
        "processes.web.notify_access: `notify_access` needs `notify: true`: it says who may send the process's notifications",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    notify: true\n    watchdog_seconds: 0\n",
        (5, 23),
        "\"watchdog_seconds\":|0",
        "processes.web.watchdog_seconds: must be more than 0 seconds",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    notify: true\n    notify_access: some\n",
        (5, 20),
        "\"notify_access\":|\"some\"",
        "processes.web.notify_access: unknown variant `some`, expected `main` or `all`",
    );
}

#[test]
fn a_notify_process_is_healthy_for_its_dependents() {
    let text = "processes:\n  db:\n    command: x\n    notify: true\n    notify_access: all\n    watchdog_seconds: 2.5\n  web:\n    command: y\n    depends_on: {db: {condition: process_healthy}}\n";
    let (_config, plan) = check_text("c.yaml", text).unwrap();
    let db = &plan.services[0];
    assert_eq!((db.spec.name.as_str(), db.spec.notify), ("db", true));
    assert_eq!(db.spec.watchdog, Some(Duration::from_millis(2500)));
    assert_eq!(db.notify_access, NotifyAccess::All);
    let web = &plan.services[1];
    assert_eq!((web.spec.notify, web.spec.watchdog, web.notify_access), (false, None, NotifyAccess::Main));
}

#[test]
fn shutdown_signals() {
    assert_error(
        "processes:\n  web:\n    command: x\n    shutdown:\n      signal: SIGTREM\n",
        (5, 15),
        "\"SIGTREM\"",
        "processes.web.shutdown.signal: unknown signal `SIGTREM`; did you mean `SIGTERM`?",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    shutdown:\n      signal: 99\n",
        (5, 15),
        "\"signal\":|99",
        "processes.web.shutdown.signal: signal 99 is out of range: expected 1..=31 or a name such as SIGTERM",
    );
}

#[test]
fn users_and_groups_are_looked_up() {
    assert_error(
        "processes:\n  web:\n    command: x\n    user: alcie\n",
        (4, 11),
        "\"alcie\"",
        "processes.web.user: user `alcie` is not in {passwd}; did you mean `alice`?",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    user: alice:vidoe\n",
        (4, 11),
        "\"alice:vidoe\"",
        "processes.web.user: group `vidoe` is not in {group}; did you mean `video`?",
    );
}

#[test]
fn environment_entries_need_an_equals_sign() {
    assert_error(
        "processes:\n  web:\n    command: x\n    environment:\n      - PORT=1\n      - DEBUG\n",
        (6, 9),
        "\"DEBUG\"",
        "processes.web.environment[1]: `DEBUG` is not KEY=VALUE: add `=` (`DEBUG=` for an empty value)",
    );
    assert_error(
        "environment:\n  - DEBUG\nprocesses:\n  web:\n    command: x\n",
        (2, 5),
        "\"DEBUG\"",
        "environment[0]: `DEBUG` is not KEY=VALUE: add `=` (`DEBUG=` for an empty value)",
    );
}

#[test]
fn numbers_in_range() {
    assert_error(
        "processes:\n  web:\n    command: x\n    success_exit_codes: [0, 300]\n",
        (4, 29),
        ",|300",
        "processes.web.success_exit_codes[1]: exit code 300 is out of range: expected 0..=255",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      tcp_socket: {port: 80}\n      failure_threshold: 0\n",
        (6, 26),
        "\"failure_threshold\":|0",
        "processes.web.readiness_probe.failure_threshold: must be at least 1 (it counts consecutive probe results)",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      tcp_socket: {port: 0}\n",
        (5, 26),
        "\"port\":|0",
        "processes.web.readiness_probe.tcp_socket.port: port 0 is out of range: expected 1..=65535",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      tcp_socket: {port: http}\n",
        (5, 26),
        "\"http\"",
        "processes.web.readiness_probe.tcp_socket.port: port `http` is not a number: expected 1..=65535",
    );
}

#[test]
fn probes_speak_plain_http_to_addresses() {
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      http_get: {scheme: https, port: 443}\n",
        (5, 26),
        "\"https\"",
        "processes.web.readiness_probe.http_get.scheme: scheme `https` is not supported: probes speak plain HTTP \
         only; probe a plain-HTTP port, or use an `exec` probe (for example with curl)",
    );
    assert_error(
        "processes:\n  web:\n    command: x\n    readiness_probe:\n      tcp_socket: {host: db.internal, port: 5432}\n",
        (5, 26),
        "\"db.internal\"",
        "processes.web.readiness_probe.tcp_socket.host: host `db.internal` is not an IP address or `localhost`: \
         probes do no DNS lookups (PID 1 has no resolver)",
    );
}

#[test]
fn reserved_names() {
    assert_error(
        "processes:\n  init:\n    command: x\n",
        (2, 3),
        "\"init\"",
        "processes.init: `init` is reserved: the init's own log lines use that name; pick another name",
    );
    assert_error(
        "processes:\n  sshd:\n    command: x\n",
        (2, 3),
        "\"sshd\"",
        "processes.sshd: `sshd` is the name of the built-in sshd node; to run your own instead, turn the \
         built-in off with `nix2gpu.ssh.enable: false` and give yours another name",
    );
}

/// The plan for `text` with these variables added to the init's environment.
fn plan_with_env(text: &str, vars: &[(&str, &str)]) -> Plan {
    let mut env = init_env();
    env.extend(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
    let config = parse(Path::new("c.yaml"), text).unwrap();
    plan(&config, &env, &fixture_accounts().1).unwrap()
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.services.iter().map(|service| service.spec.name.as_str()).collect()
}

#[test]
fn builtins_follow_what_the_container_was_given() {
    let off = "nix2gpu: {gpu: {enable: false}}\nprocesses:\n  web:\n    command: x\n";
    assert_eq!(names(&plan_with_env(off, &[])), ["web"]);
    // Keys in any of the platforms' variables turn sshd on; an auth key turns tailscale on.
    for var in ["SSH_PUBLIC_KEYS", "PUBLIC_KEY", "SSH_PUBLIC_KEY"] {
        assert_eq!(names(&plan_with_env(off, &[(var, "ssh-ed25519 AAAA x")])), ["web", "sshd"]);
    }
    assert_eq!(names(&plan_with_env(off, &[("TAILSCALE_AUTHKEY", "tskey-1")])), ["web", "tailscale"]);
    let forced =
        "nix2gpu: {gpu: {enable: true}, ssh: {enable: true, port: 2222}, tailscale: {enable: false}}\n";
    let plan = plan_with_env(forced, &[("TAILSCALE_AUTHKEY", "tskey-1")]);
    assert_eq!(names(&plan), ["gpu", "sshd"]);
    let sshd = &plan.services[1];
    assert_eq!(sshd.argv[1..3], ["builtin", "sshd"]);
    let Ok(builtins::Builtin::Sshd(settings)) = builtins::Builtin::from_args("sshd", &sshd.argv[3]) else {
        panic!("sshd's settings do not read back: {:?}", sshd.argv)
    };
    assert_eq!(settings.port, 2222);
    // Ready when OpenSSH says it listens on the port (sshd -e's own line), not by probing it.
    let ready = sshd.ready_log_line.as_ref().expect("sshd has a ready line");
    assert!(ready.is_match("Server listening on 0.0.0.0 port 2222."));
    assert!(ready.is_match("Server listening on :: port 2222."));
    assert!(!ready.is_match("Server listening on 0.0.0.0 port 22."));
    assert!(sshd.readiness.is_none());
    // The driver's directories come first on every process's paths.
    assert_eq!(
        plan.base_env.set,
        [
            ("PATH".to_string(), "/run/nix2gpu/bin:/usr/bin:/bin".to_string()),
            ("LD_LIBRARY_PATH".to_string(), "/run/opengl-driver/lib".to_string())
        ]
    );
}

#[test]
fn secrets_leave_the_environment_for_files() {
    let text = "processes:\n  web:\n    command: echo ${ROOT_PASSWORD}${TAILSCALE_AUTHKEY}\nnix2gpu: {gpu: {enable: false}}\n";
    let plan = plan_with_env(text, &[("ROOT_PASSWORD", "hunter2"), ("TAILSCALE_AUTHKEY", "tskey-1")]);
    assert_eq!(names(&plan), ["web", "sshd", "tailscale"]);
    assert_eq!(plan.base_env.remove, ["ROOT_PASSWORD", "TAILSCALE_AUTHKEY"]);
    let stashed: Vec<&str> = plan.secrets.iter().map(|s| s.var.as_str()).collect();
    assert_eq!(stashed, ["ROOT_PASSWORD", "TAILSCALE_AUTHKEY"]);
    // Neither a command nor a built-in's settings (its command line) holds a value.
    for service in &plan.services {
        let argv = service.argv.join(" ");
        assert!(!argv.contains("hunter2") && !argv.contains("tskey-1"), "{argv}");
    }
    // A file given for the secret is used as it is: nothing is stashed.
    let plan = plan_with_env(text, &[("ROOT_PASSWORD_FILE", "/secrets/root"), ("ROOT_PASSWORD", "x")]);
    assert!(plan.secrets.is_empty());
    assert!(plan.services[1].argv[3].contains("\"/secrets/root\""));
}

#[test]
fn tailscale_opens_nothing_beyond_the_tailnet_link_by_default() {
    let text = "nix2gpu: {gpu: {enable: false}, ssh: {enable: false}}\n";
    let plan = plan_with_env(text, &[("TAILSCALE_AUTHKEY", "tskey-1")]);
    let tailscale = &plan.services[0];
    let Ok(builtins::Builtin::Tailscale(node)) =
        builtins::Builtin::from_args("tailscale", &tailscale.argv[3])
    else {
        panic!("tailscale's settings do not read back: {:?}", tailscale.argv)
    };
    // No Tailscale SSH, no subnet routes taken, no tags, and no TUN device (userspace).
    assert!(!node.ssh && !node.accept_routes && node.tags.is_empty() && node.userspace_networking);
}

#[test]
fn dependencies_on_builtins() {
    let text = "nix2gpu: {gpu: {enable: false}}\nprocesses:\n  web:\n    command: x\n    depends_on:\n      gpu: {condition: process_completed_successfully}\n      sshd: {condition: process_healthy}\n";
    // Built-ins that do not run are nothing to wait for.
    let plan = plan_with_env(text, &[]);
    assert!(plan.services[0].spec.depends_on.is_empty());
    // sshd becomes ready (by its ready line); a dependency on it gates the process.
    let plan = plan_with_env(text, &[("PUBLIC_KEY", "ssh-ed25519 AAAA x")]);
    assert_eq!(plan.services[0].spec.depends_on, [(1, Condition::ProcessHealthy)]);
    // The one-shot gpu node is never healthy: it completes.
    let text = "nix2gpu: {gpu: {enable: true}}\nprocesses:\n  web:\n    command: x\n    depends_on:\n      gpu: {condition: process_healthy}\n";
    let config = parse(Path::new("c.yaml"), text).unwrap();
    let errors = super::plan(&config, &init_env(), &fixture_accounts().1).unwrap_err();
    assert!(errors[0].message.contains("`gpu` has no readiness_probe"), "{errors:?}");
}

#[test]
fn env_files_must_be_readable() {
    assert_error(
        "processes:\n  web:\n    command: x\n    env_file: /nonexistent/web.env\n",
        (4, 15),
        "\"/nonexistent",
        "processes.web.env_file: cannot read env_file /nonexistent/web.env: No such file or directory (os error 2)",
    );
}

#[test]
fn bad_expansions_are_located() {
    assert_error(
        "processes:\n  web:\n    command: echo ${HOME\n",
        (3, 14),
        "\"echo",
        "processes.web.command: unclosed `${HOME`: add the closing `}`, or write `$$` for a literal `$`",
    );
}

#[test]
fn syntax_errors_in_yaml_and_json() {
    assert_eq!(
        errors_of("c.yaml", "processes:\n  web: [serve\n"),
        ["c.yaml:3:1: did not find expected ',' or ']', while parsing a flow sequence at 2:8"]
    );
    assert_eq!(
        errors_of("c.json", r#"{"processes": {"web": {"command": "x"}}"#),
        ["c.json:1:40: did not find expected ',' or '}', while parsing a flow mapping"]
    );
    assert_eq!(
        errors_of("c.json", r#"{"processes": {"web": {"command": "x", "command": "y"}}}"#),
        ["c.json:1:40: processes.web.command: duplicate key, first defined at 1:24"]
    );
}

#[test]
fn every_error_in_a_file_is_reported() {
    let text = "\
log_levle: info
environment: [A=1, B]
processes:
  web:
    command: serve
    depends_on: {dbb: {}, cache: {condition: process_healthy}}
    shutdown: {signal: TREM}
  cache:
    command: redis
    is_daemon: true
  db:
    entrypoint: pg
  worker:
    command: work
    disabled: perhaps
";
    assert_eq!(
        errors_of("c.yaml", text),
        [
            "c.yaml:1:1: log_levle: unknown key `log_levle`; did you mean `log_level`?",
            "c.yaml:2:20: environment[1]: `B` is not KEY=VALUE: add `=` (`B=` for an empty value)",
            "c.yaml:6:18: processes.web.depends_on.dbb: `web` depends on `dbb`, which is not defined; did you mean `db`?",
            "c.yaml:7:24: processes.web.shutdown.signal: unknown signal `TREM`; did you mean `SIGTERM`?",
            "c.yaml:10:5: processes.cache.is_daemon: `is_daemon` is a process-compose setting nix2gpu-init does not \
             support: run the program in the foreground (most daemons have a flag for it)",
            "c.yaml:12:17: processes.db.entrypoint: invalid type: string \"pg\", expected a sequence",
            "c.yaml:15:15: processes.worker.disabled: invalid type: string \"perhaps\", expected a boolean",
        ]
    );
}

/// Broken documents of every kind: each gives located errors (or, for the empty ones, a valid
/// empty configuration), and none panics.
#[test]
fn malformed_documents_never_panic() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    let cases: Vec<(&str, String, (usize, usize))> = vec![
        ("tab", "processes:\n\tweb: {}\n".into(), (2, 1)),
        ("unclosed quote", "log_level: \"info\n".into(), (2, 1)),
        ("unclosed bracket", "environment: [A=1\n".into(), (2, 1)),
        ("unclosed brace", "{\"processes\": {".into(), (1, 16)),
        ("duplicate", "log_level: info\nlog_level: debug\n".into(), (2, 1)),
        ("list at top", "- a\n- b\n".into(), (1, 1)),
        ("scalar at top", "hello\n".into(), (1, 1)),
        ("number at top", "42".into(), (1, 1)),
        ("huge number", "log_length: 123456789012345678901234567890\n".into(), (1, 13)),
        ("huge float", "nix2gpu: {shutdown_timeout_seconds: 1e999}\n".into(), (1, 37)),
        (
            "huge exit code",
            "processes:\n  a:\n    command: x\n    success_exit_codes: [99999999999]\n".into(),
            (4, 26),
        ),
        ("deep", format!("x-deep: {}{}\n", "[".repeat(200), "]".repeat(200)), (1, 136)),
        ("control characters", "log_level: \u{7}\n".into(), (1, 12)),
        ("nul", "log_level: in\0fo\n".into(), (1, 14)),
        ("two documents", "log_level: info\n---\nlog_level: debug\n".into(), (2, 1)),
        ("unknown anchor", "processes: *nothing\n".into(), (1, 12)),
        ("billion laughs", laughs.into(), (1, 1)),
        ("processes as a list", "processes: [web, db]\n".into(), (1, 12)),
        ("process as a string", "processes:\n  web: serve\n".into(), (2, 8)),
        ("complex key", "processes:\n  ? [a, b]\n  : {command: x}\n".into(), (2, 5)),
        ("tagged", "log_level: !custom info\n".into(), (1, 1)),
        ("bad indentation", "processes:\n  web:\n    command: x\n   disabled: true\n".into(), (4, 4)),
    ];
    for (name, text, (line, column)) in cases {
        let errors = check_text("c.yaml", &text).err().unwrap_or_default();
        assert!(
            errors.first().is_some_and(|first| first.starts_with(&format!("c.yaml:{line}:{column}: "))),
            "{name}: {errors:#?}"
        );
    }
    for text in ["", "\n", "# nothing\n# at all\n", "---\n", "null\n", "~"] {
        assert!(check_text("c.yaml", text).is_ok(), "{text:?}");
    }
}

#[test]
fn invalid_utf8_is_located() {
    let dir = Dir::new("utf8");
    let path = dir.0.join("c.yaml");
    std::fs::write(&path, b"log_level: info\nname: caf\xc3\xa9 \xff\n").unwrap();
    let errors = load(&[path]).unwrap_err();
    assert_eq!(errors[0].location, Some((2, 12)), "{errors:?}");
    assert_eq!(errors[0].message, "not UTF-8 text (byte 0xff)");
}

/// Random edits of a real config: whatever they produce, checking it must not panic.
#[test]
fn mutated_configs_never_panic() {
    let original = include_str!("../../fixtures/configs/valid/web-stack.yaml");
    let json = to_json(original);
    let alphabet: Vec<char> = " \n\t:-{}[],\"'#&*!|>$%@`0123456789abcxyz_.\u{e9}".chars().collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound.max(1) as u64) as usize
    };
    let (_dir, accounts) = fixture_accounts();
    for round in 0..1500 {
        let source = if round % 3 == 0 { &json } else { original };
        let mut chars: Vec<char> = source.chars().collect();
        for _ in 0..=random(4) {
            let at = random(chars.len());
            match random(3) {
                0 => chars[at] = alphabet[random(alphabet.len())],
                1 => chars.insert(at, alphabet[random(alphabet.len())]),
                _ => {
                    chars.remove(at);
                }
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(config) = parse(Path::new("m.yaml"), &text) {
            let _ = plan(&config, &init_env(), &accounts);
        }
    }
}

#[test]
fn the_health_endpoint_address_is_checked() {
    assert_error(
        "nix2gpu:\n  health:\n    listen: localhost:8080\n",
        (3, 13),
        "\"localhost:8080\"",
        "nix2gpu.health.listen: `localhost` in `localhost:8080` is not an IP address: the endpoint does no DNS \
         lookups (PID 1 has no resolver); write an address, such as `0.0.0.0:8080`, `127.0.0.1:9100` or \
         `[::]:8080`",
    );
    assert_error(
        "nix2gpu:\n  health:\n    listn: 0.0.0.0:8080\n",
        (3, 5),
        "\"listn\"",
        "nix2gpu.health.listn: unknown key `listn`; did you mean `listen`?",
    );
    let (config, _) = check_text("c.yaml", "nix2gpu: {health: {listen: \"[::]:9100\"}}\n").unwrap();
    assert_eq!(config.nix2gpu.health.listen.as_deref(), Some("[::]:9100"));
    let (config, _) = check_text("c.yaml", "nix2gpu: {}\n").unwrap();
    assert_eq!(config.nix2gpu.health.listen, None);
}

#[test]
fn later_files_override_earlier_ones() {
    let dir = Dir::new("merge");
    let base = dir.write(
        "base.yaml",
        "log_level: warn\nlog_length: 50\nenvironment: [A=1, B=1]\nnix2gpu:\n  shutdown_timeout_seconds: 3\n  log: {format: json}\n\
         processes:\n  web: {command: old, disabled: true}\n  db: {command: pg}\n",
    );
    let site = dir.write(
        "site.yaml",
        "log_level: debug\nenvironment: [B=2]\nnix2gpu:\n  log: {timestamps: true}\nprocesses:\n  web: {command: new}\n",
    );
    let config = load(&[base.clone(), site.clone()]).unwrap();
    assert_eq!(config.log_level, Some(LogLevel::Debug));
    assert_eq!(config.log_length, Some(50));
    assert_eq!(config.environment, ["A=1", "B=1", "B=2"]);
    assert_eq!(config.shutdown_timeout(), Duration::from_secs(3));
    assert_eq!(config.nix2gpu.log.format, Some(LogFormat::Json));
    assert_eq!(config.nix2gpu.log.timestamps, Some(true));
    assert_eq!(config.processes["web"], Process { command: Some("new".into()), ..Process::default() });
    assert_eq!(config.processes["db"].command.as_deref(), Some("pg"));
    let (_accounts_dir, accounts) = fixture_accounts();
    let plan = plan(&config, &init_env(), &accounts).unwrap();
    let cwd = std::env::current_dir().unwrap().display().to_string();
    assert_eq!(
        plan.services[1].env,
        [("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string()), ("PWD".to_string(), cwd)]
    );
    let health = dir.write("health.yaml", "nix2gpu: {health: {listen: \"127.0.0.1:9100\"}}\n");
    let later = dir.write("later.yaml", "nix2gpu: {health: {listen: \"0.0.0.0:8080\"}}\n");
    let config = load(&[base, health.clone(), site]).unwrap();
    assert_eq!(config.nix2gpu.health.listen.as_deref(), Some("127.0.0.1:9100"), "kept when not set again");
    let config = load(&[health, later]).unwrap();
    assert_eq!(config.nix2gpu.health.listen.as_deref(), Some("0.0.0.0:8080"), "the later file wins");
}

#[test]
fn errors_after_merging_name_the_file_they_come_from() {
    let dir = Dir::new("merge-errors");
    let base = dir.write("base.yaml", "environment: [A]\nprocesses:\n  db: {command: pg}\n");
    let site =
        dir.write("site.yaml", "environment: [B]\nprocesses:\n  web: {command: x, depends_on: {dbb: {}}}\n");
    let (_accounts_dir, accounts) = fixture_accounts();
    let errors = check(&[base.clone(), site.clone()], &init_env(), &accounts).unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let (base, site) = (base.display(), site.display());
    assert_eq!(
        shown,
        [
            format!("{base}:1:15: environment[0]: `A` is not KEY=VALUE: add `=` (`A=` for an empty value)"),
            format!("{site}:1:15: environment[1]: `B` is not KEY=VALUE: add `=` (`B=` for an empty value)"),
            format!(
                "{site}:3:34: processes.web.depends_on.dbb: `web` depends on `dbb`, which is not defined; did you mean `db`?"
            ),
        ]
    );
}

#[test]
fn every_unreadable_file_is_reported() {
    let dir = Dir::new("unreadable");
    let bad = dir.write("bad.yaml", "bogus: 1\n");
    let missing = dir.0.join("missing.yaml");
    let errors = load(&[bad, missing]).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[1].to_string().ends_with("missing.yaml: cannot read: No such file or directory (os error 2)")
    );
}

#[test]
fn plan_defaults() {
    let (_config, plan) = check_text("c.yaml", "processes:\n  web:\n    command: serve --port 80\n    readiness_probe:\n      tcp_socket: {port: 80}\n").unwrap();
    assert_eq!(plan.log_length, 1000);
    let web = &plan.services[0];
    // Plain words need no shell; the program gets the PWD the shell would have exported.
    assert_eq!(web.argv, ["serve", "--port", "80"]);
    let cwd = std::env::current_dir().unwrap().display().to_string();
    assert_eq!(web.env, [("PWD".to_string(), cwd)]);
    assert!(web.working_dir.is_none() && web.user.is_none() && web.liveness.is_none());
    assert_eq!(web.shutdown_signal, 15);
    assert!(web.shutdown_command.is_none() && web.ready_log_line.is_none());
    let readiness = web.readiness.as_ref().unwrap();
    assert_eq!(readiness.check, ProbeCheck::Tcp { addr: "127.0.0.1:80".parse().unwrap() });
    assert_eq!(
        (readiness.initial_delay, readiness.period, readiness.timeout),
        (Duration::ZERO, Duration::from_secs(10), Duration::from_secs(1))
    );
    let spec = &web.spec;
    assert_eq!(spec.name, "web");
    assert_eq!(spec.readiness, Some(Thresholds { success: 1, failure: 3 }));
    assert_eq!(spec.restart, RestartPolicy::No);
    assert_eq!(spec.backoff, Duration::from_secs(1));
    assert_eq!(spec.max_restarts, None);
    assert_eq!(spec.success_exit_codes, [0]);
    assert_eq!(spec.shutdown_timeout, Duration::from_secs(10));
    assert!(
        !spec.main
            && !spec.disabled
            && !spec.exit_on_end
            && !spec.has_ready_log_line
            && spec.depends_on.is_empty()
    );
}

#[test]
fn plan_expands_and_layers_the_environment() {
    let dir = Dir::new("layers");
    dir.write("web.env", "FROM_FILE=file\nSHARED=file\n");
    let text = format!(
        "shell: {{shell_command: /bin/bash, shell_argument: -ec}}\nenvironment: [SHARED=global, G=$HOME/g]\nprocesses:\n  web:\n    \
         working_dir: {}\n    env_file: web.env\n    environment: [SHARED=own-$SHARED, PATH=/opt/bin:$PATH]\n    \
         command: run $SHARED ${{FROM_FILE}} ${{UNSET:-dflt}} $$HOME\n    shutdown: {{command: stop $G, signal: INT}}\n    \
         liveness_probe:\n      exec: {{command: check $FROM_FILE}}\n",
        dir.0.display()
    );
    let (_config, plan) = check_text("c.yaml", &text).unwrap();
    let web = &plan.services[0];
    assert_eq!(web.argv, ["/bin/bash", "-ec", "run own-file file dflt $HOME"]);
    let env: Vec<(&str, &str)> = web.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        env,
        [("SHARED", "own-file"), ("G", "/root/g"), ("FROM_FILE", "file"), ("PATH", "/opt/bin:/usr/bin:/bin")]
    );
    assert_eq!(
        web.shutdown_command.as_deref(),
        Some(&["/bin/bash".to_string(), "-ec".into(), "stop /root/g".into()][..])
    );
    assert_eq!(web.shutdown_signal, 2);
    let check = &web.liveness.as_ref().unwrap().check;
    assert_eq!(
        *check,
        ProbeCheck::Exec {
            argv: vec!["/bin/bash".into(), "-ec".into(), "check file".into()],
            working_dir: Some(dir.0.clone())
        }
    );
}

#[test]
fn plan_resolves_dependencies_users_and_probes() {
    let text = "\
processes:
  web:
    entrypoint: [/app/web, --port, \"${PORT:-8080}\"]
    user: alice
    depends_on: {db: {condition: process_healthy}, log: {condition: process_log_ready}}
    readiness_probe:
      http_get: {host: localhost, port: \"8080\", path: /healthz, status_code: 204}
      success_threshold: 2
    availability: {restart: always, max_restarts: 0, backoff_seconds: 0.5, exit_on_end: true}
    success_exit_codes: [0, 143]
  db:
    command: pg
    user: \"70:44\"
    readiness_probe:
      http_get: {host: \"::1\", port: 5432}
  log:
    command: tail
    ready_log_line: \"ready in \\\\d+ms\"
    disabled: true
";
    let (_config, plan) = check_text("c.yaml", text).unwrap();
    let names: Vec<&str> = plan.services.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, ["db", "log", "web"]);
    let web = &plan.services[2];
    assert_eq!(web.argv, ["/app/web", "--port", "8080"]);
    assert_eq!(web.user, Some(Credentials { uid: 1000, gid: 1000, groups: vec![1000, 44, 105] }));
    assert_eq!(web.spec.depends_on, [(0, Condition::ProcessHealthy), (1, Condition::ProcessLogReady)]);
    assert_eq!(web.spec.readiness, Some(Thresholds { success: 2, failure: 3 }));
    assert_eq!((web.spec.restart, web.spec.max_restarts), (RestartPolicy::Always, None));
    assert_eq!(web.spec.backoff, Duration::from_millis(500));
    assert!(web.spec.exit_on_end);
    assert_eq!(web.spec.success_exit_codes, [0, 143]);
    let http = ProbeCheck::Http {
        addr: "127.0.0.1:8080".parse().unwrap(),
        path: "/healthz".into(),
        host_header: "localhost:8080".into(),
        status: Some(204),
    };
    assert_eq!(web.readiness.as_ref().unwrap().check, http);
    let db = &plan.services[0];
    assert_eq!(db.user, Some(Credentials { uid: 70, gid: 44, groups: vec![44] }));
    let ProbeCheck::Http { addr, host_header, .. } = &db.readiness.as_ref().unwrap().check else { panic!() };
    assert_eq!((addr.to_string(), host_header.as_str()), ("[::1]:5432".to_string(), "[::1]:5432"));
    let log = &plan.services[1];
    assert!(log.spec.disabled && log.spec.has_ready_log_line);
    assert!(log.ready_log_line.as_ref().unwrap().is_match("server ready in 35ms"));
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs").join(path)
}

fn fixture_env() -> BTreeMap<OsString, OsString> {
    let mut env = init_env();
    env.insert("STACK_DIR".into(), fixture("valid").into());
    env
}

fn fixture_account_files() -> AccountFiles {
    AccountFiles { passwd: fixture("etc/passwd"), group: fixture("etc/group") }
}

#[test]
fn the_web_stack_fixture_plans() {
    let (config, plan) =
        check(&[fixture("valid/web-stack.yaml")], &fixture_env(), &fixture_account_files()).unwrap();
    assert_eq!(config.processes.len(), 4);
    assert_eq!(plan.log_length, 500);
    let names: Vec<&str> = plan.services.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, ["db", "migrate", "web", "worker"]);
    let [db, migrate, web, worker] = &plan.services[..] else { panic!() };
    assert_eq!(db.argv, ["postgres", "-D", "/var/lib/stack/pg", "-p", "5433"]);
    assert_eq!(db.user, Some(Credentials { uid: 999, gid: 999, groups: vec![999, 44] }));
    assert_eq!(db.shutdown_signal, 2);
    assert_eq!(migrate.argv, ["/app/bin/migrate", "--database", "postgres://127.0.0.1:5432/app"]);
    assert_eq!(migrate.spec.depends_on, [(0, Condition::ProcessHealthy)]);
    assert_eq!(web.spec.depends_on, [(1, Condition::ProcessCompletedSuccessfully)]);
    assert_eq!(
        web.liveness.as_ref().unwrap().check,
        ProbeCheck::Tcp { addr: "127.0.0.1:8080".parse().unwrap() }
    );
    assert!(worker.spec.disabled);
}

#[test]
fn json_from_nix_plans_like_yaml() {
    let yaml = check(&[fixture("valid/web-stack.yaml")], &fixture_env(), &fixture_account_files()).unwrap();
    let json = check(&[fixture("valid/web-stack.json")], &fixture_env(), &fixture_account_files()).unwrap();
    assert_eq!(format!("{:?}", yaml.1), format!("{:?}", json.1));
}

#[test]
fn the_invalid_fixture_reports_every_error() {
    let path = fixture("invalid/many-errors.yaml");
    let errors = check(&[path], &fixture_env(), &fixture_account_files()).unwrap_err();
    let prefix = format!("{}/", Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs").display());
    let shown: Vec<String> = errors.iter().map(|e| e.to_string().replace(&prefix, "")).collect();
    let expected = include_str!("../../fixtures/configs/invalid/many-errors.errors");
    assert_eq!(shown, expected.lines().collect::<Vec<_>>());
}

#[test]
fn json_schema_describes_the_file() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    let properties = schema.get("properties").unwrap();
    assert!(properties.get("processes").is_some() && properties.get("nix2gpu").is_some());
    assert!(json_schema().contains('\n'), "pretty-printed");
}

#[test]
fn commands_go_to_the_shell_unless_it_would_only_execute_them() {
    let text = "processes:\n  plain: {command: exec sleep 5, working_dir: /srv}\n  \
                shell: {command: 'sleep 5 && echo done', shutdown: {command: stop --now}}\n  \
                own: {command: sleep 5, environment: [PWD=/elsewhere]}\n";
    let (_config, plan) = check_text("c.yaml", text).unwrap();
    let [own, plain, shell] = &plan.services[..] else { panic!("{:?}", plan.services.len()) };
    assert_eq!(plain.argv, ["sleep", "5"]);
    assert_eq!(plain.env, [("PWD".to_string(), "/srv".to_string())]);
    assert_eq!(shell.argv, ["/bin/sh", "-c", "sleep 5 && echo done"]);
    assert_eq!(shell.shutdown_command.as_deref().unwrap(), ["stop", "--now"], "the shutdown command too");
    assert!(shell.env.iter().any(|(key, _)| key == "PWD"), "for the shutdown command");
    assert_eq!(own.env, [("PWD".to_string(), "/elsewhere".to_string())], "a configured PWD stays");
    let configured =
        "shell: {shell_command: /bin/bash, shell_argument: -lc}\nprocesses:\n  p: {command: sleep 5}\n";
    let (_config, plan) = check_text("c.yaml", configured).unwrap();
    assert_eq!(plan.services[0].argv, ["/bin/bash", "-lc", "sleep 5"], "a configured shell always runs");
    assert!(plan.services[0].env.is_empty());
}

//! Live reconfiguration against a live init as PID 1: the config file is rewritten between
//! steps and `nix2gpu-init reload` (or SIGHUP) applies the difference. Pids are compared
//! before and after: unchanged nodes keep theirs.

use std::collections::BTreeMap;

use init_tests::{Init, Launch, TempConfig, config_file, fixture, position};
use nix::sys::signal::Signal;

/// Built-in nodes turned off: which of them `auto` enables depends on the machine (a GPU
/// host's /dev/nvidiactl brings `gpu`), and these tests compare whole plans.
const NO_BUILTINS: &str =
    "nix2gpu: {gpu: {enable: false}, ssh: {enable: false}, tailscale: {enable: false}}\n";

const BEFORE: &str = r#"
processes:
  keep:
    command: exec sleep 1000
  change:
    command: exec sleep 1000
  gone_base:
    command: exec sleep 1000
  gone_top:
    command: exec sleep 1000
    depends_on: {gone_base: {condition: process_started}}
"#;

const AFTER: &str = r#"
processes:
  keep:
    command: exec sleep 1000
  change:
    command: exec sleep 1001
  added_base:
    command: echo base done
  added:
    command: echo added started; exec sleep 1000
    depends_on: {added_base: {condition: process_completed_successfully}}
"#;

/// The plan lines of a reload's answer (`restart    change`), without the summary.
fn plan_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("reloaded:") && !l.starts_with("dry run:"))
        .map(String::from)
        .collect()
}

/// Node name to (state, pid) for every node.
fn nodes(init: &Init) -> BTreeMap<String, (String, Option<i64>)> {
    let status = init.status();
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            (name, (n["state"].as_str().unwrap_or_default().to_string(), n["pid"].as_i64()))
        })
        .collect()
}

/// A config file of `yaml` with the built-ins off.
fn config(yaml: &str) -> TempConfig {
    config_file(&format!("{NO_BUILTINS}{yaml}"))
}

/// Rewrites the config file with `yaml`, built-ins still off.
fn rewrite(config: &TempConfig, yaml: &str) {
    std::fs::write(&config.0, format!("{NO_BUILTINS}{yaml}")).unwrap();
}

fn start_running(config: &TempConfig, names: &[&str]) -> Init {
    let init = Launch::new(&["--config", config.path()]).start();
    for name in names {
        init.wait_for_node(name, "running", |n| n["state"] == "running");
    }
    init
}

/// Waits until the reload of BEFORE into AFTER has settled.
fn wait_reloaded(init: &Init, old_change_pid: Option<i64>) {
    init.wait_for_node("added", "running", |n| n["state"] == "running");
    init.wait_for_node("change", "restarted", |n| {
        n["state"] == "running" && n["pid"].as_i64() != old_change_pid
    });
    init.wait_for_node("added_base", "completed", |n| n["state"] == "completed");
    let deadline = std::time::Instant::now() + init_tests::PATIENCE;
    while nodes(init).keys().any(|name| name.starts_with("gone")) {
        assert!(std::time::Instant::now() < deadline, "removed nodes never left: {:?}", nodes(init));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn reload_adds_removes_and_changes_nodes_and_the_dry_run_says_so_first() {
    let config = config(BEFORE);
    let mut init = start_running(&config, &["keep", "change", "gone_base", "gone_top"]);
    let before = nodes(&init);
    rewrite(&config, AFTER);

    let (code, dry, stderr) = init.client(&["reload", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    // The new configuration's nodes in order (by name), then those removed.
    let expected = [
        "start      added",
        "start      added_base",
        "restart    change",
        "unchanged  keep",
        "stop       gone_base",
        "stop       gone_top",
    ];
    assert_eq!(plan_lines(&dry), expected, "{dry}");
    assert!(
        dry.ends_with("dry run: 2 to start, 2 to stop, 1 to restart, 1 unchanged; nothing was changed\n"),
        "{dry}"
    );
    assert_eq!(nodes(&init), before, "a dry run changes nothing");

    let (code, done, stderr) = init.client(&["reload"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plan_lines(&done), plan_lines(&dry), "the reload did what the dry run said");
    assert!(done.ends_with("reloaded: 2 started, 2 stopped, 1 restarted, 1 unchanged\n"), "{done}");
    wait_reloaded(&init, before["change"].1);

    let after = nodes(&init);
    assert_eq!(after["keep"], before["keep"], "unchanged: same pid");
    assert_ne!(after["change"].1, before["change"].1, "changed: a new process");
    assert_eq!(after.keys().collect::<Vec<_>>(), ["added", "added_base", "change", "keep"]);
    let lines = init.output().to_vec();
    assert!(
        position(&lines, "gone_top: stopping: removed") < position(&lines, "gone_base: stopping: removed"),
        "removed nodes stop dependents first: {lines:#?}"
    );
    assert!(
        position(&lines, "added_base: exited with code 0") < position(&lines, "added started"),
        "{lines:#?}"
    );
    assert!(
        position(&lines, "reload: restart change") < position(&lines, "change: restarting"),
        "{lines:#?}"
    );

    // Reloading the same file again changes nothing at all.
    let (code, again, _) = init.client(&["reload"]);
    assert_eq!(code, 0);
    assert!(again.ends_with("reloaded: 0 started, 0 stopped, 0 restarted, 4 unchanged\n"), "{again}");
    assert_eq!(nodes(&init), after);

    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn an_invalid_config_changes_nothing_and_its_errors_are_located() {
    let config = config(BEFORE);
    let mut init = start_running(&config, &["keep", "change", "gone_base", "gone_top"]);
    let before = nodes(&init);
    std::fs::write(&config.0, "processes:\n  keep:\n    comand: exec sleep 1000\n  other:\n    command: x\n    depends_on: {nope: {}}\n").unwrap();
    for args in [&["reload", "--dry-run"][..], &["reload"][..]] {
        let (code, stdout, stderr) = init.client(args);
        assert_eq!(code, 78, "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        let file = config.path();
        assert!(
            stderr.contains(&format!(
                "{file}:3:5: processes.keep.comand: unknown key `comand`; did you mean `command`?"
            )),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("{file}:6:18: processes.other.depends_on.nope: `other` depends on `nope`, which is not defined")), "{stderr}");
        assert!(stderr.ends_with("2 error(s); nothing was changed\n"), "{stderr}");
    }
    init.wait_for_line("reload: 2 error(s) in the configuration; nothing was changed");
    let logged = init.wait_for_line("reload: ");
    assert!(logged.contains(config.path()), "the log has the located errors too: {logged}");
    assert_eq!(nodes(&init), before, "everything runs as before, with the same pids");

    // A missing file is an error like any other.
    std::fs::remove_file(&config.0).unwrap();
    let (code, _, stderr) = init.client(&["reload"]);
    assert_eq!(code, 78);
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert_eq!(nodes(&init), before);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

/// The `reload: ...` lines of the init's log, with the prefix before them cut off.
fn reload_log(init: &mut Init) -> Vec<String> {
    init.output()
        .iter()
        .filter_map(|line| line.split_once("| reload: ").map(|(_, rest)| rest.to_string()))
        .collect()
}

#[test]
fn sighup_without_a_main_process_reloads_like_the_command() {
    let by_signal = config(BEFORE);
    let by_command = config(BEFORE);
    let names = ["keep", "change", "gone_base", "gone_top"];
    let mut signalled = start_running(&by_signal, &names);
    let mut commanded = start_running(&by_command, &names);
    let before = (nodes(&signalled), nodes(&commanded));
    rewrite(&by_signal, AFTER);
    rewrite(&by_command, AFTER);

    signalled.signal(Signal::SIGHUP);
    let (code, _, stderr) = commanded.client(&["reload"]);
    assert_eq!(code, 0, "{stderr}");
    signalled.wait_for_line("received SIGHUP: reloading the configuration");
    wait_reloaded(&signalled, before.0["change"].1);
    wait_reloaded(&commanded, before.1["change"].1);

    let log = reload_log(&mut signalled);
    assert_eq!(log, reload_log(&mut commanded), "the same reload, logged the same way");
    assert_eq!(
        log.last().map(String::as_str),
        Some("2 started, 2 stopped, 1 restarted, 1 unchanged"),
        "{log:?}"
    );
    let shape =
        |init: &Init, before: &BTreeMap<String, (String, Option<i64>)>| -> Vec<(String, String, bool)> {
            nodes(init)
                .into_iter()
                .map(|(name, (state, pid))| {
                    let kept = before.get(&name).is_some_and(|(_, old)| *old == pid);
                    (name, state, kept)
                })
                .collect()
        };
    assert_eq!(shape(&signalled, &before.0), shape(&commanded, &before.1));
    for init in [&mut signalled, &mut commanded] {
        init.signal(Signal::SIGTERM);
        assert_eq!(init.wait_exit(), 0);
    }
}

#[test]
fn sighup_goes_to_the_main_process_when_there_is_one() {
    let config = config("processes:\n  svc:\n    command: exec sleep 1000\n");
    let record = fixture("record-signals.sh");
    let mut init = Launch::new(&["--config", config.path(), "--", "sh", &record]).start();
    init.wait_for_line("ready");
    init.wait_for_node("svc", "running", |n| n["state"] == "running");
    let svc = init.node("svc")["pid"].clone();
    rewrite(&config, "processes:\n  svc:\n    command: exec sleep 1001\n");
    init.signal(Signal::SIGHUP);
    init.wait_for_line("got HUP");
    assert_eq!(init.node("svc")["pid"], svc, "no reload: SIGHUP was the main process's");
    assert!(reload_log(&mut init).is_empty());
    // The command reloads all the same; the main process is never restarted by it.
    let (code, stdout, stderr) = init.client(&["reload"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plan_lines(&stdout), ["restart    svc", "unchanged  main"]);
    init.wait_for_node("svc", "restarted", |n| n["state"] == "running" && n["pid"] != svc);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_node_that_gains_notify_in_a_reload_gets_the_socket() {
    // A node gaining `notify: true` gets NOTIFY_SOCKET from the reload on (the socket is opened
    // then, as no node needed it at boot).
    let notify = fixture("notify.py");
    let config = config("processes:\n  db:\n    command: exec sleep 1000\n");
    let mut init = start_running(&config, &["db"]);
    rewrite(
        &config,
        &format!(
            "processes:\n  db:\n    entrypoint: [python3, {notify}, send=READY=1, pause]\n    notify: true\n"
        ),
    );
    let (code, stdout, stderr) = init.client(&["reload"]);
    assert_eq!((code, plan_lines(&stdout)), (0, vec!["restart    db".to_string()]), "{stderr}");
    init.wait_for_node("db", "ready", |n| n["state"] == "ready");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

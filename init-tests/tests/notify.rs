//! Readiness notification against a live init as PID 1: real processes (fixtures/notify.py, a
//! small sd_notify client) sending datagrams to $NOTIFY_SOCKET; READY=1 gating dependents,
//! STATUS= in status, forged and unauthorised notifications ignored, the watchdog restarting
//! a process that stops pinging.

use init_tests::{Init, Launch, config_file, fixture, position};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Built-in nodes off: `auto` depends on the machine (a GPU host's /dev/nvidiactl brings `gpu`).
const NO_BUILTINS: &str = "nix2gpu: {gpu: {enable: false}, ssh: {enable: false}, tailscale: {enable: false}}";

/// Sends SIGUSR1 to node `name`'s process (what fixtures/notify.py's `wait=USR1` waits for).
fn release(init: &Init, name: &str) {
    let pid = init.node(name)["pid"].as_i64().expect("the node runs");
    kill(Pid::from_raw(init.host_pid_of(pid)), Signal::SIGUSR1).expect("the node is alive");
}

#[test]
fn ready_1_after_a_delay_gates_healthy_dependents_exactly_then_and_forgeries_are_ignored() {
    let notify = fixture("notify.py");
    let config = config_file(&format!(
        r#"
{NO_BUILTINS}
processes:
  db:
    entrypoint: [python3, {notify}, "send=STATUS=warming up", say=waiting, wait=USR1, send=STATUS=genuine, wait=USR1, "send=READY=1\nSTATUS=serving", pause]
    notify: true
  app:
    command: echo app started; exec sleep 1000
    depends_on: {{db: {{condition: process_healthy}}}}
  forger:
    entrypoint: [python3, {notify}, socket=/run/nix2gpu-notify.sock, "send=READY=1\nSTATUS=forged", say=forged, pause]
"#
    ));
    let mut init = Launch::new(&["--config", config.path()]).env("NIX2GPU_LOG", "debug").start();
    init.wait_for_service_line("db", "waiting");
    init.wait_for_service_line("forger", "forged");
    // The forger's datagram is in the socket before db's next one: once that one is seen, the
    // forgery has been read, and ignored.
    release(&init, "db");
    let db = init.wait_for_node("db", "genuine", |n| n["status_text"] == "genuine");
    assert_eq!((db["state"].as_str(), db["ready"].as_bool()), (Some("starting"), Some(false)), "{db}");
    assert_eq!(init.node("app")["state"], "pending");
    let ignored = init.wait_for_line("ignoring a notification");
    assert!(ignored.contains("is `forger`, which has no `notify: true`"), "{ignored}");
    assert!(ignored.contains("READY=1"), "{ignored}");

    release(&init, "db");
    init.wait_for_service_line("app", "app started");
    let db = init.node("db");
    assert_eq!((db["state"].as_str(), db["status_text"].as_str()), (Some("ready"), Some("serving")), "{db}");
    let lines = init.output().to_vec();
    assert!(position(&lines, "db: ready") < position(&lines, "app: started"), "{lines:#?}");
    let (code, table, _) = init.client(&["status"]);
    assert_eq!(code, 0);
    assert!(table.lines().next().is_some_and(|header| header.ends_with("STATUS")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("db") && l.ends_with("serving")), "{table}");

    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn only_the_main_process_notifies_unless_notify_access_is_all() {
    let notify = fixture("notify.py");
    // In each, a child of the shell sends READY=1 (its own pid, the shell's session), then
    // the shell's own pid (exec) sends a status.
    let script = |name: &str| {
        format!(
            "python3 {notify} send=READY=1 say=child-sent-{name}; exec python3 {notify} send=STATUS=main-spoke pause"
        )
    };
    let config = config_file(&format!(
        r#"
{NO_BUILTINS}
processes:
  strict:
    command: {strict}
    notify: true
  relaxed:
    command: {relaxed}
    notify: true
    notify_access: all
"#,
        strict = script("strict"),
        relaxed = script("relaxed"),
    ));
    let mut init = Launch::new(&["--config", config.path()]).env("NIX2GPU_LOG", "debug").start();
    init.wait_for_node("relaxed", "ready", |n| n["state"] == "ready");
    let strict = init.wait_for_node("strict", "told its status", |n| n["status_text"] == "main-spoke");
    assert_eq!(strict["state"], "starting", "the child's READY=1 came first and was ignored: {strict}");
    let ignored = init.wait_for_line("ignoring a notification");
    assert!(
        ignored.contains("nor in the session or process group of one with `notify_access: all`"),
        "{ignored}"
    );
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_process_that_stops_pinging_its_watchdog_is_restarted() {
    let notify = fixture("notify.py");
    let config = config_file(&format!(
        r#"
{NO_BUILTINS}
processes:
  dog:
    command: echo usec=$$WATCHDOG_USEC; exec python3 {notify} send=READY=1 ping=0.2,10 say=silent pause
    notify: true
    watchdog_seconds: 1
    availability: {{restart: on_failure, backoff_seconds: 0.1}}
"#
    ));
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("dog", "usec=1000000");
    let first = init.wait_for_node("dog", "ready", |n| n["state"] == "ready")["pid"].clone();
    init.wait_for_service_line("dog", "silent");
    init.wait_for_line("dog: no WATCHDOG=1 within 1s; stopping it");
    let again = init.wait_for_node("dog", "restarted", |n| n["restarts"] == 1 && n["state"] == "ready");
    assert_ne!(again["pid"], first);
    let lines = init.output().to_vec();
    let silent = lines.iter().position(|l| l.ends_with("| silent")).expect("the silent line");
    assert!(silent < position(&lines, "no WATCHDOG=1"), "pings kept it alive for 2s: {lines:#?}");
    assert!(position(&lines, "after its watchdog ran out") > silent, "{lines:#?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

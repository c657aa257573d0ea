//! The supervisor as PID 1 with real processes: dependency order, conditions, probes, restarts,
//! exit codes, shutdown order, and log framing.

use std::time::{Duration, Instant};

use init_tests::{Launch, config_file, free_port, position};
use nix::sys::signal::Signal;

fn with_config(yaml: &str) -> (init_tests::TempConfig, Launch) {
    let config = config_file(yaml);
    let launch = Launch::new(&["--config", config.path()]);
    (config, launch)
}

#[test]
fn a_chain_and_a_diamond_start_in_dependency_order() {
    let (_config, launch) = with_config(
        r#"
processes:
  top:
    command: echo top started
    depends_on: {left: {condition: process_completed_successfully}, right: {condition: process_completed_successfully}}
  left:
    command: echo left started
    depends_on: {base: {condition: process_completed_successfully}}
  right:
    command: echo right started
    depends_on: {base: {condition: process_completed_successfully}}
  base:
    command: echo base started
"#,
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 0, "every process completed successfully");
    let lines = init.output().to_vec();
    let base = position(&lines, "base started");
    let left = position(&lines, "left started");
    let right = position(&lines, "right started");
    let top = position(&lines, "top started");
    assert!(base < left && base < right && left < top && right < top, "{lines:#?}");
}

#[test]
fn a_failed_dependency_skips_its_dependents_and_the_exit_code_is_1() {
    let (_config, launch) = with_config(
        r#"
processes:
  migrate: {command: "exit 3"}
  web:
    command: echo web ran
    depends_on: {migrate: {condition: process_completed_successfully}}
  worker:
    command: echo worker ran
    depends_on: {web: {condition: process_started}}
"#,
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 1, "a failed and skipped process makes the run a failure");
    let lines = init.output().to_vec();
    assert!(!lines.iter().any(|l| l.contains("web ran") || l.contains("worker ran")), "{lines:#?}");
    position(&lines, "web: skipped");
    position(&lines, "`migrate`");
    position(&lines, "worker: skipped");
}

#[test]
fn readiness_probes_gate_dependents_exec_http_and_tcp() {
    let http_port = free_port();
    let tcp_port = free_port();
    let yaml = format!(
        r#"
processes:
  flag:
    command: sleep 0.3 && touch /run/flag-ready && echo flag set && exec sleep 1000
    readiness_probe: {{exec: {{command: "test -e /run/flag-ready"}}, period_seconds: 0.1}}
  http:
    command: sleep 0.3 && exec python3 -m http.server {http_port} --bind 127.0.0.1
    readiness_probe: {{http_get: {{port: {http_port}, path: /}}, period_seconds: 0.1}}
  tcp:
    command: sleep 0.3 && exec python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{tcp_port})); s.listen(); print('listening', flush=True); time.sleep(1000)"
    readiness_probe: {{tcp_socket: {{port: {tcp_port}}}, period_seconds: 0.1}}
  after:
    command: echo all three ready
    depends_on:
      flag: {{condition: process_healthy}}
      http: {{condition: process_healthy}}
      tcp: {{condition: process_healthy}}
"#
    );
    let (_config, launch) = with_config(&yaml);
    let mut init = launch.start();
    init.wait_for_service_line("after", "all three ready");
    let lines = init.output().to_vec();
    let after = position(&lines, "all three ready");
    for ready in ["flag: ready", "http: ready", "tcp: ready"] {
        assert!(position(&lines, ready) < after, "{ready} must come first: {lines:#?}");
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn success_threshold_is_honoured() {
    // The probe passes from the start; with success_threshold 5 and a 0.1 s period the node is
    // ready no earlier than 0.4 s after the first probe.
    let (_config, launch) = with_config(
        r#"
processes:
  svc:
    command: exec sleep 1000
    readiness_probe: {exec: {command: "true"}, period_seconds: 0.1, success_threshold: 5}
  after:
    command: echo dependent started
    depends_on: {svc: {condition: process_healthy}}
"#,
    );
    let started = Instant::now();
    let mut init = launch.start();
    init.wait_for_line("dependent started");
    assert!(started.elapsed() >= Duration::from_millis(400), "ready after {:?}", started.elapsed());
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_log_line_can_gate_dependents() {
    let (_config, launch) = with_config(
        r#"
processes:
  db:
    command: sleep 0.2; echo "database system is ready to accept connections"; exec sleep 1000
    ready_log_line: "ready to accept connections"
  app:
    command: echo app started
    depends_on: {db: {condition: process_log_ready}}
"#,
    );
    let mut init = launch.start();
    init.wait_for_service_line("app", "app started");
    let lines = init.output().to_vec();
    assert!(position(&lines, "ready to accept") < position(&lines, "app started"), "{lines:#?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_crash_loop_backs_off_exponentially_until_max_restarts() {
    let (_config, launch) = with_config(
        r#"
processes:
  crashy:
    command: echo attempt; exit 1
    availability: {restart: on_failure, backoff_seconds: 0.1, max_restarts: 4}
"#,
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 1);
    let lines = init.output().to_vec();
    let attempts = init.service_lines("crashy").iter().filter(|l| *l == "attempt").count();
    assert_eq!(attempts, 5, "one run and four restarts: {lines:#?}");
    for delay in ["0.1s", "0.2s", "0.4s", "0.8s"] {
        assert!(
            lines.iter().any(|l| l.contains("restarting in") && l.contains(delay)),
            "{delay}: {lines:#?}"
        );
    }
}

#[test]
fn a_liveness_failure_restarts_the_process() {
    let (_config, launch) = with_config(
        r#"
processes:
  svc:
    command: echo run; touch /run/alive; exec sleep 1000
    liveness_probe: {exec: {command: "rm /run/alive"}, period_seconds: 0.1, failure_threshold: 1}
    availability: {restart: always, backoff_seconds: 0.1}
"#,
    );
    let mut init = launch.start();
    init.wait_for_service_line("svc", "run");
    // The probe removes the file: the first check passes, the second fails.
    init.wait_for_line("liveness");
    let deadline = Instant::now() + Duration::from_secs(10);
    while init.service_lines("svc").iter().filter(|l| *l == "run").count() < 2 {
        assert!(Instant::now() < deadline, "no restart: {:?}", init.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn exit_on_failure_ends_the_container_with_that_code() {
    let (_config, launch) = with_config(
        r#"
processes:
  steady: {command: exec sleep 1000}
  critical:
    command: sleep 0.2; exit 42
    availability: {restart: exit_on_failure}
"#,
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 42);
}

#[test]
fn exit_on_end_uses_the_code_and_success_codes_count_as_0() {
    for (code, success_codes, expected) in [(7, "[0]", 7), (7, "[0, 7]", 0)] {
        let (_config, launch) = with_config(&format!(
            "processes:\n  steady: {{command: exec sleep 1000}}\n  job:\n    command: exit {code}\n    \
             success_exit_codes: {success_codes}\n    availability: {{exit_on_end: true}}\n"
        ));
        let mut init = launch.start();
        assert_eq!(init.wait_exit(), expected, "code {code} with success codes {success_codes}");
    }
}

#[test]
fn shutdown_stops_dependents_first() {
    let (_config, launch) = with_config(
        r#"
processes:
  db:
    command: trap 'echo db stopping; exit 0' TERM; echo db up; sleep 1000 & wait
  api:
    command: trap 'echo api stopping; sleep 0.2; exit 0' TERM; echo api up; sleep 1000 & wait
    depends_on: {db: {condition: process_started}}
  web:
    command: trap 'echo web stopping; exit 0' TERM; echo web up; sleep 1000 & wait
    depends_on: {api: {condition: process_started}}
"#,
    );
    let mut init = launch.start();
    // Each shell has set its trap once it says it is up (a started process may still be loading).
    for name in ["db", "api", "web"] {
        init.wait_for_service_line(name, &format!("{name} up"));
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    let lines = init.output().to_vec();
    let (web, api, db) =
        (position(&lines, "web stopping"), position(&lines, "api stopping"), position(&lines, "db stopping"));
    assert!(web < api && api < db, "{lines:#?}");
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_its_timeout() {
    let (_config, launch) = with_config(
        r#"
processes:
  stubborn:
    command: trap '' TERM; echo ignoring; exec sleep 1000
    shutdown: {timeout_seconds: 1}
  polite:
    command: exec sleep 1000
"#,
    );
    let mut init = launch.start();
    init.wait_for_service_line("stubborn", "ignoring");
    let stopping = Instant::now();
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    let took = stopping.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "stop took {took:?}");
    init.wait_for_line("stubborn: did not stop");
}

#[test]
fn a_second_sigterm_kills_at_once() {
    let (_config, launch) = with_config(
        "processes:\n  stubborn:\n    command: trap '' TERM; echo ignoring; exec sleep 1000\n    shutdown: {timeout_seconds: 30}\n",
    );
    let mut init = launch.start();
    init.wait_for_service_line("stubborn", "ignoring");
    let stopping = Instant::now();
    init.signal(Signal::SIGTERM);
    init.wait_for_line("stopping");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
    assert!(stopping.elapsed() < Duration::from_secs(5), "took {:?}", stopping.elapsed());
}

#[test]
fn a_main_command_runs_beside_services_and_its_code_wins() {
    let (config, _) = with_config(
        "processes:\n  side:\n    command: trap 'echo side stopped; exit 0' TERM; echo side up; sleep 1000 & wait\n",
    );
    let mut init = Launch::new(&["--config", config.path(), "--", "sh", "-c", "sleep 0.3; exit 9"]).start();
    init.wait_for_service_line("side", "side up");
    assert_eq!(init.wait_exit(), 9);
    init.wait_for_service_line("side", "side stopped");
}

#[test]
fn two_hundred_processes_writing_at_once_produce_no_torn_lines() {
    let mut yaml = String::from("processes:\n");
    for i in 0..200 {
        yaml.push_str(&format!(
            "  p{i:03}:\n    command: i=0; while [ $$i -lt 50 ]; do echo p{i:03}-line-$$i-abcdefghijklmnopqrstuvwxyz; i=$$((i+1)); done\n"
        ));
    }
    let (_config, launch) = with_config(&yaml);
    let mut init = launch.start();
    assert_eq!(init.wait_exit_within(Duration::from_secs(60)), 0);
    let lines = init.output().to_vec();
    let service_lines: Vec<&String> = lines.iter().filter(|l| l.contains("-line-")).collect();
    assert_eq!(service_lines.len(), 200 * 50, "every line arrived once");
    for line in service_lines {
        let (name, text) = line.split_once(" | ").expect("framed");
        assert!(
            text.starts_with(name.trim()) && text.ends_with("-abcdefghijklmnopqrstuvwxyz"),
            "torn: {line}"
        );
    }
}

#[test]
fn a_one_mebibyte_line_is_split_and_memory_stays_bounded() {
    let (_config, launch) = with_config(
        "processes:\n  big:\n    command: head -c 1048576 /dev/zero | tr '\\0' x; sleep 0.5; grep VmHWM /proc/1/status\n",
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 0);
    let lines = init.output().to_vec();
    let pieces: Vec<String> = init.service_lines("big").into_iter().filter(|l| l.starts_with('x')).collect();
    let total: usize = pieces.iter().map(String::len).sum();
    assert_eq!(total, 1024 * 1024, "every byte arrived");
    assert!(pieces.len() >= 64, "the line was split into pieces: {}", pieces.len());
    let hwm = position(&lines, "VmHWM");
    let kib: usize =
        lines[hwm].split_whitespace().rev().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM kB");
    assert!(kib < 16 * 1024, "PID 1 peaked at {kib} kB");
}

#[test]
fn json_log_format_gives_one_object_per_line() {
    let (_config, launch) = with_config(
        "nix2gpu:\n  log: {format: json}\nprocesses:\n  svc: {command: echo hello; echo oops >&2}\n",
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 0);
    let lines = init.output().to_vec();
    let hello = &lines[position(&lines, "\"hello\"")];
    assert!(
        hello.contains("\"name\":\"svc\"")
            && hello.contains("\"stream\":\"stdout\"")
            && hello.contains("\"ts\":")
    );
    let oops = &lines[position(&lines, "\"oops\"")];
    assert!(oops.contains("\"stream\":\"stderr\""), "{oops}");
    assert!(lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')), "{lines:#?}");
}

#[test]
fn services_run_as_their_user_and_in_their_working_dir() {
    let (_config, launch) = with_config(
        "processes:\n  who:\n    command: echo \"$(id -u):$(id -g):$(id -G) $(pwd)\"\n    user: \"65534:65534\"\n    working_dir: /tmp\n",
    );
    let mut init = launch.start();
    assert_eq!(init.wait_exit(), 0);
    init.wait_for_service_line("who", "65534:65534:65534 /tmp");
}

#[test]
fn a_partial_line_is_shown_after_a_quiet_period_and_at_exit() {
    let (_config, launch) = with_config(
        "processes:\n  prompt:\n    command: \"printf 'password: '; sleep 1; printf 'tail without newline'\"\n",
    );
    let mut init = launch.start();
    let started = Instant::now();
    init.wait_for_service_line("prompt", "password: ");
    assert!(started.elapsed() < Duration::from_millis(900), "shown while the process still waits");
    assert_eq!(init.wait_exit(), 0);
    init.wait_for_service_line("prompt", "tail without newline");
}

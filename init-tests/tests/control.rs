//! The control plane against a live init as PID 1: every subcommand, state transitions seen by
//! `status --json` and `health`, the socket's stale/live handling, load, and hostile clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use init_tests::{Launch, config_file, fresh_socket_path, init_binary};
use nix::sys::signal::Signal;

const TWO_SERVICES: &str = r#"
processes:
  web:
    command: echo web says hello; exec sleep 1000
    readiness_probe: {exec: {command: "test -e /run/web-ready"}, period_seconds: 0.1}
    availability: {restart: always, backoff_seconds: 0.1}
  worker:
    command: echo worker line 1; echo worker line 2; exec sleep 1000
"#;

#[test]
fn status_health_and_readiness_transitions() {
    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("web", "web says hello");
    init.wait_for_node("web", "started", |n| n["pid"].is_i64());
    let status = init.status();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for key in ["name", "state", "pid", "restarts", "exit_code", "ready"] {
        assert!(nodes[0].get(key).is_some(), "contract key {key} missing: {status}");
    }
    assert!(status.get("platform").is_some() && status.get("gpu").is_some(), "{status}");
    assert_eq!(init.node("web")["state"], "starting");

    let (code, stdout, _) = init.client(&["health"]);
    assert_eq!(code, 1, "not ready yet: {stdout}");
    assert!(stdout.contains("web: starting"), "{stdout}");

    // The readiness probe's file lives in the init's private /run: create it from inside.
    let web_pid = init.node("web")["pid"].as_i64().unwrap();
    let (code, stdout, stderr) = init.client(&["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("NAME"), "a table: {stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("web") && l.contains(&web_pid.to_string())), "{stdout}");
    let marker = std::process::Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "touch", "/run/web-ready"])
        .status()
        .unwrap();
    assert!(marker.success());
    init.wait_for_node("web", "ready", |n| n["state"] == "ready" && n["ready"] == true);
    let (code, stdout, _) = init.client(&["health"]);
    assert_eq!((code, stdout.trim()), (0, "ready"));

    // A ready process dies: health goes back to 1 until it is ready again.
    let host_web = init.host_pid_of(web_pid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(host_web), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) = init.client(&["health"]);
        if code == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "health never went back to not ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(init.node("web")["state"] == "ready" && init.node("web")["restarts"] == 1) {
        assert!(Instant::now() < deadline, "web never came back: {} {:?}", init.node("web"), init.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn logs_restart_stop_start_and_unknown_names() {
    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("worker", "worker line 2");

    let (code, stdout, _) = init.client(&["logs", "worker", "-n", "1"]);
    assert_eq!((code, stdout.as_str()), (0, "worker | worker line 2\n"));
    let (_, all, _) = init.client(&["logs"]);
    assert!(all.contains("web | web says hello") && all.contains("worker | worker line 1"), "{all}");

    let before = init.node("worker")["pid"].as_i64().unwrap();
    let (code, stdout, stderr) = init.client(&["restart", "worker"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("worker: "), "{stdout}");
    let after = init.wait_for_node("worker", "restarted", |n| n["pid"].as_i64().is_some_and(|p| p != before));
    assert_eq!(after["restarts"], 1);

    let (code, _, stderr) = init.client(&["stop", "worker"]);
    assert_eq!(code, 0, "{stderr}");
    init.wait_for_node("worker", "stopped", |n| n["state"] == "stopped");
    let (code, _, stderr) = init.client(&["stop", "worker"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not running"), "{stderr}");
    let (code, _, stderr) = init.client(&["start", "worker"]);
    assert_eq!(code, 0, "{stderr}");
    init.wait_for_node("worker", "running", |n| n["state"] == "running");

    let (code, _, stderr) = init.client(&["restart", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no node named `nope`") && stderr.contains("web, worker"), "{stderr}");

    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn logs_follow_streams_new_lines() {
    let config = config_file(
        "processes:\n  ticker:\n    command: i=0; while true; do echo tick $$i; i=$$((i+1)); sleep 0.05; done\n",
    );
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("ticker", "tick 2");
    let mut follower = std::process::Command::new(init_binary())
        .args(["logs", "ticker", "-n", "1", "-f"])
        .env("NIX2GPU_CONTROL_SOCKET", init.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follower.stdout.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lines().count() < 5 {
        let mut chunk = [0u8; 256];
        let n = stdout.read(&mut chunk).unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        assert!(Instant::now() < deadline && n > 0, "follow stalled: {seen}");
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    let ticks: Vec<u64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("ticker | tick "))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(ticks.len() >= 5 && ticks.windows(2).all(|w| w[1] == w[0] + 1), "in order, none lost: {seen}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn the_default_socket_answers_inside_the_namespace_like_docker_exec() {
    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).socket("").start();
    init.wait_for_service_line("worker", "worker line 2");
    let output = std::process::Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "--pid", "--"])
        .arg(init_binary())
        .args(["status"])
        .env_remove("NIX2GPU_CONTROL_SOCKET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && stdout.contains("worker"), "{stdout} {output:?}");
    let mode = std::process::Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "stat", "-c", "%a %a"])
        .args(["/run/nix2gpu", "/run/nix2gpu/control.sock"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mode.stdout), "700 700\n600 600\n");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_never_stolen() {
    let config = config_file(TWO_SERVICES);
    let path = fresh_socket_path();
    let mut first = Launch::new(&["--config", config.path()]).socket(&path).start();
    first.wait_for_service_line("worker", "worker line 2");
    // A second init on the same socket must not take it over.
    let mut second = Launch::new(&["--config", config.path()]).socket(&path).start();
    second.wait_for_line("another init answers");
    assert_eq!(first.status()["nodes"][0]["name"], "web");
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(), 0);
    assert!(first.client(&["status"]).0 == 0, "the first init still answers");
    // SIGKILL leaves the socket file behind; the next init replaces it.
    first.signal(Signal::SIGKILL);
    first.wait_gone();
    assert!(std::path::Path::new(&path).exists(), "a killed init leaves its socket");
    let (code, _, stderr) = first.client(&["status"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no init is running"), "{stderr}");
    let mut third = Launch::new(&["--config", config.path()]).socket(&path).start();
    third.wait_for_service_line("worker", "worker line 2");
    assert_eq!(third.client(&["status"]).0, 0);
    third.signal(Signal::SIGTERM);
    assert_eq!(third.wait_exit(), 0);
    assert!(!std::path::Path::new(&path).exists(), "a clean exit removes the socket");
}

#[test]
fn two_inits_side_by_side_answer_for_themselves() {
    let a = config_file("processes:\n  alpha: {command: exec sleep 1000}\n");
    let b = config_file("processes:\n  beta: {command: exec sleep 1000}\n");
    let mut first = Launch::new(&["--config", a.path()]).start();
    let mut second = Launch::new(&["--config", b.path()]).start();
    first.wait_for_node("alpha", "running", |n| n["state"] == "running");
    second.wait_for_node("beta", "running", |n| n["state"] == "running");
    let (code, stdout, stderr) = first.client(&["status", "--json"]);
    assert_eq!(code, 0, "{stderr} {:?} {:?}", first.output(), second.output());
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 1);
    for init in [&mut first, &mut second] {
        init.signal(Signal::SIGTERM);
        assert_eq!(init.wait_exit(), 0);
    }
}

#[test]
fn a_thousand_requests_from_fifty_clients_are_all_answered() {
    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("worker", "worker line 2");
    let socket = init.socket().to_string();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                (0..20)
                    .filter(|_| {
                        let mut stream = UnixStream::connect(&socket).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        stream.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
                        let mut answer = String::new();
                        stream.read_to_string(&mut answer).unwrap();
                        answer.starts_with("{\"type\":\"status\"")
                    })
                    .count()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 1000);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn hostile_clients_leave_the_init_healthy_with_flat_memory() {
    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("worker", "worker line 2");
    let socket = init.socket().to_string();
    let rss = |pid: i32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let pid = init.host_pid();
    let hostile = |round: u64| {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let garbage: Vec<u8> = (0..4096u64).map(|i| ((i * 7919 + round * 31) % 251) as u8).collect();
        match round % 4 {
            0 => drop(stream.write_all(&garbage)),
            1 => drop(stream.write_all(&vec![b'{'; 200 * 1024])),
            2 => drop(stream.write_all(b"{\"v\":1,\"cmd\"")),
            _ => drop(stream.write_all(b"{\"v\":99,\"cmd\":\"status\"}\n")),
        }
        if round % 4 != 2 {
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
        }
    };
    for round in 0..50 {
        hostile(round);
    }
    let warm = rss(pid);
    for round in 0..400 {
        hostile(round);
    }
    // Half-open clients that never finish their request: dropped after the request timeout.
    let idle: Vec<UnixStream> = (0..40).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    let (code, _, stderr) = init.client(&["status"]);
    assert_eq!(code, 0, "status answers while clients hang: {stderr}");
    drop(idle);
    let after = rss(pid);
    assert!(after <= warm + 512, "RSS grew from {warm} kB to {after} kB");
    let (code, _, _) = init.client(&["health"]);
    assert!(code == 0 || code == 1, "health answers");
    let mut wrong_version = UnixStream::connect(&socket).unwrap();
    wrong_version.write_all(b"{\"v\":99,\"cmd\":\"status\"}\n").unwrap();
    let mut answer = String::new();
    wrong_version.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"type\":\"error\"") && answer.contains("version"), "{answer}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn without_an_init_or_permission_the_client_says_so() {
    let output = std::process::Command::new(init_binary())
        .arg("status")
        .env("NIX2GPU_CONTROL_SOCKET", fresh_socket_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no init is running"), "{output:?}");

    let config = config_file(TWO_SERVICES);
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("worker", "worker line 2");
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(init_binary())
        .arg("status")
        .env("NIX2GPU_CONTROL_SOCKET", init.socket())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("permission denied"), "{output:?}");
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

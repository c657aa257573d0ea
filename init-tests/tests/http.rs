//! The HTTP endpoint of a live init as PID 1: /healthz, /readyz (503 then 200, back to 503
//! when a ready process dies), /status, /metrics, and hostile clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use init_tests::{Launch, config_file, free_port};
use nix::sys::signal::Signal;

/// One GET; returns the status code and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the endpoint listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// GETs until the endpoint answers `code`.
fn wait_for(port: u16, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            drop(stream.set_read_timeout(Some(Duration::from_secs(5))));
            if write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_ok() {
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.split_whitespace().nth(1) == Some(&code.to_string()) {
                    return answer;
                }
            }
        }
        assert!(Instant::now() < deadline, "{path} never answered {code}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readyz_follows_readiness_and_status_and_metrics_are_served() {
    let port = free_port();
    let config = config_file(&format!(
        r#"
nix2gpu:
  health: {{listen: "127.0.0.1:{port}"}}
processes:
  web:
    command: exec sleep 1000
    readiness_probe: {{exec: {{command: "test -e /run/web-ready"}}, period_seconds: 0.1}}
    availability: {{restart: always, backoff_seconds: 0.2}}
"#
    ));
    let mut init = Launch::new(&["--config", config.path()]).start();
    wait_for(port, "/healthz", 200);
    let (code, body) = get(port, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("web: starting"), "{body}");

    std::process::Command::new("nsenter")
        .args(["--target", &init.host_pid().to_string(), "--mount", "touch", "/run/web-ready"])
        .status()
        .unwrap();
    wait_for(port, "/readyz", 200);

    let (code, body) = get(port, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["nodes"][0]["name"], "web");
    assert_eq!(status["nodes"][0]["state"], "ready");
    let (_, cli, _) = init.client(&["status", "--json"]);
    let cli: serde_json::Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli["nodes"][0]["pid"], status["nodes"][0]["pid"], "the CLI and /status agree");

    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("nix2gpu_node_ready{node=\"web\"} 1"), "{metrics}");
    assert!(metrics.contains("nix2gpu_node_restarts"), "{metrics}");

    // The ready process dies: 503 until it is back and ready.
    let web = init.host_pid_of(status["nodes"][0]["pid"].as_i64().unwrap());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(web), Signal::SIGKILL).unwrap();
    wait_for(port, "/readyz", 503);
    wait_for(port, "/readyz", 200);
    assert_eq!(get(port, "/nope").0, 404);

    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

#[test]
fn hostile_http_clients_do_not_stall_the_init() {
    let port = free_port();
    let config = config_file(&format!(
        "nix2gpu:\n  health: {{listen: \"127.0.0.1:{port}\"}}\nprocesses:\n  svc: {{command: exec sleep 1000}}\n"
    ));
    let mut init = Launch::new(&["--config", config.path()]).start();
    wait_for(port, "/healthz", 200);
    // Half-open clients that never finish their request, garbage, and an oversized header.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", init.host_pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut warm = 0;
    for round in 0..250u64 {
        if round == 50 {
            warm = rss();
        }
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let garbage: Vec<u8> = (0..2048u64).map(|i| ((i * 7919 + round) % 251) as u8).collect();
        let _ = if round % 2 == 0 {
            stream.write_all(&garbage)
        } else {
            stream.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 * 1024)).as_bytes())
        };
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
    assert_eq!(get(port, "/healthz").0, 200, "still serving with idle clients hanging");
    let after = rss();
    assert!(after <= warm + 512, "RSS grew from {warm} kB to {after} kB");
    let (code, _, _) = init.client(&["status"]);
    assert_eq!(code, 0, "the control socket still answers");
    drop(idle);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

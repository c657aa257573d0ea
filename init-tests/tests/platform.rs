//! Platform detection through the real binary: `detect`, the init's log line, the
//! `NIX2GPU_PLATFORM` its services get, and the platform in `status` and on `/status`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use init_tests::{Launch, config_file, free_port, init_binary};
use nix::sys::signal::Signal;

/// vast.ai's predefined variables, as an instance has them (vast-ai/docs docker-environment).
const VAST: [(&str, &str); 5] = [
    ("VAST_CONTAINERLABEL", "C.4242"),
    ("PUBLIC_IPADDR", "203.0.113.9"),
    ("VAST_TCP_PORT_22", "40022"),
    ("GPU_COUNT", "2"),
    ("DATA_DIRECTORY", "/workspace"),
];

/// `detect ARGS` with only `env` in its environment: exit code and stdout.
fn detect(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(init_binary())
        .arg("detect")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn detect_names_the_platform_and_its_evidence() {
    let (code, json) = detect(&["--json"], &VAST);
    assert_eq!(code, 0);
    let platform: serde_json::Value = serde_json::from_str(&json).expect("detect --json is JSON");
    assert_eq!(
        platform,
        serde_json::json!({
            "kind": "vast", "evidence": "VAST_CONTAINERLABEL", "public_ip": "203.0.113.9",
            "ssh_port": 40022, "gpu_count": 2, "volume_dir": "/workspace"
        })
    );
    let (code, text) = detect(&[], &[("RUNPOD_POD_ID", "pod-1"), ("RUNPOD_TCP_PORT_22", "10022")]);
    assert_eq!(code, 0);
    assert!(text.starts_with("platform: runpod (evidence: RUNPOD_POD_ID; ssh port 10022"), "{text}");
    let (_, text) =
        detect(&[], &[("KUBERNETES_SERVICE_HOST", "10.96.0.1"), ("NVIDIA_VISIBLE_DEVICES", "0,1,2")]);
    assert_eq!(text, "platform: kubernetes (evidence: KUBERNETES_SERVICE_HOST; 3 GPU(s))\n");
}

#[test]
fn services_status_and_the_endpoint_see_the_platform() {
    let port = free_port();
    let config = config_file(&format!(
        r#"
nix2gpu:
  health: {{listen: "127.0.0.1:{port}"}}
processes:
  show:
    command: echo "platform=$$NIX2GPU_PLATFORM"; exec sleep 1000
"#
    ));
    let mut launch = Launch::new(&["--config", config.path()]);
    for (key, value) in VAST {
        launch = launch.env(key, value);
    }
    let mut init = launch.start();
    let line = init.wait_for_line("platform: vast (evidence: VAST_CONTAINERLABEL");
    assert!(line.starts_with("init"), "{line}");
    assert!(line.contains("public ip 203.0.113.9, ssh port 40022, 2 GPU(s), volume /workspace)"), "{line}");
    init.wait_for_service_line("show", "platform=vast");

    let status = init.status();
    assert_eq!(status["platform"]["kind"], "vast", "{status}");
    assert_eq!(status["platform"]["ssh_port"], 40022, "{status}");
    let (code, table, _) = init.client(&["status"]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("platform: vast (evidence: VAST_CONTAINERLABEL; public ip 203.0.113.9")),
        "{table}"
    );

    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the endpoint listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /status HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    let served: serde_json::Value = serde_json::from_str(body).expect("/status is JSON");
    assert_eq!(served["platform"], status["platform"]);

    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

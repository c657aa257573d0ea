//! The secrets sweep: an init as PID 1 given known values of ROOT_PASSWORD and
//! TAILSCALE_AUTHKEY, with a user service and the tailscale node (against the tailscaled
//! stand-in), is searched for them everywhere a secret could leak: its output, `status` (text
//! and JSON), the HTTP endpoint's /status, /metrics and /readyz, and the command line and
//! environment of every process in its PID namespace. Only PID 1's own environment holds them:
//! the container runtime put them there.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use init_tests::recorded::Recorded;
use init_tests::{Launch, config_file, free_port};
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_tailscaled-standin");

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the endpoint listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn secrets_appear_nowhere_but_in_pid_1s_own_environment() {
    let password = format!("pw-sweep-{}-x7", std::process::id());
    let key = format!("tskey-good-sweep-{}-q9", std::process::id());
    let record = Recorded::new("secrets-sweep");
    let port = free_port();
    // The service prints its environment, the variables as its shell sees them, and the
    // config's expansion of them: all must come out without the values.
    let config = config_file(&format!(
        r#"
nix2gpu:
  gpu: {{enable: false}}
  ssh: {{enable: false}}
  health: {{listen: "127.0.0.1:{port}"}}
  tailscale: {{tailscaled: {STANDIN}}}
processes:
  app:
    command: "env; echo shell=$$ROOT_PASSWORD$$TAILSCALE_AUTHKEY; echo config=${{ROOT_PASSWORD}}${{TAILSCALE_AUTHKEY}}; echo env-done; exec sleep 1000"
"#
    ));
    let mut init = Launch::new(&["--config", config.path()])
        .env("ROOT_PASSWORD", &password)
        .env("TAILSCALE_AUTHKEY", &key)
        .env("TAILSCALED_STANDIN_RECORD", record.path())
        .start();
    init.wait_for_service_line("app", "env-done");
    init.wait_for_node("tailscale", "ready", |n| n["ready"] == true);
    assert_eq!(
        init.service_lines("app").iter().find(|l| l.starts_with("shell=")).map(String::as_str),
        Some("shell=")
    );
    // The key did its work: it reached tailscaled, in the body of start.
    let start = record.entries().into_iter().find(|e| e["path"] == "/localapi/v0/start").expect("a login");
    let body: Value = serde_json::from_str(start["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["AuthKey"], key.as_str());

    let mut places: Vec<(String, String)> = Vec::new();
    let (_, json, _) = init.client(&["status", "--json"]);
    let (_, text, _) = init.client(&["status"]);
    places.push(("status --json".into(), json));
    places.push(("status".into(), text));
    for path in ["/status", "/metrics", "/readyz"] {
        places.push((format!("GET {path}"), http_get(port, path)));
    }
    let pid1 = init.host_pid();
    let pids = init.namespace_pids();
    // The init, the service's sleep, the tailscale node and tailscaled: a sweep of nothing
    // would prove nothing.
    assert!(pids.len() >= 4, "only {pids:?} in the namespace");
    for pid in pids {
        let read = |what: &str| {
            fs::read(format!("/proc/{pid}/{what}")).map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        };
        let Ok(cmdline) = read("cmdline") else { continue };
        places.push((
            format!("/proc/{pid}/cmdline ({})", cmdline.lines().next().unwrap_or("")),
            cmdline.clone(),
        ));
        let environ = read("environ").unwrap_or_default();
        if pid == pid1 {
            // The sweep can see a secret where there is one.
            assert!(
                environ.contains(&password) && environ.contains(&key),
                "PID 1's environment, as the runtime gave it"
            );
        } else {
            places.push((format!("/proc/{pid}/environ ({})", cmdline.lines().next().unwrap_or("")), environ));
        }
    }
    // The output last, so that it holds everything printed while the rest was read.
    places.push(("the init's output".into(), init.output().join("\n")));
    for (place, content) in &places {
        for (name, secret) in [("ROOT_PASSWORD", &password), ("TAILSCALE_AUTHKEY", &key)] {
            assert!(!content.contains(secret.as_str()), "${name}'s value is in {place}:\n{content}");
        }
    }

    // Where the value went instead: a root-only file, in a root-only directory.
    let modes = std::process::Command::new("nsenter")
        .args(["--target", &pid1.to_string(), "--mount", "stat", "-c", "%a %U %n"])
        .args([
            "/run/nix2gpu/secrets",
            "/run/nix2gpu/secrets/tailscale_authkey",
            "/run/nix2gpu/secrets/root_password",
        ])
        .output()
        .expect("nsenter runs");
    assert_eq!(
        String::from_utf8_lossy(&modes.stdout),
        "700 root /run/nix2gpu/secrets\n600 root /run/nix2gpu/secrets/tailscale_authkey\n600 root /run/nix2gpu/secrets/root_password\n"
    );
}

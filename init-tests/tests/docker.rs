//! End-to-end tests in the local Docker engine: the image `cargo xtask image` builds (the
//! static init as Entrypoint, busybox, OpenSSH) run as containers, observed the way users see
//! them: `docker logs`, `docker stop`, the HEALTHCHECK state, exit codes, `docker exec`.
//!
//! Each container gets its config bind-mounted over /etc/nix2gpu/config.yaml and is removed at
//! the end, pass or fail (the harness: `init_tests::docker`). Waits are on `docker events` and
//! `docker wait`, each bounded. The platforms' SSH access is in docker_ssh.rs, NVIDIA's
//! injection in docker_gpu.rs.

use std::time::{Duration, Instant};

use init_tests::docker::{Container, docker};

const WEB_AND_CLIENT: &str = r#"
processes:
  web:
    command: "mkdir -p /srv && echo hello > /srv/index.html && exec httpd -f -p 8080 -h /srv"
    readiness_probe:
      http_get: {host: 127.0.0.1, port: 8080, path: /}
      period_seconds: 0.2
  client:
    command: "echo \"got: $$(wget -q -O - http://127.0.0.1:8080/)\"; exec sleep 1000"
    depends_on:
      web: {condition: process_healthy}
"#;

#[test]
fn logs_health_exec_and_an_ordered_stop() {
    let container = Container::start(WEB_AND_CLIENT, &[]);
    container.wait_for_event("health_status: healthy");
    let logs = container.logs();
    assert!(logs.contains("client | got: hello"), "{logs}");
    assert!(logs.lines().any(|l| l.starts_with("init   | web: ready")), "{logs}");
    // No colours or escape codes: docker logs is not a terminal.
    assert!(!logs.contains('\x1b'), "{logs}");

    let status = container.exec(&["nix2gpu-init", "status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let web = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "web").unwrap();
    assert_eq!(web["state"], "ready", "{status}");

    let started = Instant::now();
    docker(&["stop", "--time", "10", &container.name]);
    let took = started.elapsed();
    assert_eq!(container.wait_for_exit(), 0);
    assert!(took < Duration::from_secs(1), "docker stop took {took:?}");
    // Dependents stop before what they depend on.
    let logs = container.logs();
    let at = |needle: &str| logs.find(needle).unwrap_or_else(|| panic!("no `{needle}` in\n{logs}"));
    assert!(at("client: stopped") < at("web: stopping"), "{logs}");
}

#[test]
fn a_ready_service_that_dies_turns_the_container_unhealthy() {
    let container = Container::start(WEB_AND_CLIENT, &[]);
    container.wait_for_event("health_status: healthy");
    let killed = container.exec(&["sh", "-c", "kill $(pidof httpd)"]);
    assert!(killed.status.success(), "{killed:?}");
    container.wait_for_event("health_status: unhealthy");
    let health = container.exec(&["nix2gpu-init", "health"]);
    assert_eq!(health.status.code(), Some(1), "{health:?}");
}

#[test]
fn a_failing_exit_on_failure_service_ends_the_container_with_its_code() {
    let config = r#"
processes:
  steady:
    command: "exec sleep 1000"
  job:
    command: "echo failing; exit 3"
    availability: {restart: exit_on_failure}
"#;
    let container = Container::start(config, &[]);
    assert_eq!(container.wait_for_exit(), 3);
    let logs = container.logs();
    assert!(logs.contains("job    | failing"), "{logs}");
}

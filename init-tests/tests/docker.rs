//! End-to-end tests in the local Docker engine: the image `cargo xtask image` builds (the
//! static init as Entrypoint, busybox, OpenSSH) run as containers, observed the way users see
//! them: `docker logs`, `docker stop`, the HEALTHCHECK state, exit codes, `docker exec`.
//!
//! Each container gets its config bind-mounted over /etc/nix2gpu/config.yaml and is removed at
//! the end, pass or fail. Waits are on `docker events` and `docker wait`, each bounded.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use init_tests::PATIENCE;

/// The image built by `cargo xtask image` (run by `cargo xtask test` before the tests).
const IMAGE: &str = "nix2gpu-init:dev";

fn docker(args: &[&str]) -> Output {
    let output = Command::new("docker").args(args).output().expect("cannot run docker");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A running container, removed when dropped.
struct Container {
    name: String,
    /// `docker events` for this container, one line per event (`health_status: healthy`, ...).
    events: Receiver<String>,
    _watcher: Watcher,
    _config_dir: PathBuf,
}

/// The `docker events` process, killed when dropped.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Container {
    /// Starts the image with `config` as its configuration and `extra` `docker run` arguments
    /// (before the image name).
    fn start(config: &str, extra: &[&str]) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let name = format!("n2g-test-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        // Events are watched from before the start, so that none is missed.
        let since = text(&docker(&["system", "info", "--format", "{{.SystemTime}}"]));
        let mut watcher = Command::new("docker")
            .args(["events", "--since", &since, "--filter", &format!("container={name}")])
            .args(["--format", "{{.Status}}"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run docker events");
        let (sender, events) = channel();
        let stdout = watcher.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mount = format!("{}:/etc/nix2gpu/config.yaml:ro", config_path.display());
        let mut args = vec!["run", "-d", "--name", &name, "-v", &mount];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        docker(&args);
        Self { name, events, _watcher: Watcher(watcher), _config_dir: dir }
    }

    /// Waits for an event whose status starts with `status` (e.g. `health_status: healthy`).
    fn wait_for_event(&self, status: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) if event.starts_with(status) => return,
                Ok(event) => seen.push(event),
                Err(_) => break,
            }
        }
        panic!(
            "no `{status}` event for {} within {PATIENCE:?}; saw {seen:?}\nlogs:\n{}",
            self.name,
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let output = docker(&["logs", &self.name]);
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        Command::new("docker").args(&all).output().expect("cannot run docker exec")
    }

    /// Waits for the container to end (bounded) and gives its exit code.
    fn wait_for_exit(&self) -> i32 {
        let mut waiter =
            Command::new("docker").args(["wait", &self.name]).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = waiter.stdout.take().unwrap();
        let (sender, code) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = code.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let _ = waiter.kill();
            panic!("{} did not exit within {PATIENCE:?}; logs:\n{}", self.name, self.logs())
        });
        let _ = waiter.wait();
        line.trim().parse().unwrap_or_else(|_| panic!("docker wait printed {line:?}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self._config_dir);
    }
}

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

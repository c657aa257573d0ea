//! The harness of the Docker tests: the image `cargo xtask image` builds, run as containers by
//! the local engine and observed the way users see them (`docker logs`, `docker events`,
//! `docker exec`, `docker wait`).
//!
//! Everything a test creates has a name unique to the test run (`n2g-test-PID-N`) and is
//! removed when its guard is dropped, pass or fail: containers, networks and scratch
//! directories. Every wait is bounded by [`PATIENCE`].

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use crate::PATIENCE;

/// The image built by `cargo xtask image` (run by `cargo xtask test` before the tests).
pub const IMAGE: &str = "nix2gpu-init:dev";

/// Runs `docker ARGS`, failing the test with docker's message if it fails.
pub fn docker(args: &[&str]) -> Output {
    let output = Command::new("docker").args(args).output().expect("cannot run docker");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A command's stdout, trimmed.
pub fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A command's stdout as JSON, failing the test with the whole output if it is not.
pub fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {output:?}"))
}

/// A name no other object of this test run has: `n2g-test-PID-N`.
pub fn unique_name() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!("n2g-test-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed))
}

/// A temporary directory, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `-v HOST:CONTAINER:ro`'s argument.
pub fn read_only_mount(host: &Path, container: &str) -> String {
    format!("{}:{container}:ro", host.display())
}

/// A user-defined bridge network (containers on it reach each other by name), removed when
/// dropped. Declare it before the containers that join it, so that they are dropped (and
/// removed) first: Docker refuses to remove a network that still has containers.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create() -> Self {
        let name = unique_name();
        docker(&["network", "create", &name]);
        Self { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["network", "rm", &self.name]).output();
    }
}

/// A container of [`IMAGE`], removed (with `docker rm -f`) when dropped.
pub struct Container {
    pub name: String,
    /// `docker events` for this container, one line per event (`health_status: healthy`, ...).
    events: Receiver<String>,
    _watcher: Watcher,
    _scratch: Scratch,
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
    /// Starts the image with `config` bind-mounted over /etc/nix2gpu/config.yaml and `extra`
    /// `docker run` options.
    pub fn start(config: &str, extra: &[&str]) -> Self {
        let name = unique_name();
        let scratch = Scratch::new(&name);
        let config_path = scratch.path("config.yaml");
        fs::write(&config_path, config).unwrap();
        let mount = read_only_mount(&config_path, "/etc/nix2gpu/config.yaml");
        let mut options = vec!["-v", mount.as_str()];
        options.extend_from_slice(extra);
        Self::launch(name, scratch, &options, &[])
    }

    /// Starts the image with `options` for `docker run` and `args` after the image's name (a
    /// CMD for the init, or the arguments of another `--entrypoint`).
    pub fn run(options: &[&str], args: &[&str]) -> Self {
        let name = unique_name();
        let scratch = Scratch::new(&name);
        Self::launch(name, scratch, options, args)
    }

    fn launch(name: String, scratch: Scratch, options: &[&str], args: &[&str]) -> Self {
        // Events are watched from before the start, so that none is missed.
        let since = text(&docker(&["system", "info", "--format", "{{.SystemTime}}"]));
        let mut watcher = Command::new("docker")
            .args(["events", "--since", &since, "--filter", &format!("container={name}")])
            .args(["--format", "{{.Status}}"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run docker events");
        let (sender, events) = channel();
        // Invariant: stdout was asked to be piped just above.
        let stdout = watcher.stdout.take().expect("docker events' stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // The guard exists before `docker run`, so that a container created by a run that then
        // fails (a bad mount, say) is still removed.
        let container = Self { name, events, _watcher: Watcher(watcher), _scratch: scratch };
        let mut all = vec!["run", "-d", "--name", container.name.as_str()];
        all.extend_from_slice(options);
        all.push(IMAGE);
        all.extend_from_slice(args);
        docker(&all);
        container
    }

    /// Waits for an event whose status starts with `status` (e.g. `health_status: healthy`).
    pub fn wait_for_event(&self, status: &str) {
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

    /// `docker logs`: the container's stdout and stderr, apart.
    pub fn output(&self) -> Output {
        docker(&["logs", &self.name])
    }

    /// `docker logs`, stdout then stderr.
    pub fn logs(&self) -> String {
        let output = self.output();
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    /// `docker exec NAME ARGS`, whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        Command::new("docker").args(&all).output().expect("cannot run docker exec")
    }

    /// One of `docker inspect`'s fields (`{{.Config.Hostname}}`).
    pub fn inspect(&self, format: &str) -> String {
        text(&docker(&["inspect", "--format", format, &self.name]))
    }

    /// Waits for the container to end (bounded) and gives its exit code.
    pub fn wait_for_exit(&self) -> i32 {
        let mut waiter =
            Command::new("docker").args(["wait", &self.name]).stdout(Stdio::piped()).spawn().unwrap();
        // Invariant: stdout was asked to be piped just above.
        let stdout = waiter.stdout.take().expect("docker wait's stdout is piped");
        let (sender, code) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = code.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let _ = waiter.kill();
            let _ = waiter.wait();
            panic!("{} did not exit within {PATIENCE:?}; logs:\n{}", self.name, self.logs())
        });
        let _ = waiter.wait();
        line.trim().parse().unwrap_or_else(|_| panic!("docker wait printed {line:?}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

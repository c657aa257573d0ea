//! `cargo xtask demo`: the init at work, in the local Docker engine when there is one (the
//! image `cargo xtask image` builds, with its demo config), else as PID 1 of fresh namespaces
//! running fixtures/demo.sh. Either way it ends by itself within seconds.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{image, root, static_build};

/// How long the container gets to turn healthy before the demo gives up.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

pub fn run() -> Result<(), String> {
    if engine_answers() { in_docker() } else { in_namespaces() }
}

/// Whether `docker info` succeeds: a client and a running engine.
fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The demo container, removed when dropped (the demo failed half-way, or is done).
struct DemoContainer(String);

impl Drop for DemoContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// Builds the image, starts it, waits for its HEALTHCHECK, shows `docker logs` and `status`,
/// stops it and shows the ordered stop and the exit code.
fn in_docker() -> Result<(), String> {
    image::build()?;
    let container = DemoContainer(format!("nix2gpu-demo-{}", std::process::id()));
    let name = container.0.as_str();
    // Events are watched from before the start, so the health event cannot be missed, and only
    // until the deadline, so the watch ends by itself.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| format!("the clock: {e}"))?;
    let mut events = Command::new("docker")
        .args(["events", "--filter", &format!("container={name}"), "--filter", "event=health_status"])
        .args(["--since", &now.as_secs().to_string()])
        .args(["--until", &(now + HEALTHY_WITHIN).as_secs().to_string()])
        .args(["--format", "{{.Status}}"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker events: {e}"))?;
    println!("--- docker run -d --name {name} {}", image::TAG);
    let started = Instant::now();
    docker(&["run", "-d", "--name", name, image::TAG])?;
    let healthy = events.stdout.take().is_some_and(|stdout| {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|status| status == "health_status: healthy")
    });
    let _ = events.kill();
    let _ = events.wait();
    if !healthy {
        show("docker logs", &docker(&["logs", name])?);
        return Err(format!("the container did not turn healthy within {HEALTHY_WITHIN:?}"));
    }
    println!("--- healthy after {:.1} s (HEALTHCHECK: nix2gpu-init health)", started.elapsed().as_secs_f64());
    show(&format!("docker logs {name}"), &docker(&["logs", name])?);
    show(
        &format!("docker exec {name} nix2gpu-init status"),
        &docker(&["exec", name, "nix2gpu-init", "status"])?,
    );
    let logged = docker(&["logs", name])?.stdout.len();
    let stopping = Instant::now();
    docker(&["stop", name])?;
    let took = stopping.elapsed();
    let after = docker(&["logs", name])?;
    println!("--- docker stop {name}: {:.2} s; the shutdown:", took.as_secs_f64());
    print!("{}", String::from_utf8_lossy(after.stdout.get(logged..).unwrap_or_default()));
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
    println!("--- the container exited with {}", String::from_utf8_lossy(&code.stdout).trim());
    Ok(())
}

/// `docker ARGS`, its output captured; an error with docker's message if it fails.
fn docker(args: &[&str]) -> Result<Output, String> {
    let output = Command::new("docker").args(args).output().map_err(|e| format!("cannot run docker: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn show(title: &str, output: &Output) {
    println!("--- {title}");
    print!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

/// The init as PID 1 of a fresh PID namespace, running fixtures/demo.sh.
fn in_namespaces() -> Result<(), String> {
    let binary = static_build::build()?;
    let script = root().join("fixtures/demo.sh");
    println!(
        "--- no Docker engine answers: nix2gpu-init as PID 1 in a fresh PID and mount namespace, main process: {}",
        script.display()
    );
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var && exec \"$@\"")
        .arg("sh")
        .arg(&binary)
        .arg("--")
        .arg("sh")
        .arg(&script)
        .status()
        .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
    println!(
        "--- the init exited with {} (the main process's code)",
        status.code().map_or("a signal".into(), |c| c.to_string())
    );
    Ok(())
}

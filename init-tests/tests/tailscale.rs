//! The `tailscale` node of a live init as PID 1, against the tailscaled stand-in
//! (`init-tests/src/bin/tailscaled-standin.rs`), which speaks the LocalAPI endpoints the node
//! uses and records every request: the login with the key from the environment or a file, the
//! key in the request body and on no command line, readiness and the status report, a refused
//! key reported once and not retried, a killed tailscaled restarted, a missing one named.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use init_tests::recorded::Recorded;
use init_tests::{Init, Launch, config_file};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const STANDIN: &str = env!("CARGO_BIN_EXE_tailscaled-standin");
const READY_LINE: &str = "tailscale backend is Running";

/// The LocalAPI requests among the records, as `METHOD PATH`.
fn requests(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|entry| entry["method"].is_string())
        .map(|entry| format!("{} {}", entry["method"].as_str().unwrap(), entry["path"].as_str().unwrap()))
        .collect()
}

fn count(entries: &[Value], request: &str) -> usize {
    requests(entries).iter().filter(|r| *r == request).count()
}

/// The command lines of every process in the init's namespace.
fn command_lines(init: &Init) -> Vec<String> {
    init.namespace_pids()
        .into_iter()
        .filter_map(|pid| fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .collect()
}

/// The host pid of the stand-in in the init's namespace.
fn standin_pid(init: &Init) -> i32 {
    init.namespace_pids()
        .into_iter()
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--socket="))
        })
        .expect("the stand-in runs")
}

/// A directory holding `tailscaled`, a link to the stand-in, for the front of PATH.
struct FakePath(std::path::PathBuf);

impl FakePath {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nix2gpu-test-{}-{name}-bin", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        symlink(STANDIN, dir.join("tailscaled")).unwrap();
        Self(dir)
    }

    fn path_var(&self) -> String {
        format!("{}:{}", self.0.display(), std::env::var("PATH").unwrap_or_default())
    }
}

impl Drop for FakePath {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_key_from_the_environment_logs_in_through_the_localapi_and_makes_the_node_ready() {
    let key = format!("tskey-good-env-{}", std::process::id());
    let record = Recorded::new("tailscale-login");
    let bin = FakePath::new("tailscale-login");
    let config = config_file(
        "nix2gpu:\n  gpu: {enable: false}\n  ssh: {enable: false}\n  tailscale: {hostname: gpu-box, tags: ['tag:gpu'], ssh: true}\n",
    );
    let mut init = Launch::new(&["--config", config.path()])
        .env("PATH", &bin.path_var())
        .env("TAILSCALE_AUTHKEY", &key)
        .env("TAILSCALED_STANDIN_RECORD", record.path())
        .start();

    let ready = init.wait_for_service_line("tailscale", READY_LINE);
    assert!(ready.contains("tailnet standin@example.com") && ready.contains("100.100.7.7"), "{ready}");
    let node = init.wait_for_node("tailscale", "ready", |n| n["ready"] == true);
    assert_eq!(node["state"], "ready");
    // While it runs: the key is on no command line in the container.
    for line in command_lines(&init) {
        assert!(!line.contains(&key), "the key is on a command line: {line}");
    }

    let entries = record.entries();
    // tailscaled was found on PATH and given its state, socket and userspace networking.
    let argv: Vec<&str> =
        entries[0]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(argv[0], "tailscaled");
    assert_eq!(
        argv[1..],
        [
            "--state=/var/lib/tailscale/tailscaled.state",
            "--socket=/run/tailscale/tailscaled.sock",
            "--tun=userspace-networking"
        ]
    );
    // The conversation of `tailscale up --auth-key`, in order.
    assert_eq!(
        requests(&entries),
        [
            "GET /localapi/v0/status?peers=false",
            "GET /localapi/v0/watch-ipn-bus?mask=2",
            "POST /localapi/v0/start",
            "POST /localapi/v0/login-interactive",
            "GET /localapi/v0/status?peers=false",
        ]
    );
    for entry in entries.iter().filter(|e| e["method"].is_string()) {
        assert_eq!(entry["headers"]["host"], "local-tailscaled.sock", "{entry}");
    }
    let start = entries.iter().find(|e| e["path"] == "/localapi/v0/start").unwrap();
    let body: Value = serde_json::from_str(start["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["AuthKey"], key.as_str(), "the key travels in the body of start");
    let prefs = &body["UpdatePrefs"];
    assert_eq!(prefs["Hostname"], "gpu-box");
    assert_eq!(prefs["AdvertiseTags"], serde_json::json!(["tag:gpu"]));
    assert_eq!(prefs["RunSSH"], true);
    assert_eq!(prefs["WantRunning"], true);

    // The status carries the node's report; the text status shows it in one line.
    let status = init.status();
    let report = &status["tailscale"];
    assert_eq!(report["backend_state"], "Running");
    assert_eq!(report["tailnet"], "standin@example.com");
    assert_eq!(report["ips"], serde_json::json!(["100.100.7.7", "fd7a:115c:a1e0::7"]));
    assert_eq!(report["hostname"], "gpu-box");
    let (_, text, _) = init.client(&["status"]);
    assert!(
        text.contains("tailscale: Running, tailnet standin@example.com, 100.100.7.7 fd7a:115c:a1e0::7"),
        "{text}"
    );
    assert!(!status.to_string().contains(&key) && !text.contains(&key));
    assert!(init.output().iter().all(|line| !line.contains(&key)), "the key was printed");
}

#[test]
fn a_refused_key_is_one_clear_error_and_no_retry() {
    let key = format!("tskey-revoked-{}", std::process::id());
    let record = Recorded::new("tailscale-refused");
    let config = config_file(&format!(
        "nix2gpu:\n  gpu: {{enable: false}}\n  ssh: {{enable: false}}\n  tailscale: {{tailscaled: {STANDIN}}}\n"
    ));
    let mut init = Launch::new(&["--config", config.path()])
        .env("TAILSCALE_AUTHKEY", &key)
        .env("TAILSCALED_STANDIN_RECORD", record.path())
        .start();

    let error = init.wait_for_service_line("tailscale", "tailscale refused the login");
    assert!(error.contains("invalid key: unable to validate API key"), "{error}");
    assert!(error.contains("Not retrying"), "{error}");
    // A few seconds in which a second login would show up in the record: none does.
    let second_start = record.wait_until(Duration::from_secs(3), |e| count(e, "POST /localapi/v0/start") > 1);
    let entries = second_start.expect_err("the node retried the refused key");
    assert_eq!(count(&entries, "POST /localapi/v0/start"), 1, "{entries:?}");
    assert_eq!(count(&entries, "POST /localapi/v0/login-interactive"), 1, "{entries:?}");

    // The node stays up without being ready (the graph's `starting`: its ready line never
    // came), not restarted; the report says why.
    let node = init.node("tailscale");
    assert_eq!(
        (node["state"].as_str(), node["ready"].as_bool(), node["restarts"].as_u64()),
        (Some("starting"), Some(false), Some(0)),
        "{node}"
    );
    let status = init.status();
    assert_eq!(status["tailscale"]["backend_state"], "NeedsLogin");
    assert_eq!(status["tailscale"]["error"], "invalid key: unable to validate API key");
    let (code, _, _) = init.client(&["health"]);
    assert_eq!(code, 1, "not healthy while logged out");
    assert!(init.output().iter().all(|line| !line.contains(&key)), "the key was printed");
}

#[test]
fn a_killed_tailscaled_is_restarted_and_comes_back_with_its_state() {
    // The key from a file: its content is the key (nix2gpu passed the path as the key).
    let key = format!("tskey-good-file-{}", std::process::id());
    let key_file = config_file(&format!("  {key}\n"));
    let record = Recorded::new("tailscale-restart");
    let config = config_file(&format!(
        "nix2gpu:\n  gpu: {{enable: false}}\n  ssh: {{enable: false}}\n  tailscale: {{tailscaled: {STANDIN}}}\n"
    ));
    let mut init = Launch::new(&["--config", config.path()])
        .env("TAILSCALE_AUTHKEY_FILE", key_file.path())
        .env("TAILSCALED_STANDIN_RECORD", record.path())
        .start();
    init.wait_for_node("tailscale", "ready", |n| n["ready"] == true);
    let start = record.entries().into_iter().find(|e| e["path"] == "/localapi/v0/start").unwrap();
    let body: Value = serde_json::from_str(start["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["AuthKey"], key.as_str(), "the file's content, trimmed, is the key");

    kill(Pid::from_raw(standin_pid(&init)), Signal::SIGKILL).unwrap();
    init.wait_for_service_line("tailscale", "tailscaled killed by SIGKILL");
    let node =
        init.wait_for_node("tailscale", "restarted and ready", |n| n["restarts"] == 1 && n["ready"] == true);
    assert_eq!(node["state"], "ready");
    let entries = record.entries();
    assert_eq!(entries.iter().filter(|e| e["argv"].is_array()).count(), 2, "a second tailscaled ran");
    // The machine is in tailscaled's state: the second one came up Running, no login needed.
    assert_eq!(count(&entries, "POST /localapi/v0/start"), 1, "{entries:?}");
    assert_eq!(init.status()["tailscale"]["backend_state"], "Running");
}

#[test]
fn a_missing_tailscaled_is_named() {
    let config = config_file(
        "nix2gpu:\n  gpu: {enable: false}\n  ssh: {enable: false}\n  tailscale: {enable: true, tailscaled: tailscaled-not-installed}\n",
    );
    let mut init = Launch::new(&["--config", config.path()]).start();
    let line =
        init.wait_for_service_line("tailscale", "cannot run `tailscaled-not-installed`: not found in PATH");
    assert!(line.contains("nix2gpu.tailscale.tailscaled"), "{line}");
    init.wait_for_node("tailscale", "failed with 127", |n| n["exit_code"] == 127);
}

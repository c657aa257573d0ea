//! `nix2gpu-init gpu-probe` against NVIDIA's real userspace (Debian's libnvidia-ml and
//! nvidia-smi, without a driver) and against fake libraries whose nvmlInit_v2 crashes or
//! hangs; and the init as PID 1 outliving a probe that crashes.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use init_tests::{Launch, config_file, find_process, fixture, in_private_dev, init_binary, nvidia_root};
use nix::sys::signal::Signal;

/// Debian's `libnvidia-ml1` and `nvidia-smi`, as `cargo xtask fetch-nvidia` unpacks them.
const DEBIAN_NVML: &str = "usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.1";
const DEBIAN_NVIDIA_SMI: &str = "usr/lib/nvidia/current/nvidia-smi";

/// A file of NVIDIA's userspace, failing the test (not skipping it) when it was not fetched.
fn nvidia_file(relative: &str) -> PathBuf {
    let path = nvidia_root().join(relative);
    assert!(path.exists(), "{} is missing: run `cargo xtask fetch-nvidia`", path.display());
    path
}

/// `gpu-probe ARGS --json`: exit code, the parsed report, and how long it took.
fn probe(args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value, Duration) {
    let started = Instant::now();
    let output = in_private_dev(init_binary())
        .arg("gpu-probe")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output();
    let took = started.elapsed();
    let Output { status, stdout, stderr } = output.expect("the probe runs");
    let report = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "gpu-probe --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    });
    (status.code().expect("the probe is never killed by a signal"), report, took)
}

/// A fake libnvidia-ml.so.1 built from fixtures/fake-nvml.c (`hang`: the variant that blocks).
struct FakeNvml {
    dir: PathBuf,
}

impl FakeNvml {
    fn build(hang: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "nix2gpu-fake-nvml-{}-{}",
            if hang { "hang" } else { "crash" },
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut gcc = Command::new("gcc");
        gcc.args(["-shared", "-fPIC", "-o"]).arg(dir.join("libnvidia-ml.so.1")).arg(fixture("fake-nvml.c"));
        if hang {
            gcc.arg("-DFAKE_NVML_HANG");
        }
        let status = gcc.status().expect("gcc runs");
        assert!(status.success(), "gcc failed to build the fake NVML");
        Self { dir }
    }

    fn library(&self) -> String {
        self.dir.join("libnvidia-ml.so.1").display().to_string()
    }
}

impl Drop for FakeNvml {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn debian_nvml_without_a_driver_says_driver_not_loaded() {
    let library = nvidia_file(DEBIAN_NVML);
    let (code, report, _) = probe(&["--library", library.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["nvml_error"],
        serde_json::json!({
            "kind": "nvml", "function": "nvmlInit_v2", "code": 9,
            "name": "NVML_ERROR_DRIVER_NOT_LOADED", "description": "Driver Not Loaded"
        }),
        "{report}"
    );
    // NVML loaded, so nvidia-smi (which would fail the same way) is not tried.
    assert!(report["source"].is_null() && report["nvidia_smi_error"].is_null(), "{report}");
    assert_eq!(report["library"], library.to_str().unwrap());
}

#[test]
fn the_library_is_found_through_the_toolkit_directory() {
    let library = nvidia_file(DEBIAN_NVML);
    let dir = library.parent().unwrap().to_str().unwrap();
    let (code, report, _) = probe(&[], &[("NVIDIA_CTK_LIBCUDA_DIR", dir)]);
    assert_eq!(code, 1);
    assert_eq!(report["library"], library.to_str().unwrap(), "{report}");
    assert_eq!(report["nvml_error"]["code"], 9, "{report}");
}

#[test]
fn without_nvml_the_real_nvidia_smi_is_asked_and_both_reasons_reported() {
    let nvidia_smi = nvidia_file(DEBIAN_NVIDIA_SMI);
    let smi = nvidia_smi.to_str().unwrap();
    let missing = "/nonexistent/libnvidia-ml.so.1";
    // nvidia-smi finds no libnvidia-ml either: its code 12.
    let (code, report, _) = probe(&["--library", missing, "--nvidia-smi", smi], &[]);
    assert_eq!(code, 1);
    assert_eq!(report["nvml_error"]["kind"], "library_not_loaded", "{report}");
    assert!(
        report["nvml_error"]["message"].as_str().unwrap().contains("No such file or directory"),
        "{report}"
    );
    assert_eq!(report["nvidia_smi_error"]["kind"], "exited", "{report}");
    assert_eq!(report["nvidia_smi_error"]["code"], 12, "{report}");
    assert!(
        report["nvidia_smi_error"]["output"].as_str().unwrap().contains("couldn't find libnvidia-ml.so"),
        "{report}"
    );
    // With the library on its path it gets as far as the driver: code 9.
    let nvml_dir = nvidia_file(DEBIAN_NVML).parent().unwrap().display().to_string();
    let (code, report, _) =
        probe(&["--library", missing, "--nvidia-smi", smi], &[("LD_LIBRARY_PATH", nvml_dir.as_str())]);
    assert_eq!(code, 1);
    assert_eq!(report["nvidia_smi_error"]["code"], 9, "{report}");
    assert!(
        report["nvidia_smi_error"]["output"]
            .as_str()
            .unwrap()
            .contains("couldn't communicate with the NVIDIA driver"),
        "{report}"
    );
}

#[test]
fn a_crash_in_nvml_init_is_reported_with_its_signal_at_once() {
    let fake = FakeNvml::build(false);
    let (code, report, took) = probe(&["--library", &fake.library(), "--timeout", "20"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        report["nvml_error"],
        serde_json::json!({"kind": "crashed", "signal": 11, "signal_name": "SIGSEGV"})
    );
    // Known from the child's exit, not from the timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    println!("crash reported after {took:?}");
}

#[test]
fn a_hang_in_nvml_init_is_cut_off_at_the_timeout() {
    let fake = FakeNvml::build(true);
    let (code, report, took) = probe(&["--library", &fake.library(), "--timeout", "1"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        report["nvml_error"],
        serde_json::json!({"kind": "hung", "timeout_seconds": 1.0, "still_running": false}),
        "{report}"
    );
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "took {took:?}");
    let child = [init_binary().to_str().unwrap(), "gpu-probe", "--child", "--library", &fake.library()]
        .map(String::from);
    let child: Vec<&str> = child.iter().map(String::as_str).collect();
    assert_eq!(find_process(&child), None, "the hung child was left behind");
    println!("hang reported after {took:?} (timeout 1s)");
}

#[test]
fn the_init_outlives_a_probe_that_crashes() {
    let fake = FakeNvml::build(false);
    let config = config_file(&format!(
        r#"
processes:
  probe:
    command: '{binary} gpu-probe --library {library}; echo "probe exit $$?"'
  steady:
    command: echo steady up; exec sleep 1000
"#,
        binary = init_binary().display(),
        library = fake.library(),
    ));
    let mut init = Launch::new(&["--config", config.path()]).start();
    init.wait_for_service_line("probe", "crashed: killed by SIGSEGV (11)");
    init.wait_for_service_line("probe", "probe exit 1");
    init.wait_for_node("probe", "completed", |node| node["state"] == "completed");
    let steady = init.wait_for_node("steady", "running", |node| node["state"] == "running");
    // Still supervising: the same process, and the control socket answers.
    assert_eq!(init.node("steady")["pid"], steady["pid"]);
    init.signal(Signal::SIGTERM);
    assert_eq!(init.wait_exit(), 0);
}

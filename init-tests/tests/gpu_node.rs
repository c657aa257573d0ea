//! The built-in `gpu` node with NVIDIA's real user space (Debian's nvidia-smi, libnvidia-ml1 and
//! libcuda1, fetched into target/nvidia by `cargo xtask fetch-nvidia`), and no GPU: the init
//! starts as PID 1 with empty driver directories, the test injects the libraries later the way
//! a runtime would, and the node must notice at once, make them visible, fix nvidia-smi and give
//! its verdict (NVML: driver not loaded).
//!
//! The namespaces get private /usr/local (the toolkit's /usr/local/nvidia), /dev (for
//! /dev/nvidiactl) and an overlay over /etc (for ld.so.cache), so the machine is never changed.
//! The test reaches the init's files through /proc/PID/root.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use init_tests::{Init, Launch, PRIVATE_DEV, PRIVATE_GPU_SYSTEM, config_file, nvidia_root};

/// The NVIDIA files fetched by `cargo xtask fetch-nvidia`: the library directory and nvidia-smi.
fn nvidia() -> (PathBuf, PathBuf) {
    let root = nvidia_root().join("usr/lib");
    (root.join("x86_64-linux-gnu/nvidia/current"), root.join("nvidia/current/nvidia-smi"))
}

/// The versioned driver files (what the toolkit mounts; the soname links are the node's job).
fn versioned(libs: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(libs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.matches('.').count() >= 4 && !path.is_symlink()
        })
        .unwrap_or_else(|| panic!("no {prefix}.<version> in {}", libs.display()))
}

fn gpu_init(config: &str, visible: &str) -> (Init, init_tests::TempConfig) {
    let config = config_file(config);
    let mut launch =
        Launch::new(&["--config", config.path()]).env("NVIDIA_VISIBLE_DEVICES", visible).setup(PRIVATE_DEV);
    for command in PRIVATE_GPU_SYSTEM {
        launch = launch.setup(command);
    }
    (launch.start(), config)
}

/// A path inside the init's mount namespace.
fn inside(init: &Init, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{path}", init.host_pid()))
}

/// Injects the driver into the running init's namespace, as the toolkit's mounts would.
fn inject(init: &Init) {
    let (libs, smi) = nvidia();
    for prefix in ["libnvidia-ml.so", "libcuda.so"] {
        let file = versioned(&libs, prefix);
        fs::copy(&file, inside(init, "/usr/local/nvidia/lib64").join(file.file_name().unwrap())).unwrap();
    }
    fs::copy(smi, inside(init, "/usr/local/nvidia/bin/nvidia-smi")).unwrap();
    fs::write(inside(init, "/dev/nvidiactl"), "").unwrap();
}

const WITH_DEPENDENT: &str = "
nix2gpu:
  gpu: {enable: true, wait_seconds: 20}
processes:
  after:
    command: echo the gpu node is done
    depends_on: {gpu: {condition: process_completed_successfully}}
  idle:
    command: exec sleep 1000
";

#[test]
fn late_injection_is_noticed_at_once_and_made_visible() {
    let (mut init, _config) = gpu_init(WITH_DEPENDENT, "all");
    init.wait_for_line("waiting up to 20s for the NVIDIA driver");
    // The runtime's injection comes a moment after the init started.
    std::thread::sleep(Duration::from_millis(500));
    inject(&init);
    let injected = Instant::now();
    init.wait_for_service_line("after", "the gpu node is done");
    let delay = injected.elapsed();
    eprintln!("gpu node and its dependent done {delay:?} after the injection");
    assert!(delay < Duration::from_secs(3), "took {delay:?}");

    // Soname links beside the libraries and in the Nix driver directory.
    let nvml_link = inside(&init, "/run/opengl-driver/lib/libnvidia-ml.so.1");
    let target = fs::read_link(&nvml_link).unwrap();
    assert!(target.to_string_lossy().starts_with("/usr/local/nvidia/lib64/libnvidia-ml.so.5"), "{target:?}");
    assert!(inside(&init, "/usr/local/nvidia/lib64/libcuda.so.1").is_symlink());
    let conf = fs::read_to_string(inside(&init, "/etc/ld.so.conf.d/nix2gpu-nvidia.conf")).unwrap();
    assert_eq!(conf, "/usr/local/nvidia/lib64\n");
    // Our loader cache, read by glibc's own ldconfig.
    let listing =
        Command::new("ldconfig").arg("-p").arg("-C").arg(inside(&init, "/etc/ld.so.cache")).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("libnvidia-ml.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libnvidia-ml.so.1"),
        "{listing}"
    );
    assert!(listing.contains("libc.so.6 (libc6,x86-64"), "the system's libraries are kept: {listing}");

    // The verdict: everything in place, no driver answers (no GPU here).
    let gpu = &init.status()["gpu"];
    assert_eq!(gpu["verdict"], "driver_not_answering", "{gpu}");
    assert_eq!(gpu["probe"]["nvml_error"]["code"], 9, "{gpu}");
    assert_eq!(gpu["nvidia_smi"]["exit_code"], 9, "nvidia-smi found NVML through the cache: {gpu}");
    let lines = init.service_lines("gpu");
    assert!(lines.iter().any(|l| l.contains("NVML_ERROR_DRIVER_NOT_LOADED")), "{lines:?}");
}

#[test]
fn nvidia_smi_is_rewritten_for_the_image_s_loader() {
    let config = "
nix2gpu:
  gpu: {enable: true, wait_seconds: 20, loader: /run/glibc/lib/ld-linux-x86-64.so.2}
processes:
  which:
    command: echo \"nvidia-smi is $$(command -v nvidia-smi)\"
    depends_on: {gpu: {condition: process_completed_successfully}}
  idle:
    command: exec sleep 1000
";
    let (mut init, _config) = gpu_init(config, "all");
    init.wait_for_line("waiting up to 20s");
    // The image's loader lives at a path of its own, as in a Nix store.
    let loader_dir = inside(&init, "/run/glibc/lib");
    fs::create_dir_all(&loader_dir).unwrap();
    symlink("/lib64/ld-linux-x86-64.so.2", loader_dir.join("ld-linux-x86-64.so.2")).unwrap();
    inject(&init);
    init.wait_for_line("gpu: exited with code 0");
    let copy = inside(&init, "/run/nix2gpu/bin/nvidia-smi");
    let headers = Command::new("readelf").arg("-lW").arg(&copy).output().unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout);
    assert!(
        headers.contains("[Requesting program interpreter: /run/glibc/lib/ld-linux-x86-64.so.2]"),
        "{headers}"
    );
    let dynamic = Command::new("readelf").arg("-dW").arg(&copy).output().unwrap();
    assert!(String::from_utf8_lossy(&dynamic.stdout).contains("[/usr/local/nvidia/lib64]"));
    let gpu = &init.status()["gpu"];
    assert_eq!(gpu["nvidia_smi"]["rewritten"], true, "{gpu}");
    assert_eq!(gpu["nvidia_smi"]["exit_code"], 9, "{gpu}");
    // Services find the copy first on PATH.
    init.wait_for_service_line("which", "nvidia-smi is /run/nix2gpu/bin/nvidia-smi");
}

#[test]
fn nothing_injected_gives_a_verdict_at_the_deadline_and_skips_dependents() {
    let config = WITH_DEPENDENT.replace("wait_seconds: 20", "wait_seconds: 1");
    let (mut init, _config) = gpu_init(&config, "all");
    let started = Instant::now();
    let verdict = init.wait_for_service_line("gpu", "was not injected within 1s");
    let waited = started.elapsed();
    assert!(verdict.contains("--gpus"), "says what to check: {verdict}");
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(4), "{waited:?}");
    init.wait_for_line("gpu: exited with code 1");
    init.wait_for_line("after: skipped");
    assert_eq!(init.status()["gpu"]["verdict"], "not_injected");
}

#[test]
fn a_gpu_not_requested_is_skipped_at_once() {
    let (mut init, _config) = gpu_init(WITH_DEPENDENT, "void");
    let started = Instant::now();
    init.wait_for_service_line("after", "the gpu node is done");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(init.status()["gpu"]["verdict"], "not_requested");
}

/// Builds, in `dir`, a fake libnvidia-ml.so.1 (fixtures/fake-nvml.c: its nvmlInit_v2 crashes)
/// that needs `libn2g-dep.so.1`, and that library in `dep_dir`.
fn fake_nvml_with_a_dependency(dir: &Path, dep_dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::create_dir_all(dep_dir).unwrap();
    let source = dep_dir.join("dep.c");
    fs::write(&source, "int n2g_dep(void) { return 1; }\n").unwrap();
    let gcc = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("gcc").args(["-shared", "-fPIC"]).args(args).status().unwrap();
        assert!(status.success(), "gcc {args:?}");
    };
    let dep = dep_dir.join("libn2g-dep.so.1");
    gcc(&["-Wl,-soname,libn2g-dep.so.1".as_ref(), "-o".as_ref(), dep.as_os_str(), source.as_os_str()]);
    fs::remove_file(&source).unwrap();
    let nvml = dir.join("libnvidia-ml.so.1");
    let fixture = init_tests::fixture("fake-nvml.c");
    gcc(&["-o".as_ref(), nvml.as_os_str(), fixture.as_ref(), "-Wl,--no-as-needed".as_ref(), dep.as_os_str()]);
}

#[test]
fn nvml_whose_dependencies_only_the_new_cache_finds_is_probed_after_it() {
    let (mut init, _config) = gpu_init(WITH_DEPENDENT, "all");
    init.wait_for_line("waiting up to 20s for the NVIDIA driver");
    // libnvidia-ml's dependency lies in a directory only the loader configuration names, so
    // the probe's child can load NVML only once the node's cache lists it.
    let scratch = std::env::temp_dir().join(format!("nix2gpu-gpu-node-dep-{}", std::process::id()));
    fake_nvml_with_a_dependency(&scratch, &inside(&init, "/usr/local/n2g-dep"));
    fs::write(inside(&init, "/etc/ld.so.conf.d/n2g-dep.conf"), "/usr/local/n2g-dep\n").unwrap();
    let libs = inside(&init, "/usr/local/nvidia/lib64");
    fs::copy(scratch.join("libnvidia-ml.so.1"), libs.join("libcuda.so.1")).unwrap();
    fs::copy(scratch.join("libnvidia-ml.so.1"), libs.join("libnvidia-ml.so.1")).unwrap();
    fs::remove_dir_all(&scratch).unwrap();
    fs::write(inside(&init, "/dev/nvidiactl"), "").unwrap();
    init.wait_for_line("gpu: exited with code 0");
    let gpu = &init.status()["gpu"];
    // Loaded (its nvmlInit_v2 crashed), not "cannot load the library".
    assert_eq!(gpu["probe"]["nvml_error"]["kind"], "crashed", "{gpu}");
    assert_eq!(gpu["verdict"], "driver_not_answering", "{gpu}");
}

//! NVIDIA's driver injected into the image the way the container toolkit does it for an image
//! that is not Debian's: the versioned driver libraries bind-mounted read-only into /usr/lib64,
//! nvidia-smi into /usr/bin, the control device given with `--device`, and
//! `NVIDIA_VISIBLE_DEVICES=all`. The files are Debian's real NVIDIA user space (fetched into
//! target/nvidia by `cargo xtask fetch-nvidia`); there is no GPU and no kernel driver, so
//! everything that works ends at NVML's "driver not loaded" (9), and nvidia-smi exits 9.
//!
//! The `gpu` node must make the libraries visible (soname links beside the mounted files, an
//! /etc/ld.so.cache that covers /usr/lib64), and run nvidia-smi with the image's loader: the
//! config names a loader at another path than nvidia-smi's interpreter (as a Nix image's is), so
//! the node has to write a rewritten copy.

use std::fs;
use std::path::{Path, PathBuf};

use init_tests::docker::{Container, Scratch, json, read_only_mount, text, unique_name};
use init_tests::nvidia_root;

/// The loader the config names. The test bind-mounts this machine's loader there: the image's
/// glibc was copied from this machine by `cargo xtask image`, so they match.
const LOADER: &str = "/opt/glibc/lib/ld-linux-x86-64.so.2";

/// A service that waits for the node, as users do, and runs nvidia-smi from its PATH.
const CONFIG: &str = r#"
processes:
  cuda-app:
    command: "echo \"nvidia-smi is $$(command -v nvidia-smi)\"; nvidia-smi -L; echo \"nvidia-smi exited $$?\"; exec sleep 1000"
    depends_on: {gpu: {condition: process_completed_successfully}}
nix2gpu:
  gpu: {wait_seconds: 5, loader: /opt/glibc/lib/ld-linux-x86-64.so.2}
"#;

/// The versioned file of a driver library (`libnvidia-ml.so.535.309.01`): what the toolkit
/// mounts; the soname links are the node's job.
fn versioned(dir: &Path, prefix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.strip_prefix(prefix).is_some_and(|version| version.matches('.').count() >= 2)
                && !path.is_symlink()
        })
        .unwrap_or_else(|| panic!("no {prefix}<version> in {}", dir.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn injected_libraries_and_nvidia_smi_are_made_to_work_in_a_non_debian_image() {
    let nvidia = nvidia_root();
    let libraries = nvidia.join("usr/lib/x86_64-linux-gnu/nvidia/current");
    let nvml = versioned(&libraries, "libnvidia-ml.so.");
    let cuda = versioned(&libraries, "libcuda.so.");
    let version = file_name(&nvml).trim_start_matches("libnvidia-ml.so.").to_string();
    let smi = nvidia.join("usr/lib/nvidia/current/nvidia-smi");
    let loader = fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();

    // The control device, as the toolkit gives it: a node with the driver's numbers (made in a
    // scratch directory, never in the machine's /dev), passed with `--device` so that Docker also allows it in the container's device cgroup. Opening
    // it fails with ENXIO (no driver has major 195 here): NVML's "driver not loaded" (9),
    // every time. Without it the node would wait out `wait_seconds` for the device, and NVML,
    // run as root, would then create /dev/nvidiactl itself, whose open the device cgroup
    // refuses: NVML_ERROR_UNKNOWN (999), not the verdict this test is about.
    let scratch = Scratch::new(&unique_name());
    let device = scratch.path("nvidiactl");
    let made = std::process::Command::new("mknod").arg(&device).args(["c", "195", "255"]).status().unwrap();
    assert!(made.success(), "mknod {} failed (the tests run as root)", device.display());
    let device_option = format!("{}:/dev/nvidiactl", device.display());

    let mounts = [
        read_only_mount(&nvml, &format!("/usr/lib64/{}", file_name(&nvml))),
        read_only_mount(&cuda, &format!("/usr/lib64/{}", file_name(&cuda))),
        read_only_mount(&smi, "/usr/bin/nvidia-smi"),
        read_only_mount(&loader, LOADER),
    ];
    let mut options = vec!["-e", "NVIDIA_VISIBLE_DEVICES=all", "--device", device_option.as_str()];
    for mount in &mounts {
        options.extend(["-v", mount.as_str()]);
    }
    let container = Container::start(CONFIG, &options);
    // Healthy: the node completed successfully and its dependent runs.
    container.wait_for_event("health_status: healthy");

    let status = json(&container.exec(&["nix2gpu-init", "status", "--json"]));
    let gpu_node = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "gpu").unwrap();
    assert_eq!(gpu_node["state"], "completed", "{status}");
    assert_eq!(gpu_node["exit_code"], 0, "{status}");
    let gpu = &status["gpu"];
    assert_eq!(gpu["verdict"], "driver_not_answering", "{gpu}");
    assert_eq!(gpu["driver_dir"], "/usr/lib64", "{gpu}");
    assert_eq!(gpu["driver_version"], version.as_str(), "{gpu}");
    let links: Vec<&str> = gpu["links"].as_array().unwrap().iter().filter_map(|l| l.as_str()).collect();
    for link in [
        "/usr/lib64/libnvidia-ml.so.1",
        "/usr/lib64/libcuda.so.1",
        "/run/opengl-driver/lib/libnvidia-ml.so.1",
        "/run/opengl-driver/lib/libcuda.so.1",
    ] {
        assert!(links.contains(&link), "no {link} in {gpu}");
    }
    let smi_report = &gpu["nvidia_smi"];
    assert_eq!(smi_report["path"], "/run/nix2gpu/bin/nvidia-smi", "{gpu}");
    assert_eq!(smi_report["rewritten"], true, "{gpu}");
    assert_eq!(smi_report["exit_code"], 9, "{gpu}");
    let nvml_error = &gpu["probe"]["nvml_error"];
    assert_eq!(nvml_error["kind"], "nvml", "{gpu}");
    assert_eq!(nvml_error["code"], 9, "{gpu}");
    assert_eq!(nvml_error["name"], "NVML_ERROR_DRIVER_NOT_LOADED", "{gpu}");
    let logs = container.logs();
    assert!(!logs.contains("waiting up to"), "everything was there at the start: no wait\n{logs}");

    // The soname links sit beside the read-only files, in the image's own /usr/lib64.
    let link = container.exec(&["readlink", "/usr/lib64/libnvidia-ml.so.1"]);
    assert_eq!(text(&link), file_name(&nvml), "{link:?}");

    // The copy has the configured loader; the injected file (read-only) keeps its own.
    let interpreter = |path: &str| text(&container.exec(&["nix2gpu-init", "print-interpreter", path]));
    assert_eq!(interpreter("/run/nix2gpu/bin/nvidia-smi"), LOADER);
    assert_eq!(interpreter("/usr/bin/nvidia-smi"), "/lib64/ld-linux-x86-64.so.2");

    // A service finds the copy first on its PATH, and it runs: exit 9, no driver.
    assert!(logs.contains("cuda-app | nvidia-smi is /run/nix2gpu/bin/nvidia-smi"), "{logs}");
    assert!(logs.contains("cuda-app | nvidia-smi exited 9"), "{logs}");
    // `docker exec` has the image's PATH, not the services': the copy by its path.
    let copy = container.exec(&["/run/nix2gpu/bin/nvidia-smi", "-L"]);
    assert_eq!(copy.status.code(), Some(9), "{copy:?}");

    // The injected nvidia-smi, a foreign program with the image's loader and no RUNPATH, finds
    // NVML through the /etc/ld.so.cache the node wrote (the loader's own search path has no
    // /usr/lib64).
    let injected = container.exec(&["env", "LD_DEBUG=libs", "/usr/bin/nvidia-smi", "-L"]);
    assert_eq!(injected.status.code(), Some(9), "{injected:?}");
    let debug = String::from_utf8_lossy(&injected.stderr);
    let search: Vec<&str> = debug
        .lines()
        .map(|line| line.split_once(':').map_or(line, |(_, rest)| rest).trim())
        .skip_while(|line| !line.starts_with("find library=libnvidia-ml.so.1"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(
        search,
        ["search cache=/etc/ld.so.cache", "trying file=/usr/lib64/libnvidia-ml.so.1"],
        "{debug}"
    );
}

//! Platform detection: which cloud or container engine the init runs under, and what that
//! platform tells about the container (public address, SSH port, GPU count, volume).
//!
//! [`detect`] is pure: it reads an environment map and asks a file-existence lookup, so tests
//! hand it fixtures. Only documented markers are used; each rule's doc comment names its source
//! (the research behind them: DESIGN.md's `reference/gpu-elf-ldcache.md` §2).
//!
//! Order matters: vast.ai and RunPod run their containers on Docker, so the platform variables
//! are looked at before `/.dockerenv` and `/run/.containerenv`, which only name the engine.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The variable through which services learn the platform (`vast`, `runpod`, ...).
pub const PLATFORM_ENV: &str = "NIX2GPU_PLATFORM";

/// The platforms told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    /// vast.ai.
    Vast,
    /// RunPod.
    Runpod,
    /// Modal.
    Modal,
    /// A Kubernetes pod (any engine underneath).
    Kubernetes,
    /// A podman container.
    Podman,
    /// A Docker container not recognised as one of the platforms above.
    Docker,
    /// No marker at all: a plain machine, or an engine that leaves none.
    Bare,
}

impl PlatformKind {
    /// The name used in JSON, logs and `NIX2GPU_PLATFORM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vast => "vast",
            Self::Runpod => "runpod",
            Self::Modal => "modal",
            Self::Kubernetes => "kubernetes",
            Self::Podman => "podman",
            Self::Docker => "docker",
            Self::Bare => "bare",
        }
    }
}

/// The verdict, with what it rests on and what the platform says about the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub kind: PlatformKind,
    /// The variable or file that decided (`VAST_CONTAINERLABEL`, `/.dockerenv`, ...).
    pub evidence: String,
    /// The container's public IP address, where the platform says.
    pub public_ip: Option<String>,
    /// The public port that reaches the container's port 22.
    pub ssh_port: Option<u16>,
    /// GPUs given to the container: the platform's own count, else the length of the
    /// `NVIDIA_VISIBLE_DEVICES` list (unknown for `all` or when unset).
    pub gpu_count: Option<u32>,
    /// The directory meant for data that outlives the container.
    pub volume_dir: Option<String>,
}

/// Files that mark an engine, in the order they are checked.
pub mod markers {
    /// Docker's init layer creates it in every container (moby daemon/initlayer/setup_unix.go);
    /// containerd and CRI-O do not.
    pub const DOCKERENV: &str = "/.dockerenv";
    /// podman creates it in every container (podman-run(1), "/run/.containerenv").
    pub const CONTAINERENV: &str = "/run/.containerenv";
    /// Mounted into pods unless `automountServiceAccountToken: false` (kubernetes.io,
    /// "Configure Service Accounts for Pods").
    pub const KUBERNETES_SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    /// RunPod mounts the pod's volume here by default (runpod/docs
    /// pods/templates/environment-variables.mdx, pods/storage/types.mdx).
    pub const RUNPOD_VOLUME: &str = "/workspace";
}

/// Modal sets these in every container (modal.com/docs/guide/environment_variables).
const MODAL_VARIABLES: [&str; 4] =
    ["MODAL_TASK_ID", "MODAL_IMAGE_ID", "MODAL_REGION", "MODAL_CLOUD_PROVIDER"];
/// RunPod sets these in every pod (runpod/docs pods/templates/environment-variables.mdx,
/// "Runpod-provided variables").
const RUNPOD_VARIABLES: [&str; 3] = ["RUNPOD_POD_ID", "RUNPOD_POD_HOSTNAME", "RUNPOD_DC_ID"];
/// vast.ai sets `VAST_CONTAINERLABEL` in every instance, and `VAST_TCP_PORT_<N>` for each
/// mapped port (vast-ai/docs guides/instances/docker-environment.mdx, "Predefined Variables",
/// "Port Variables"). `CONTAINER_ID` is predefined too, but too generic a name to decide on.
const VAST_VARIABLES: [&str; 2] = ["VAST_CONTAINERLABEL", "VAST_TCP_PORT_22"];
/// The kubelet injects these for the `kubernetes` service even with `enableServiceLinks:
/// false` (kubernetes pkg/kubelet/kubelet_pods.go `getServiceEnvVarMap`).
const KUBERNETES_VARIABLES: [&str; 1] = ["KUBERNETES_SERVICE_HOST"];

/// Decides the platform from the environment and the files that `exists` reports.
pub fn detect(env: &BTreeMap<OsString, OsString>, exists: impl Fn(&Path) -> bool) -> Platform {
    let lookup = Lookup(env);
    if let Some(evidence) = lookup.first_set(&MODAL_VARIABLES) {
        return Platform::bare_facts(PlatformKind::Modal, evidence, &lookup);
    }
    if let Some(evidence) = lookup.first_set(&RUNPOD_VARIABLES) {
        return Platform {
            public_ip: lookup.text("RUNPOD_PUBLIC_IP"),
            ssh_port: lookup.number("RUNPOD_TCP_PORT_22"),
            gpu_count: lookup.number("RUNPOD_GPU_COUNT").or_else(|| lookup.visible_devices()),
            volume_dir: exists(Path::new(markers::RUNPOD_VOLUME)).then(|| markers::RUNPOD_VOLUME.to_string()),
            ..Platform::bare_facts(PlatformKind::Runpod, evidence, &lookup)
        };
    }
    if let Some(evidence) = lookup.first_set(&VAST_VARIABLES) {
        return Platform {
            // Set at start and not updated when the address changes (the same page).
            public_ip: lookup.text("PUBLIC_IPADDR"),
            ssh_port: lookup.number("VAST_TCP_PORT_22"),
            gpu_count: lookup.number("GPU_COUNT").or_else(|| lookup.visible_devices()),
            // "Default location for data copy operations"; vast.ai's images set /workspace.
            volume_dir: lookup.text("DATA_DIRECTORY"),
            ..Platform::bare_facts(PlatformKind::Vast, evidence, &lookup)
        };
    }
    if let Some(evidence) = lookup.first_set(&KUBERNETES_VARIABLES) {
        return Platform::bare_facts(PlatformKind::Kubernetes, evidence, &lookup);
    }
    let engines = [
        (markers::KUBERNETES_SERVICE_ACCOUNT, PlatformKind::Kubernetes),
        (markers::CONTAINERENV, PlatformKind::Podman),
        (markers::DOCKERENV, PlatformKind::Docker),
    ];
    for (file, kind) in engines {
        if exists(Path::new(file)) {
            return Platform::bare_facts(kind, file.to_string(), &lookup);
        }
    }
    let evidence = format!(
        "no platform variable, no {}, {} or {}",
        markers::KUBERNETES_SERVICE_ACCOUNT,
        markers::CONTAINERENV,
        markers::DOCKERENV
    );
    Platform::bare_facts(PlatformKind::Bare, evidence, &lookup)
}

impl Platform {
    /// A verdict with only what any platform offers: the GPU count from the NVIDIA runtime's
    /// variable.
    fn bare_facts(kind: PlatformKind, evidence: String, lookup: &Lookup) -> Self {
        Self {
            kind,
            evidence,
            public_ip: None,
            ssh_port: None,
            gpu_count: lookup.visible_devices(),
            volume_dir: None,
        }
    }
}

/// One line: `vast (evidence: VAST_CONTAINERLABEL; public ip 1.2.3.4, ssh port 40022, 2 GPU(s),
/// volume /workspace)`, with only the facts that are known.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (evidence: {}", self.kind.as_str(), self.evidence)?;
        let facts: Vec<String> = [
            self.public_ip.as_ref().map(|ip| format!("public ip {ip}")),
            self.ssh_port.map(|port| format!("ssh port {port}")),
            self.gpu_count.map(|count| format!("{count} GPU(s)")),
            self.volume_dir.as_ref().map(|dir| format!("volume {dir}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !facts.is_empty() {
            write!(f, "; {}", facts.join(", "))?;
        }
        f.write_str(")")
    }
}

/// Reads variables; an empty value counts as unset (`-e VAR=` is how people clear one).
struct Lookup<'a>(&'a BTreeMap<OsString, OsString>);

impl Lookup<'_> {
    fn raw(&self, name: &str) -> Option<&OsStr> {
        self.0.get(OsStr::new(name)).map(OsString::as_os_str).filter(|value| !value.is_empty())
    }

    /// The first of `names` that is set, as evidence.
    fn first_set(&self, names: &[&str]) -> Option<String> {
        names.iter().find(|name| self.raw(name).is_some()).map(|name| name.to_string())
    }

    /// A value as text; one that is not UTF-8 is of no use to report.
    fn text(&self, name: &str) -> Option<String> {
        self.raw(name).and_then(OsStr::to_str).map(|value| value.trim().to_string())
    }

    /// A numeric value; a malformed one is treated as unknown, not as a reason to doubt the
    /// platform.
    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text(name).and_then(|value| value.parse().ok())
    }

    /// The number of GPUs `NVIDIA_VISIBLE_DEVICES` names: a list of indices or UUIDs counts its
    /// entries, `none` and `void` are 0, `all` (or unset) is unknown. Meanings from NVIDIA's
    /// container toolkit docs ("Specialized Configurations with Docker", GPU Enumeration).
    fn visible_devices(&self) -> Option<u32> {
        let value = self.text("NVIDIA_VISIBLE_DEVICES")?;
        match value.as_str() {
            "all" => None,
            "none" | "void" => Some(0),
            list => u32::try_from(list.split(',').filter(|entry| !entry.trim().is_empty()).count()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    /// Detection with `files` as the only files that exist.
    fn detect_with(pairs: &[(&str, &str)], files: &[&str]) -> Platform {
        let files: BTreeSet<&Path> = files.iter().map(Path::new).collect();
        detect(&env(pairs), |path| files.contains(path))
    }

    #[test]
    fn vast_from_its_predefined_variables() {
        let platform = detect_with(
            &[
                ("VAST_CONTAINERLABEL", "C.1234567"),
                ("CONTAINER_ID", "1234567"),
                ("PUBLIC_IPADDR", "203.0.113.7"),
                ("VAST_TCP_PORT_22", "40022"),
                ("GPU_COUNT", "2"),
                ("DATA_DIRECTORY", "/workspace/"),
            ],
            &[markers::DOCKERENV],
        );
        assert_eq!(
            platform,
            Platform {
                kind: PlatformKind::Vast,
                evidence: "VAST_CONTAINERLABEL".into(),
                public_ip: Some("203.0.113.7".into()),
                ssh_port: Some(40022),
                gpu_count: Some(2),
                volume_dir: Some("/workspace/".into()),
            }
        );
        assert_eq!(
            platform.to_string(),
            "vast (evidence: VAST_CONTAINERLABEL; public ip 203.0.113.7, ssh port 40022, 2 GPU(s), volume /workspace/)"
        );
    }

    #[test]
    fn vast_from_its_ssh_port_alone() {
        let platform = detect_with(&[("VAST_TCP_PORT_22", "41000")], &[]);
        assert_eq!((platform.kind, platform.evidence.as_str()), (PlatformKind::Vast, "VAST_TCP_PORT_22"));
        assert_eq!(platform.ssh_port, Some(41000));
    }

    #[test]
    fn runpod_with_its_volume_only_when_it_is_mounted() {
        let vars = [
            ("RUNPOD_POD_ID", "abc123"),
            ("RUNPOD_PUBLIC_IP", "198.51.100.4"),
            ("RUNPOD_TCP_PORT_22", "10022"),
            ("RUNPOD_GPU_COUNT", "8"),
            ("NVIDIA_VISIBLE_DEVICES", "0,1"),
        ];
        let platform = detect_with(&vars, &[markers::RUNPOD_VOLUME, markers::DOCKERENV]);
        assert_eq!(
            platform,
            Platform {
                kind: PlatformKind::Runpod,
                evidence: "RUNPOD_POD_ID".into(),
                public_ip: Some("198.51.100.4".into()),
                ssh_port: Some(10022),
                gpu_count: Some(8),
                volume_dir: Some("/workspace".into()),
            }
        );
        assert_eq!(detect_with(&vars, &[]).volume_dir, None);
    }

    #[test]
    fn runpod_gpu_count_falls_back_to_the_visible_devices() {
        let platform =
            detect_with(&[("RUNPOD_POD_HOSTNAME", "x"), ("NVIDIA_VISIBLE_DEVICES", "GPU-a,GPU-b")], &[]);
        assert_eq!((platform.kind, platform.gpu_count), (PlatformKind::Runpod, Some(2)));
    }

    #[test]
    fn modal_kubernetes_podman_docker_and_bare() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], PlatformKind, &'a str);
        let cases: [Case; 7] = [
            (&[("MODAL_TASK_ID", "ta-1")], &[markers::DOCKERENV], PlatformKind::Modal, "MODAL_TASK_ID"),
            (&[("MODAL_REGION", "us-east")], &[], PlatformKind::Modal, "MODAL_REGION"),
            (
                &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
                &[markers::DOCKERENV],
                PlatformKind::Kubernetes,
                "KUBERNETES_SERVICE_HOST",
            ),
            (
                &[],
                &[markers::KUBERNETES_SERVICE_ACCOUNT],
                PlatformKind::Kubernetes,
                markers::KUBERNETES_SERVICE_ACCOUNT,
            ),
            (&[], &[markers::CONTAINERENV, markers::DOCKERENV], PlatformKind::Podman, markers::CONTAINERENV),
            (&[], &[markers::DOCKERENV], PlatformKind::Docker, markers::DOCKERENV),
            (&[("KUBERNETES_SERVICE_HOST", "")], &[], PlatformKind::Bare, "no platform variable"),
        ];
        for (vars, files, kind, evidence) in cases {
            let platform = detect_with(vars, files);
            assert_eq!(platform.kind, kind, "{vars:?} {files:?}: {platform}");
            assert!(platform.evidence.starts_with(evidence), "{vars:?} {files:?}: {platform}");
            assert_eq!((platform.public_ip, platform.ssh_port, platform.volume_dir), (None, None, None));
        }
    }

    #[test]
    fn platform_variables_come_before_engine_files() {
        let all_files = [markers::DOCKERENV, markers::CONTAINERENV, markers::KUBERNETES_SERVICE_ACCOUNT];
        assert_eq!(detect_with(&[("VAST_CONTAINERLABEL", "C.1")], &all_files).kind, PlatformKind::Vast);
        assert_eq!(detect_with(&[("RUNPOD_POD_ID", "p")], &all_files).kind, PlatformKind::Runpod);
        assert_eq!(detect_with(&[("MODAL_IMAGE_ID", "im")], &all_files).kind, PlatformKind::Modal);
        // A platform inside another's variables: the more specific one wins.
        let both = [("RUNPOD_POD_ID", "p"), ("VAST_CONTAINERLABEL", "C.1"), ("KUBERNETES_SERVICE_HOST", "h")];
        assert_eq!(detect_with(&both, &[]).kind, PlatformKind::Runpod);
    }

    #[test]
    fn visible_devices_count() {
        let count = |value: &str| detect_with(&[("NVIDIA_VISIBLE_DEVICES", value)], &[]).gpu_count;
        assert_eq!(count("0,1,2"), Some(3));
        assert_eq!(count("GPU-6f4e1e37-1a2b"), Some(1));
        assert_eq!(count("all"), None);
        assert_eq!(count("none"), Some(0));
        assert_eq!(count("void"), Some(0));
        assert_eq!(count(""), None);
        assert_eq!(detect_with(&[], &[]).gpu_count, None);
    }

    #[test]
    fn malformed_numbers_are_unknown_not_fatal() {
        let platform = detect_with(
            &[("VAST_CONTAINERLABEL", "C.1"), ("VAST_TCP_PORT_22", "x"), ("GPU_COUNT", "-1")],
            &[],
        );
        assert_eq!((platform.kind, platform.ssh_port, platform.gpu_count), (PlatformKind::Vast, None, None));
    }

    #[test]
    fn json_shape() {
        let platform = detect_with(&[("VAST_CONTAINERLABEL", "C.1"), ("VAST_TCP_PORT_22", "40022")], &[]);
        let json = serde_json::to_value(&platform).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "vast", "evidence": "VAST_CONTAINERLABEL", "public_ip": null,
                "ssh_port": 40022, "gpu_count": null, "volume_dir": null
            })
        );
        assert_eq!(serde_json::from_value::<Platform>(json).unwrap(), platform);
    }
}

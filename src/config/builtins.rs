//! The built-in nodes (`gpu`, `sshd`, `tailscale`) as services of the plan.
//!
//! Each runs this same binary as a child, `nix2gpu-init builtin NAME SETTINGS`: work that
//! touches the driver, OpenSSH or tailscaled never happens inside PID 1 (a crash or hang there
//! costs one node, not the container), and a built-in gets the states, logs, restarts, status
//! and shutdown order of any service. Its settings, resolved here with their defaults, travel
//! as JSON on its command line, so nothing secret may be in them: secrets given in the
//! environment are moved into root-only files by the init ([`StashedSecret`]) and removed from
//! the environment every process gets.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::locate::KeyPath;
use super::plan::{DEFAULT_STOP_SIGNAL, Service, check};
use super::provenance::Issue;
use super::validate;
use super::{Config, Enable, NotifyAccess, Port, RestartPolicy};
use crate::gpu::probe;
use crate::graph::NodeSpec;

pub const GPU: &str = "gpu";
pub const SSHD: &str = "sshd";
pub const TAILSCALE: &str = "tailscale";

/// Where the init keeps its runtime files (the control socket's directory too).
const RUN_DIR: &str = "/run/nix2gpu";
/// Secrets moved out of the environment, one root-only file each.
pub const SECRETS_DIR: &str = "/run/nix2gpu/secrets";
/// The `gpu` node's report (verdict, driver, GPUs), read by `status`.
pub const GPU_REPORT: &str = "/run/nix2gpu/gpu.json";
/// The `tailscale` node's report (tailnet, IPs), read by `status`.
pub const TAILSCALE_REPORT: &str = "/run/nix2gpu/tailscale.json";
/// The line the `tailscale` node prints when the backend reaches Running: its readiness.
pub const TAILSCALE_READY_LINE: &str = "tailscale backend is Running";

/// The `gpu` node's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuNode {
    /// How long to wait for the driver libraries and /dev/nvidiactl.
    pub wait: Duration,
    pub patch_nvidia_smi: bool,
    /// The loader for the rewritten nvidia-smi; `None`: discovered.
    pub loader: Option<PathBuf>,
    /// Soname links to the driver libraries, for Nix-built programs (`/run/opengl-driver/lib`).
    pub driver_link_dir: PathBuf,
    /// Where to look for the driver libraries: the configured ones, then the probe's
    /// ([`probe::library_dirs`]) but the node's own link directory.
    pub library_dirs: Vec<PathBuf>,
    /// Where the rewritten nvidia-smi goes; first on every service's PATH.
    pub bin_dir: PathBuf,
    /// Where the verdict and the probe's report are written for `status`.
    pub report_file: PathBuf,
    /// A failure stops the container (`restart: exit_on_failure`).
    pub required: bool,
}

/// The `sshd` node's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshNode {
    pub port: u16,
    /// Variables holding public keys.
    pub authorized_keys_env: Vec<String>,
    pub authorized_keys_file: Option<PathBuf>,
    /// Root's password, when one was given (a file, or the stash of `$ROOT_PASSWORD`).
    pub root_password_file: Option<PathBuf>,
    pub password_auth: bool,
    pub allow_empty_password: bool,
    pub host_key_dir: PathBuf,
    /// The sshd program.
    pub sshd: String,
    /// The generated sshd_config.
    pub config_file: PathBuf,
}

/// The `tailscale` node's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailscaleNode {
    /// The auth key (a file, or the stash of `$TAILSCALE_AUTHKEY`).
    pub auth_key_file: Option<PathBuf>,
    pub hostname: Option<String>,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub userspace_networking: bool,
    pub ssh: bool,
    pub tags: Vec<String>,
    pub accept_routes: bool,
    /// The tailscaled program.
    pub tailscaled: String,
    /// Where the tailnet name and IPs are written for `status`.
    pub report_file: PathBuf,
}

/// One built-in node and its settings: what `nix2gpu-init builtin NAME SETTINGS` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    Gpu(GpuNode),
    Sshd(SshNode),
    Tailscale(TailscaleNode),
}

impl Builtin {
    /// The node's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gpu(_) => GPU,
            Self::Sshd(_) => SSHD,
            Self::Tailscale(_) => TAILSCALE,
        }
    }

    /// The settings as `nix2gpu-init builtin NAME SETTINGS` takes them.
    fn settings_json(&self) -> String {
        let json = match self {
            Self::Gpu(node) => serde_json::to_string(node),
            Self::Sshd(node) => serde_json::to_string(node),
            Self::Tailscale(node) => serde_json::to_string(node),
        };
        // Invariant: these structs hold only strings, numbers, booleans and paths built from
        // UTF-8 config text, which serde_json always serializes.
        json.expect("built-in settings serialize to JSON")
    }

    /// Reads `nix2gpu-init builtin NAME SETTINGS`'s arguments.
    pub fn from_args(name: &str, settings: &str) -> Result<Self, String> {
        let parsed = match name {
            GPU => serde_json::from_str(settings).map(Self::Gpu),
            SSHD => serde_json::from_str(settings).map(Self::Sshd),
            TAILSCALE => serde_json::from_str(settings).map(Self::Tailscale),
            _ => return Err(format!("there is no built-in node `{name}` (gpu, sshd, tailscale)")),
        };
        parsed.map_err(|e| format!("the settings of built-in `{name}` are not valid: {e}"))
    }
}

/// A secret given in the environment: the init writes it to `file` (mode 0600) before any node
/// starts and removes `var` from the environment of everything it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StashedSecret {
    pub var: String,
    pub file: PathBuf,
}

/// What the built-ins add to the plan.
#[derive(Debug, Default)]
pub(super) struct Builtins {
    /// The enabled built-ins, in node order after the config's processes.
    pub nodes: Vec<Builtin>,
    /// Variables every process loses (secrets, whether stashed or not).
    pub scrub: Vec<String>,
    /// Secrets to write to files at boot.
    pub secrets: Vec<StashedSecret>,
    /// Variables every process gets (the driver on PATH and LD_LIBRARY_PATH).
    pub env: Vec<(String, String)>,
}

/// What the dependency checks need to know about an enabled built-in.
pub(super) struct BuiltinTraits {
    pub name: &'static str,
    /// It becomes ready (by a probe or its ready line), so `process_healthy` can wait for it.
    pub can_be_healthy: bool,
    pub has_ready_log_line: bool,
}

impl Builtins {
    /// The built-ins `config` enables, given the environment the init got (`vars`).
    pub fn resolve(config: &Config, vars: &BTreeMap<String, String>, issues: &mut Vec<Issue>) -> Self {
        let mut builtins = Self::default();
        if let Some(gpu) = gpu(config, vars) {
            builtins.env = gpu_env(&gpu, vars);
            builtins.nodes.push(Builtin::Gpu(gpu));
        }
        let password = Secret::new(
            config.nix2gpu.ssh.root_password_file.as_deref(),
            "ROOT_PASSWORD_FILE",
            "ROOT_PASSWORD",
            vars,
        );
        if let Some(ssh) = ssh(config, vars, &password, issues) {
            builtins.nodes.push(Builtin::Sshd(ssh));
        }
        let auth_key_env = config.nix2gpu.tailscale.auth_key_env.as_deref().unwrap_or("TAILSCALE_AUTHKEY");
        let auth_key = Secret::new(
            config.nix2gpu.tailscale.auth_key_file.as_deref(),
            "TAILSCALE_AUTHKEY_FILE",
            auth_key_env,
            vars,
        );
        if let Some(tailscale) = tailscale(config, &auth_key) {
            builtins.nodes.push(Builtin::Tailscale(tailscale));
        }
        for secret in [password, auth_key] {
            builtins.scrub.push(secret.var.clone());
            builtins.secrets.extend(secret.stash);
        }
        builtins
    }

    /// What dependency checks need of each enabled built-in.
    pub fn traits(&self) -> Vec<BuiltinTraits> {
        self.nodes
            .iter()
            .map(|node| BuiltinTraits {
                name: node.name(),
                can_be_healthy: matches!(node, Builtin::Sshd(_) | Builtin::Tailscale(_)),
                has_ready_log_line: matches!(node, Builtin::Sshd(_) | Builtin::Tailscale(_)),
            })
            .collect()
    }

    /// The services that run the built-ins, each this binary with a subcommand. The binary's
    /// path is looked up only when there are built-ins: a boot without them (this runs at every
    /// boot) reads no /proc/self/exe.
    pub fn services(&self) -> Vec<Service> {
        if self.nodes.is_empty() {
            return Vec::new();
        }
        let exe = this_binary();
        self.nodes.iter().map(|node| service(node, &exe)).collect()
    }
}

/// This binary, which the built-in nodes run. `/proc/self/exe` works as well when the path
/// cannot be read (after exec it names the program that execs it, this same binary).
fn this_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// Whether `name` is one of the built-in nodes, enabled or not.
pub(super) fn is_builtin(name: &str) -> bool {
    [GPU, SSHD, TAILSCALE].contains(&name)
}

/// The config key that turns a built-in off, for messages.
pub(super) fn enable_key(name: &str) -> &'static str {
    match name {
        GPU => "nix2gpu.gpu.enable",
        SSHD => "nix2gpu.ssh.enable",
        _ => "nix2gpu.tailscale.enable",
    }
}

/// A secret's sources: a file (config, then `file_var`), else the variable `var`, which is then
/// stashed.
struct Secret {
    var: String,
    file: Option<PathBuf>,
    stash: Option<StashedSecret>,
}

impl Secret {
    fn new(configured: Option<&str>, file_var: &str, var: &str, vars: &BTreeMap<String, String>) -> Self {
        let file = configured.or(non_empty(vars, file_var)).map(PathBuf::from);
        let stash = (file.is_none() && non_empty(vars, var).is_some()).then(|| StashedSecret {
            var: var.to_string(),
            file: Path::new(SECRETS_DIR).join(var.to_ascii_lowercase()),
        });
        let file = file.or_else(|| stash.as_ref().map(|s| s.file.clone()));
        Self { var: var.to_string(), file, stash }
    }
}

fn non_empty<'a>(vars: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name).map(String::as_str).filter(|value| !value.trim().is_empty())
}

/// The `gpu` node, unless turned off, or `auto` finds no GPU requested and no driver files.
fn gpu(config: &Config, vars: &BTreeMap<String, String>) -> Option<GpuNode> {
    let settings = &config.nix2gpu.gpu;
    let driver_link_dir =
        PathBuf::from(settings.driver_link_dir.as_deref().unwrap_or("/run/opengl-driver/lib"));
    let mut library_dirs: Vec<PathBuf> = settings.library_dirs.iter().flatten().map(PathBuf::from).collect();
    // The node's own links are its output, not where the driver was injected.
    let toolkit = probe::library_dirs(non_empty(vars, probe::LIBCUDA_DIR_ENV).map(OsStr::new));
    library_dirs.extend(toolkit.into_iter().filter(|dir| *dir != driver_link_dir));
    let wanted = match settings.enable.unwrap_or_default() {
        Enable::Off => false,
        Enable::On => true,
        Enable::Auto => gpu_requested(vars) || (!gpu_refused(vars) && driver_present(&library_dirs)),
    };
    wanted.then(|| GpuNode {
        wait: settings.wait_seconds.map_or(Duration::from_secs(30), |s| s.0),
        patch_nvidia_smi: settings.patch_nvidia_smi.unwrap_or(true),
        loader: settings.loader.as_ref().map(PathBuf::from),
        driver_link_dir,
        library_dirs,
        bin_dir: Path::new(RUN_DIR).join("bin"),
        report_file: PathBuf::from(GPU_REPORT),
        required: settings.required.unwrap_or(false),
    })
}

/// Whether the container was given GPUs: `NVIDIA_VISIBLE_DEVICES` set to something other than
/// `void` or `none` (the toolkit's words for "no GPU").
pub fn gpu_requested(vars: &BTreeMap<String, String>) -> bool {
    non_empty(vars, "NVIDIA_VISIBLE_DEVICES").is_some_and(|v| !matches!(v.trim(), "void" | "none"))
}

/// Whether the container was told explicitly that it has no GPU (`NVIDIA_VISIBLE_DEVICES` is
/// `void` or `none`): `auto` then stays off whatever files are around.
fn gpu_refused(vars: &BTreeMap<String, String>) -> bool {
    non_empty(vars, "NVIDIA_VISIBLE_DEVICES").is_some_and(|v| matches!(v.trim(), "void" | "none"))
}

/// Whether driver files are in the container already: NVML in one of `dirs`, or the control
/// device.
fn driver_present(dirs: &[PathBuf]) -> bool {
    Path::new("/dev/nvidiactl").exists() || dirs.iter().any(|dir| dir.join("libnvidia-ml.so.1").exists())
}

/// PATH and LD_LIBRARY_PATH with the `gpu` node's directories first.
fn gpu_env(gpu: &GpuNode, vars: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let prepend = |var: &str, dir: &Path| {
        let dir = dir.display().to_string();
        match non_empty(vars, var) {
            Some(rest) => format!("{dir}:{rest}"),
            None => dir,
        }
    };
    vec![
        ("PATH".into(), prepend("PATH", &gpu.bin_dir)),
        ("LD_LIBRARY_PATH".into(), prepend("LD_LIBRARY_PATH", &gpu.driver_link_dir)),
    ]
}

/// The variables RunPod, vast.ai and nix2gpu put public keys in.
const KEY_VARS: [&str; 3] = ["SSH_PUBLIC_KEYS", "PUBLIC_KEY", "SSH_PUBLIC_KEY"];

/// The `sshd` node, unless turned off, or `auto` finds no key and no password to log in with.
fn ssh(
    config: &Config,
    vars: &BTreeMap<String, String>,
    password: &Secret,
    issues: &mut Vec<Issue>,
) -> Option<SshNode> {
    let settings = &config.nix2gpu.ssh;
    let authorized_keys_env: Vec<String> = match &settings.authorized_keys_env {
        Some(names) => names.clone(),
        None => KEY_VARS.iter().map(|s| s.to_string()).collect(),
    };
    let allow_empty_password = settings.allow_empty_password.unwrap_or(false);
    let wanted = match settings.enable.unwrap_or_default() {
        Enable::Off => false,
        Enable::On => true,
        Enable::Auto => {
            authorized_keys_env.iter().any(|name| non_empty(vars, name).is_some())
                || settings.authorized_keys_file.is_some()
                || password.file.is_some()
                || allow_empty_password
        }
    };
    if !wanted {
        return None;
    }
    let port_path = KeyPath::root().key("nix2gpu").key("ssh").key("port");
    let port = match &settings.port {
        None => 22,
        Some(Port::Number(port)) => check(validate::port_number(u64::from(*port)), &port_path, issues)?,
        Some(Port::Text(text)) => check(validate::port_text(text), &port_path, issues)?,
    };
    Some(SshNode {
        port,
        authorized_keys_env,
        authorized_keys_file: settings.authorized_keys_file.as_ref().map(PathBuf::from),
        root_password_file: password.file.clone(),
        password_auth: settings.password_auth.unwrap_or(password.file.is_some() || allow_empty_password),
        allow_empty_password,
        host_key_dir: PathBuf::from(settings.host_key_dir.as_deref().unwrap_or("/etc/ssh")),
        sshd: settings.sshd.clone().unwrap_or_else(|| "sshd".into()),
        config_file: Path::new(RUN_DIR).join("sshd_config"),
    })
}

/// The `tailscale` node, unless turned off, or `auto` finds no auth key.
fn tailscale(config: &Config, auth_key: &Secret) -> Option<TailscaleNode> {
    let settings = &config.nix2gpu.tailscale;
    let wanted = match settings.enable.unwrap_or_default() {
        Enable::Off => false,
        Enable::On => true,
        Enable::Auto => auth_key.file.is_some(),
    };
    wanted.then(|| TailscaleNode {
        auth_key_file: auth_key.file.clone(),
        hostname: settings.hostname.clone(),
        state_dir: PathBuf::from(settings.state_dir.as_deref().unwrap_or("/var/lib/tailscale")),
        socket: PathBuf::from(settings.socket.as_deref().unwrap_or("/run/tailscale/tailscaled.sock")),
        userspace_networking: settings.userspace_networking.unwrap_or(true),
        ssh: settings.ssh.unwrap_or(false),
        tags: settings.tags.clone().unwrap_or_default(),
        accept_routes: settings.accept_routes.unwrap_or(false),
        tailscaled: settings.tailscaled.clone().unwrap_or_else(|| "tailscaled".into()),
        report_file: PathBuf::from(TAILSCALE_REPORT),
    })
}

/// The service that runs `node`: restarted always unless it is the one-shot `gpu`; `sshd` is
/// ready when OpenSSH says it listens on its port (a TCP probe would make sshd log two lines
/// per probe, forever), `tailscale` when it prints [`TAILSCALE_READY_LINE`].
fn service(node: &Builtin, exe: &Path) -> Service {
    let name = node.name();
    let (restart, ready_log_line) = match node {
        Builtin::Gpu(gpu) if gpu.required => (RestartPolicy::ExitOnFailure, None),
        Builtin::Gpu(_) => (RestartPolicy::No, None),
        Builtin::Sshd(ssh) => {
            let line = regex_lite::Regex::new(&format!(r"^Server listening on .+ port {}\.$", ssh.port));
            // Invariant: a fixed pattern around a number is a valid regex.
            (RestartPolicy::Always, Some(line.expect("sshd's ready line is a valid regex")))
        }
        Builtin::Tailscale(_) => {
            let line = regex_lite::Regex::new(&regex_lite::escape(TAILSCALE_READY_LINE));
            // Invariant: an escaped literal is always a valid pattern.
            (RestartPolicy::Always, Some(line.expect("an escaped literal is a valid regex")))
        }
    };
    let spec = NodeSpec {
        name: name.to_string(),
        depends_on: Vec::new(),
        restart,
        backoff: Duration::from_secs(1),
        max_restarts: None,
        exit_on_end: false,
        success_exit_codes: vec![0],
        readiness: None,
        liveness: None,
        has_ready_log_line: ready_log_line.is_some(),
        notify: false,
        watchdog: None,
        shutdown_timeout: Duration::from_secs(10),
        disabled: false,
        main: false,
    };
    Service {
        spec,
        argv: vec![exe.display().to_string(), "builtin".into(), name.into(), node.settings_json()],
        env: Vec::new(),
        working_dir: None,
        user: None,
        readiness: None,
        liveness: None,
        ready_log_line,
        shutdown_command: None,
        shutdown_signal: DEFAULT_STOP_SIGNAL,
        notify_access: NotifyAccess::Main,
    }
}

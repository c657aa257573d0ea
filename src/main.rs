//! The `nix2gpu-init` binary: parse the command line, then boot and supervise, or answer a
//! subcommand.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::exit;

use nix2gpu_init::accounts::AccountFiles;
use nix2gpu_init::cli::{self, Command, client};
use nix2gpu_init::config::builtins::Builtin;
use nix2gpu_init::config::{self, Config, Plan};
use nix2gpu_init::control::{ControlHandle, http, socket};
use nix2gpu_init::gpu::probe as gpu_probe;
use nix2gpu_init::graph::Graph;
use nix2gpu_init::logs::{self, Output, Style};
use nix2gpu_init::pid1::{self, signals};
use nix2gpu_init::runtime::{self, Platform};
use nix2gpu_init::supervisor::{self, nodes};
use nix2gpu_init::{access, boot, exit_code, gpu, notify};
use tracing::{debug, error, info, warn};

fn main() {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("nix2gpu-init: {message}\n\n{}", cli::USAGE);
            exit(exit_code::USAGE);
        }
    };
    let code = match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            0
        }
        Command::Version => {
            println!("nix2gpu-init {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Schema => {
            println!("{}", config::json_schema());
            0
        }
        Command::Check { configs } => check(&configs),
        Command::Status { json } => client::status(json),
        Command::Health => client::health(),
        Command::Logs { name, lines, follow } => client::logs(name, lines, follow),
        Command::Control(request) => client::control(request),
        Command::Reload { dry_run } => client::reload(dry_run),
        Command::Builtin(node) => match node {
            Builtin::Tailscale(settings) => access::tailscale::run(settings),
            Builtin::Sshd(settings) => access::sshd::run(settings),
            Builtin::Gpu(settings) => gpu::node::run(settings),
        },
        Command::Detect { json } => detect(json),
        Command::GpuProbe(options) => gpu_probe::command(&options),
        Command::GpuProbeChild { library } => gpu_probe::child(&library),
        Command::SetInterpreter { file, interpreter, runpath, output } => {
            cli::elf::set_interpreter(&file, &interpreter, runpath.as_deref(), output.as_deref())
        }
        Command::PrintInterpreter { file } => cli::elf::print_interpreter(&file),
        Command::Ldcache { output, dirs } => ldcache(&output, &dirs),
        Command::Run { configs, main } => {
            // A panic must not take PID 1 down with an unwinding message and code 101: report
            // it as the documented internal error instead.
            std::panic::catch_unwind(|| run(&configs, main)).unwrap_or(exit_code::INTERNAL)
        }
    };
    exit(code);
}

/// `nix2gpu-init check`: every error of every file on stderr, 78 if there was any.
fn check(configs: &[PathBuf]) -> i32 {
    let sources = config::sources(configs);
    match config::check(&sources, &startup_env().0, &AccountFiles::default()) {
        Ok((_, plan)) => {
            println!(
                "configuration is valid: {} file(s), {} process(es)",
                sources.len(),
                plan.services.len()
            );
            0
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s)", errors.len());
            exit_code::CONFIG
        }
    }
}

/// `nix2gpu-init ldcache`: 0 with a summary, or 1 with the reason.
fn ldcache(output: &Path, dirs: &[PathBuf]) -> i32 {
    match nix2gpu_init::gpu::ldcache::update(output, dirs) {
        Ok(count) => {
            println!("{}: {count} libraries", output.display());
            0
        }
        Err(message) => {
            eprintln!("nix2gpu-init ldcache: {message}");
            1
        }
    }
}

/// The environment for everything the init starts (boot defaults over the init's own, and
/// `NIX2GPU_PLATFORM`), and the platform detected from it.
fn startup_env() -> (BTreeMap<OsString, OsString>, Platform) {
    let mut env =
        boot::environment(std::env::vars_os(), nix::unistd::getuid().as_raw(), Path::new("/etc/passwd"));
    let platform = runtime::detect(&env, |path| path.exists());
    env.insert(runtime::PLATFORM_ENV.into(), platform.kind.as_str().into());
    (env, platform)
}

/// `nix2gpu-init detect [--json]`.
fn detect(json: bool) -> i32 {
    let (_, platform) = startup_env();
    if !json {
        println!("platform: {platform}");
        return 0;
    }
    match serde_json::to_string_pretty(&platform) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(error) => {
            eprintln!("nix2gpu-init: cannot write the platform as JSON: {error}");
            exit_code::INTERNAL
        }
    }
}

/// Boot and supervise.
fn run(configs: &[PathBuf], main: Vec<OsString>) -> i32 {
    // First, before any thread or child exists: every signal must end up in the signalfd.
    if let Err(failure) = signals::block() {
        eprintln!("nix2gpu-init: cannot block signals: {failure}");
        return exit_code::INTERNAL;
    }
    // Before the init opens anything: what is open now was inherited.
    let inherited = pid1::inherited::hold_for_main();
    let (mut env, platform) = startup_env();
    let Some((config, plan)) = load_config(configs, &env) else { return exit_code::CONFIG };
    let (grace, forward_to) = (config.shutdown_timeout(), config.forward_to());
    // All the rest the init keeps of the configuration. Every process's settings and the source
    // texts are freed here, before the nodes are built: the nodes then take memory the
    // configuration had, and less of the heap stays in use once the free pages are given back
    // (1.74 MB of anonymous memory instead of 1.87 MB with a thousand services).
    let fixed = supervisor::FixedSettings::from(config);
    // A reload plans with the same startup environment, before this plan changed it.
    let boot_env = env.clone();
    pid1::become_subreaper_unless_pid1();
    match inherited {
        Ok([]) => {}
        Ok(fds) => debug!("inherited descriptors {fds:?}: passed on to the main process only"),
        Err(failure) => warn!("{failure}: descriptors the init inherited reach every process it starts"),
    }
    prepare_system(&env);
    for failure in boot::secrets::stash(&plan.secrets, &env) {
        warn!("{failure}");
    }
    plan.base_env.apply(&mut env);
    let interactive = std::io::stdin().is_terminal();
    let main = if main.is_empty() && interactive && plan.services.is_empty() {
        vec![boot::user_shell(&env, nix::unistd::getuid().as_raw(), Path::new("/etc/passwd"))]
    } else {
        main
    };
    let notify_socket = notify::path();
    let (specs, nodes) = nodes::build(plan, &env, main.clone(), grace, &notify_socket);
    // What reading and planning the configuration took is all free now.
    pid1::return_free_memory();
    let style = Style {
        format: fixed.log.format.unwrap_or_default(),
        timestamps: fixed.log.timestamps.unwrap_or(false),
        name_width: specs
            .iter()
            .map(|spec| spec.name.len())
            .chain([logs::INIT_NAME.len()])
            .max()
            .unwrap_or(0),
        shared_stdout: specs.iter().any(|spec| spec.main),
    };
    let output = Output::new(style);
    // Logged once the output has its configured format (text or JSON).
    info!("platform: {platform}");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(failure) => {
            error!("cannot start the event loop: {failure}");
            return exit_code::INTERNAL;
        }
    };
    if specs.is_empty() {
        info!("no main command and no services: supervising until stopped");
    }
    let settings = supervisor::Settings { forward_to, grace, interactive, platform: Some(platform) };
    let socket_path = socket::path();
    let mut socket_bound = false;
    let health_listen = fixed.health.listen.clone();
    let source =
        supervisor::ReloadSource { configs: configs.to_vec(), env: boot_env, main, notify_socket, fixed };
    let code = runtime.block_on(async {
        let signals = match signals::Signals::open() {
            Ok(signals) => signals,
            Err(failure) => {
                error!("cannot open a signalfd: {failure}");
                return exit_code::INTERNAL;
            }
        };
        let (control, asks) = ControlHandle::new();
        match socket::bind(&socket_path) {
            Ok(listener) => {
                socket_bound = true;
                drop(tokio::spawn(socket::serve(socket_path.clone(), listener, control.clone())));
            }
            Err(failure) => {
                warn!(
                    "no control socket ({}: {failure}); status, logs and restart will not answer",
                    socket_path.display()
                )
            }
        }
        if let Some(listen) = &health_listen {
            match http::bind(listen).await {
                Ok(listener) => drop(tokio::spawn(http::serve(listener, control.clone()))),
                Err(failure) => warn!("no health endpoint: {failure}"),
            }
        }
        supervisor::run(signals, Graph::new(specs), nodes, output.clone(), settings, asks, source).await
    });
    // A clean exit leaves no socket behind (a killed init's is detected and replaced next time);
    // a socket that belongs to another init is not ours to remove.
    if socket_bound {
        let _ = std::fs::remove_file(&socket_path);
    }
    if interactive {
        nix2gpu_init::spawn::reclaim_terminal();
    }
    output.flush();
    code
}

/// Loads and plans the configuration, then sets up logging from it. Config errors are logged
/// (with the default level, since the configured one is unknown) and give `None`.
fn load_config(configs: &[PathBuf], env: &BTreeMap<OsString, OsString>) -> Option<(Config, Plan)> {
    match config::check(&config::sources(configs), env, &AccountFiles::default()) {
        Ok((config, plan)) => {
            let (level, unreadable) = logs::effective_level(config.log_level);
            logs::init(level);
            if let Some(value) = unreadable {
                warn!("ignoring {}={value:?}: expected trace, debug, info, warn or error", logs::LEVEL_ENV);
            }
            Some((config, plan))
        }
        Err(errors) => {
            logs::init(logs::effective_level(None).0);
            for failure in errors {
                error!("{failure}");
            }
            None
        }
    }
}

/// The boot basics that touch the file system.
fn prepare_system(env: &BTreeMap<OsString, OsString>) {
    let degraded = boot::make_runtime_dirs(Path::new("/"));
    for step in degraded.iter().chain(boot::make_user_runtime_dir(env).as_ref()) {
        warn!("cannot prepare {}: {} (continuing without it)", step.path.display(), step.error);
    }
}

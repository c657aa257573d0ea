//! The `nix2gpu-init` binary: parse the command line, then boot and supervise, or answer a
//! subcommand.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::exit;

use nix2gpu_init::cli::{self, Command};
use nix2gpu_init::config::{self, Config};
use nix2gpu_init::pid1::{self, signals};
use nix2gpu_init::{boot, exit_code, logs, spawn};
use tracing::{error, info, warn};

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
        Command::Check { configs } => check(&configs),
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
    match config::load(&sources) {
        Ok(_) => {
            println!("configuration is valid ({} file(s))", sources.len());
            0
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            exit_code::CONFIG
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
    let config = load_config(configs);
    let Some(config) = config else {
        return exit_code::CONFIG;
    };
    pid1::become_subreaper_unless_pid1();
    let env = prepare_system();
    let interactive = std::io::stdin().is_terminal();
    let main = if main.is_empty() && interactive {
        vec![boot::user_shell(&env, nix::unistd::getuid().as_raw(), Path::new("/etc/passwd"))]
    } else {
        main
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(failure) => {
            error!("cannot start the event loop: {failure}");
            return exit_code::INTERNAL;
        }
    };
    let settings = pid1::Settings { forward_to: config.forward_to(), grace: config.shutdown_timeout() };
    let code = runtime.block_on(async {
        let signals = match signals::Signals::open() {
            Ok(signals) => signals,
            Err(failure) => {
                error!("cannot open a signalfd: {failure}");
                return exit_code::INTERNAL;
            }
        };
        let main_pid = if main.is_empty() {
            info!("no main command: supervising until stopped");
            None
        } else {
            let spec = spawn::Spec {
                argv: &main,
                env: &env,
                working_dir: None,
                credentials: None,
                output: spawn::Output::Inherit,
                main: true,
                foreground: interactive,
            };
            match spawn::spawn(&spec).map(|spawned| spawned.pid) {
                Ok(pid) => {
                    info!("started main process `{}` (pid {pid})", main[0].to_string_lossy());
                    Some(pid)
                }
                Err(failure) => {
                    error!("{failure}");
                    return failure.exit_code();
                }
            }
        };
        pid1::supervise(signals, main_pid, settings).await
    });
    if interactive {
        spawn::reclaim_terminal();
    }
    code
}

/// Loads the configuration and sets up logging from it. Config errors are logged (with the
/// default level, since the configured one is unknown) and give `None`.
fn load_config(configs: &[PathBuf]) -> Option<Config> {
    match config::load(&config::sources(configs)) {
        Ok(config) => {
            let (level, unreadable) = logs::effective_level(config.log_level);
            logs::init(level);
            if let Some(value) = unreadable {
                warn!("ignoring {}={value:?}: expected trace, debug, info, warn or error", logs::LEVEL_ENV);
            }
            Some(config)
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

/// The boot basics; returns the environment for the processes the init starts.
fn prepare_system() -> std::collections::BTreeMap<OsString, OsString> {
    let degraded = boot::make_runtime_dirs(Path::new("/"));
    let env =
        boot::environment(std::env::vars_os(), nix::unistd::getuid().as_raw(), Path::new("/etc/passwd"));
    for step in degraded.iter().chain(boot::make_user_runtime_dir(&env).as_ref()) {
        warn!("cannot prepare {}: {} (continuing without it)", step.path.display(), step.error);
    }
    env
}

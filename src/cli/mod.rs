//! Command-line parsing (contract: DESIGN.md "CLI").
//!
//! Hand-rolled on `lexopt` rather than a derive-based parser: the init is one static binary
//! with a size budget, and its grammar is small.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::{Arg, Parser, ValueExt};

use crate::config::builtins::Builtin;
use crate::control::Request;
use crate::gpu::probe;

pub mod client;
pub mod elf;

/// What the user asked the binary to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Boot and supervise; `main` is the program after `--`, if any.
    Run { configs: Vec<PathBuf>, main: Vec<OsString> },
    /// Validate the configuration and exit.
    Check { configs: Vec<PathBuf> },
    /// Print the JSON Schema of the configuration.
    Schema,
    /// Ask the running init for its status.
    Status { json: bool },
    /// Ask the running init whether it is ready.
    Health,
    /// Recent output from the running init's ring buffer.
    Logs { name: Option<String>, lines: usize, follow: bool },
    /// Start, stop or restart one node of the running init.
    Control(Request),
    /// Make the running init read its configuration again (or, dry, say what that would do).
    Reload { dry_run: bool },
    /// Run a built-in node (`builtin NAME SETTINGS`): how the init starts its own `gpu`,
    /// `sshd` and `tailscale` nodes as children. Not for people; left out of the usage text.
    Builtin(Builtin),
    /// Print the detected platform and its evidence.
    Detect { json: bool },
    /// Probe the GPU driver (NVML in a child process, else nvidia-smi).
    GpuProbe(probe::Options),
    /// The probe's hidden child mode: load NVML from `library`, print the report as JSON.
    GpuProbeChild { library: PathBuf },
    /// Set the ELF interpreter (and DT_RUNPATH) of a binary, in place or into `output`.
    SetInterpreter { file: PathBuf, interpreter: String, runpath: Option<String>, output: Option<PathBuf> },
    /// Print the ELF interpreter of a binary.
    PrintInterpreter { file: PathBuf },
    /// Write an ld.so.cache for these library directories.
    Ldcache { output: PathBuf, dirs: Vec<PathBuf> },
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
usage: nix2gpu-init [--config FILE]... [-- CMD [ARG...]]   boot and supervise (the Entrypoint)
       nix2gpu-init check [--config FILE]...               validate the configuration
       nix2gpu-init schema                                 JSON Schema of the config, for editors
       nix2gpu-init status [--json]                        ask the running init: nodes, states, pids, restarts
       nix2gpu-init health                                 exit 0 if ready, 1 if not (Docker HEALTHCHECK)
       nix2gpu-init logs [NAME] [-n N] [-f]                recent output from the ring buffer
       nix2gpu-init restart|stop|start NAME                control one node
       nix2gpu-init reload [--dry-run]                     re-read the config, apply the difference
       nix2gpu-init detect [--json]                        the detected platform and its evidence
       nix2gpu-init gpu-probe [--json] [--library PATH] [--nvidia-smi PATH] [--timeout SECONDS]
                                                           driver version and GPUs (exit 1: none)
       nix2gpu-init set-interpreter --interpreter PATH [--runpath DIRS] FILE [--output OUT]
                                                           set an ELF file's interpreter (and runpath)
       nix2gpu-init print-interpreter FILE                 print an ELF file's interpreter
       nix2gpu-init ldcache [--output FILE] DIR...         write an ld.so.cache for these dirs
       nix2gpu-init --help | --version

Config files: every --config in order, else $NIX2GPU_CONFIG, else /etc/nix2gpu/config.yaml
if it exists. CMD is the main process: signals are forwarded to it and its exit code becomes
the init's. Without CMD an interactive shell runs when stdin is a terminal; otherwise the init
keeps running (reaping orphans) until it is stopped.";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    if let [first, name, settings] = args.as_slice()
        && first == "builtin"
    {
        let (name, settings) = (name.to_string_lossy(), settings.to_string_lossy());
        return Builtin::from_args(&name, &settings).map(Command::Builtin);
    }
    if args.first().is_some_and(|first| first == "ldcache") {
        return parse_ldcache(&args[1..]);
    }
    if let Some(first) = args.first().and_then(|a| a.to_str())
        && let Some(parsed) = parse_client(first, &args[1..])?.or(parse_elf(first, &args[1..])?)
    {
        return Ok(parsed);
    }
    if let Some(first) = args.first().and_then(|a| a.to_str())
        && let Some(parsed) = parse_local(first, &args[1..])?
    {
        return Ok(parsed);
    }
    let mut parser = Parser::from_args(args);
    let mut configs = Vec::new();
    let mut subcommand: Option<String> = None;
    // `--` is looked for before each option, so that everything after it stays verbatim
    // (lexopt would otherwise consume the `--` itself).
    while !next_is_double_dash(&mut parser) {
        let Some(arg) = parser.next().map_err(|e| e.to_string())? else {
            break;
        };
        match arg {
            Arg::Long("config") | Arg::Short('c') => {
                configs.push(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Arg::Long("help") | Arg::Short('h') => return Ok(Command::Help),
            Arg::Long("version") | Arg::Short('V') => return Ok(Command::Version),
            Arg::Value(value) if subcommand.is_none() => {
                let name = value.string().map_err(|e| e.to_string())?;
                if name != "check" && name != "schema" {
                    return Err(format!(
                        "unknown subcommand `{name}`; to run a program as the main process, \
                         write `nix2gpu-init -- {name}`"
                    ));
                }
                subcommand = Some(name);
            }
            Arg::Value(value) => {
                return Err(format!("unexpected argument {:?}", value.to_string_lossy()));
            }
            Arg::Long(_) | Arg::Short(_) => return Err(arg.unexpected().to_string()),
        }
    }
    let main = take_main_command(&mut parser)?;
    match subcommand.as_deref() {
        Some("check") if main.is_empty() => Ok(Command::Check { configs }),
        Some("schema") if main.is_empty() && configs.is_empty() => Ok(Command::Schema),
        Some(name) => Err(format!("`{name}` takes no command after `--` (and `schema` no --config)")),
        None => Ok(Command::Run { configs, main }),
    }
}

/// The subcommands that talk to a running init; `None` when `name` is not one of them.
fn parse_client(name: &str, rest: &[OsString]) -> Result<Option<Command>, String> {
    let mut parser = Parser::from_args(rest.iter().cloned());
    let (mut json, mut lines, mut follow, mut dry_run, mut positional) =
        (false, 100, false, false, Vec::new());
    if !matches!(name, "status" | "health" | "logs" | "start" | "stop" | "restart" | "reload") {
        return Ok(None);
    }
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("json") if name == "status" => json = true,
            Arg::Short('n') | Arg::Long("lines") if name == "logs" => {
                let value = parser.value().map_err(|e| e.to_string())?;
                lines = value.parse().map_err(|e: lexopt::Error| format!("-n: {e}"))?;
            }
            Arg::Short('f') | Arg::Long("follow") if name == "logs" => follow = true,
            Arg::Long("dry-run") if name == "reload" => dry_run = true,
            Arg::Value(value) => positional.push(value.string().map_err(|e| e.to_string())?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let one_name = |mut names: Vec<String>| match names.len() {
        1 => Ok(names.remove(0)),
        _ => Err(format!("`{name}` takes exactly one node name")),
    };
    let command = match name {
        "status" if positional.is_empty() => Command::Status { json },
        "health" if positional.is_empty() => Command::Health,
        "logs" if positional.len() <= 1 => Command::Logs { name: positional.pop(), lines, follow },
        "start" => Command::Control(Request::Start { name: one_name(positional)? }),
        "stop" => Command::Control(Request::Stop { name: one_name(positional)? }),
        "restart" => Command::Control(Request::Restart { name: one_name(positional)? }),
        "reload" if positional.is_empty() => Command::Reload { dry_run },
        _ => return Err(format!("`{name}` takes no such arguments")),
    };
    Ok(Some(command))
}

/// `detect` and `gpu-probe`: subcommands about this machine, not about a running init.
fn parse_local(name: &str, rest: &[OsString]) -> Result<Option<Command>, String> {
    let gpu = match name {
        "detect" => false,
        "gpu-probe" => true,
        _ => return Ok(None),
    };
    let mut parser = Parser::from_args(rest.iter().cloned());
    let mut options =
        probe::Options { json: false, library: None, nvidia_smi: None, timeout: probe::DEFAULT_TIMEOUT };
    let mut child = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("json") => options.json = true,
            Arg::Long("library") if gpu => options.library = Some(path_value(&mut parser)?),
            Arg::Long("nvidia-smi") if gpu => options.nvidia_smi = Some(path_value(&mut parser)?),
            Arg::Long("timeout") if gpu => {
                let value = parser.value().map_err(|e| e.to_string())?.string().map_err(|e| e.to_string())?;
                options.timeout = seconds(&value).map_err(|e| format!("--timeout: {e}"))?;
            }
            // The hidden child mode (probe::CHILD_FLAG).
            Arg::Long("child") if gpu => child = true,
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some(match (gpu, child) {
        (false, _) => Command::Detect { json: options.json },
        (true, false) => Command::GpuProbe(options),
        (true, true) => {
            Command::GpuProbeChild { library: options.library.ok_or("`gpu-probe --child` needs --library")? }
        }
    }))
}

fn path_value(parser: &mut Parser) -> Result<PathBuf, String> {
    parser.value().map(PathBuf::from).map_err(|e| e.to_string())
}

/// A positive number of seconds, fractions allowed (`0.5`).
fn seconds(text: &str) -> Result<std::time::Duration, String> {
    let value: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("`{text}` is not a positive number of seconds"));
    }
    std::time::Duration::try_from_secs_f64(value).map_err(|e| format!("`{text}`: {e}"))
}

/// `set-interpreter` and `print-interpreter`; `None` when `name` is neither.
fn parse_elf(name: &str, rest: &[OsString]) -> Result<Option<Command>, String> {
    if !matches!(name, "set-interpreter" | "print-interpreter") {
        return Ok(None);
    }
    let mut parser = Parser::from_args(rest.iter().cloned());
    let (mut interpreter, mut runpath, mut output, mut files) = (None, None, None, Vec::new());
    let value = |parser: &mut Parser| parser.value().map_err(|e| e.to_string());
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("interpreter") if name == "set-interpreter" => {
                interpreter = Some(value(&mut parser)?.string().map_err(|e| e.to_string())?);
            }
            Arg::Long("runpath") if name == "set-interpreter" => {
                runpath = Some(value(&mut parser)?.string().map_err(|e| e.to_string())?);
            }
            Arg::Long("output") if name == "set-interpreter" => {
                output = Some(PathBuf::from(value(&mut parser)?))
            }
            Arg::Value(file) => files.push(PathBuf::from(file)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let [file] = <[PathBuf; 1]>::try_from(files).map_err(|_| format!("`{name}` takes exactly one FILE"))?;
    if name == "print-interpreter" {
        return Ok(Some(Command::PrintInterpreter { file }));
    }
    let interpreter = interpreter.ok_or("`set-interpreter` needs --interpreter PATH")?;
    Ok(Some(Command::SetInterpreter { file, interpreter, runpath, output }))
}

/// `ldcache [--output FILE] DIR...`; the output defaults to /etc/ld.so.cache.
fn parse_ldcache(rest: &[OsString]) -> Result<Command, String> {
    let mut parser = Parser::from_args(rest.iter().cloned());
    let mut output = PathBuf::from(crate::gpu::ldcache::DEFAULT_OUTPUT);
    let mut dirs = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("output") | Arg::Short('o') => {
                output = parser.value().map_err(|e| e.to_string())?.into()
            }
            Arg::Value(dir) => dirs.push(PathBuf::from(dir)),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if dirs.is_empty() {
        return Err("`ldcache` needs at least one library directory".into());
    }
    Ok(Command::Ldcache { output, dirs })
}

fn next_is_double_dash(parser: &mut Parser) -> bool {
    parser.try_raw_args().is_some_and(|raw| raw.peek() == Some("--".as_ref()))
}

/// Everything after `--`, verbatim: the main process's argv.
fn take_main_command(parser: &mut Parser) -> Result<Vec<OsString>, String> {
    let Some(mut raw) = parser.try_raw_args() else {
        return Err("an option is missing its value".into());
    };
    let mut rest: Vec<OsString> = raw.by_ref().collect();
    if rest.first().is_some_and(|first| first == "--") {
        rest.remove(0);
        if rest.is_empty() {
            return Err("`--` must be followed by a command".into());
        }
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn main_command_after_double_dash_is_kept_verbatim() {
        let parsed = parse_str(&["--config", "a.yaml", "--", "sh", "-c", "--config x"]).unwrap();
        assert_eq!(
            parsed,
            Command::Run {
                configs: vec!["a.yaml".into()],
                main: vec!["sh".into(), "-c".into(), "--config x".into()],
            }
        );
    }

    #[test]
    fn configs_repeat_in_order() {
        let parsed = parse_str(&["check", "-c", "a", "--config=b"]).unwrap();
        assert_eq!(parsed, Command::Check { configs: vec!["a".into(), "b".into()] });
    }

    #[test]
    fn schema_takes_nothing() {
        assert_eq!(parse_str(&["schema"]).unwrap(), Command::Schema);
        assert!(parse_str(&["schema", "--config", "x"]).is_err());
    }

    #[test]
    fn client_subcommands() {
        assert_eq!(parse_str(&["status", "--json"]).unwrap(), Command::Status { json: true });
        assert_eq!(parse_str(&["health"]).unwrap(), Command::Health);
        assert_eq!(
            parse_str(&["logs", "web", "-n", "5", "-f"]).unwrap(),
            Command::Logs { name: Some("web".into()), lines: 5, follow: true }
        );
        assert_eq!(parse_str(&["logs"]).unwrap(), Command::Logs { name: None, lines: 100, follow: false });
        assert_eq!(
            parse_str(&["restart", "web"]).unwrap(),
            Command::Control(Request::Restart { name: "web".into() })
        );
        assert_eq!(parse_str(&["reload"]).unwrap(), Command::Reload { dry_run: false });
        assert_eq!(parse_str(&["reload", "--dry-run"]).unwrap(), Command::Reload { dry_run: true });
        assert!(parse_str(&["reload", "web"]).is_err());
        assert!(parse_str(&["stop"]).is_err());
        assert!(parse_str(&["status", "extra"]).is_err());
        assert!(parse_str(&["health", "--json"]).is_err());
    }

    #[test]
    fn builtin_nodes_take_their_settings_as_json() {
        assert!(
            matches!(parse_str(&["builtin", "gpu", "{}"]), Err(e) if e.contains("settings of built-in `gpu`"))
        );
        assert!(
            matches!(parse_str(&["builtin", "web", "{}"]), Err(e) if e.contains("no built-in node `web`"))
        );
        assert!(parse_str(&["builtin", "gpu"]).is_err());
    }

    #[test]
    fn detect_and_gpu_probe() {
        assert_eq!(parse_str(&["detect"]).unwrap(), Command::Detect { json: false });
        assert_eq!(parse_str(&["detect", "--json"]).unwrap(), Command::Detect { json: true });
        assert!(parse_str(&["detect", "--library", "x"]).is_err());
        assert_eq!(
            parse_str(&[
                "gpu-probe",
                "--json",
                "--library",
                "/l.so",
                "--nvidia-smi",
                "/smi",
                "--timeout",
                "0.5"
            ])
            .unwrap(),
            Command::GpuProbe(probe::Options {
                json: true,
                library: Some("/l.so".into()),
                nvidia_smi: Some("/smi".into()),
                timeout: std::time::Duration::from_millis(500),
            })
        );
        assert_eq!(
            parse_str(&["gpu-probe"]).unwrap(),
            Command::GpuProbe(probe::Options {
                json: false,
                library: None,
                nvidia_smi: None,
                timeout: probe::DEFAULT_TIMEOUT
            })
        );
        assert_eq!(
            parse_str(&["gpu-probe", probe::CHILD_FLAG, "--library", "/l.so"]).unwrap(),
            Command::GpuProbeChild { library: "/l.so".into() }
        );
        assert!(parse_str(&["gpu-probe", "--child"]).is_err());
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            assert!(parse_str(&["gpu-probe", "--timeout", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn interpreter_subcommands() {
        assert_eq!(
            parse_str(&["set-interpreter", "--interpreter", "/ld.so", "bin", "--output", "out"]).unwrap(),
            Command::SetInterpreter {
                file: "bin".into(),
                interpreter: "/ld.so".into(),
                runpath: None,
                output: Some("out".into()),
            }
        );
        assert_eq!(
            parse_str(&["set-interpreter", "--runpath=/a:/b", "--interpreter=/ld.so", "bin"]).unwrap(),
            Command::SetInterpreter {
                file: "bin".into(),
                interpreter: "/ld.so".into(),
                runpath: Some("/a:/b".into()),
                output: None,
            }
        );
        assert_eq!(
            parse_str(&["print-interpreter", "bin"]).unwrap(),
            Command::PrintInterpreter { file: "bin".into() }
        );
        assert!(parse_str(&["set-interpreter", "bin"]).unwrap_err().contains("--interpreter"));
        assert!(parse_str(&["set-interpreter", "--interpreter", "/ld.so"]).is_err());
        assert!(parse_str(&["print-interpreter", "a", "b"]).is_err());
        assert!(parse_str(&["print-interpreter", "--output", "x", "a"]).is_err());
    }

    #[test]
    fn ldcache_takes_directories_and_an_output() {
        assert_eq!(
            parse_str(&["ldcache", "/usr/lib64", "-o", "/tmp/c", "/usr/local/nvidia/lib64"]).unwrap(),
            Command::Ldcache {
                output: "/tmp/c".into(),
                dirs: vec!["/usr/lib64".into(), "/usr/local/nvidia/lib64".into()],
            }
        );
        assert_eq!(
            parse_str(&["ldcache", "/usr/lib64"]).unwrap(),
            Command::Ldcache { output: "/etc/ld.so.cache".into(), dirs: vec!["/usr/lib64".into()] }
        );
        assert!(parse_str(&["ldcache"]).is_err());
        assert!(parse_str(&["ldcache", "--output"]).is_err());
        assert!(parse_str(&["ldcache", "--json", "/x"]).is_err());
    }

    #[test]
    fn no_arguments_runs_without_main_process() {
        assert_eq!(parse_str(&[]).unwrap(), Command::Run { configs: vec![], main: vec![] });
    }

    #[test]
    fn a_bare_program_name_is_refused_with_a_hint() {
        let error = parse_str(&["bash"]).unwrap_err();
        assert!(error.contains("nix2gpu-init -- bash"), "{error}");
    }

    #[test]
    fn dangling_double_dash_and_missing_values_are_errors() {
        assert!(parse_str(&["--"]).is_err());
        assert!(parse_str(&["--config"]).is_err());
        assert!(parse_str(&["check", "--", "x"]).is_err());
        assert!(parse_str(&["--frobnicate"]).is_err());
    }
}

//! The init's configuration: where it comes from, its schema, how several files merge, how it
//! is checked, and the [`Plan`] the runtime executes.
//!
//! The file format is process-compose's YAML (JSON is YAML too, which is what Nix emits) plus one
//! `nix2gpu:` section. Every key is checked: a key the init does not know is an error with the
//! file, line and column, never silently ignored. `nix2gpu-init check` reports every error at
//! once, so a file goes through several passes, each collecting all it finds:
//! 1. `syntax`: the text as one YAML document (nothing else can run without it);
//! 2. `unknown_keys`: every key the JSON Schema of the types lacks, with a suggestion or, for
//!    process-compose settings left out on purpose, the reason;
//! 3. `decode`: the typed values, part by part, so that one wrong type does not hide the next;
//! 4. `plan` (with `validate`): what the settings mean: dependencies, probes, users, env files.
//!
//! Errors name file, line and column. Syntax and type errors get them from serde_yaml; every
//! other error is known by its key path (`processes.web.user`), and `locate` finds that node's
//! position by deserializing the document again with a seed that fails on purpose there
//! (serde_yaml attaches the current node's position to such an error). `provenance` keeps the
//! texts so that this works after several files are merged.

pub mod builtins;
mod decode;
mod direct;
mod env_file;
mod expand;
mod locate;
mod merge;
mod plan;
mod probe;
mod provenance;
mod schema;
mod suggest;
mod syntax;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod unknown_keys;
mod user;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::accounts::AccountFiles;

pub use crate::accounts::Credentials;
pub use expand::expand;
pub use plan::{
    BaseEnv, DEFAULT_BACKOFF, DEFAULT_LOG_LENGTH, DEFAULT_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT, Plan, Service,
    plan,
};
pub use probe::{
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_PERIOD, DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT, ProbeCheck,
    ProbePlan,
};
pub use provenance::Provenance;
pub use schema::*;

/// The file read when neither `--config` nor `$NIX2GPU_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/nix2gpu/config.yaml";
/// The environment variable naming the config file when no `--config` is given.
pub const PATH_ENV: &str = "NIX2GPU_CONFIG";
/// How long leftover processes get between SIGTERM and SIGKILL when no config says otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// One problem found in a config file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem is tied to a place in the file.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, location: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), location, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// The files to read, in merge order: `--config` files, else `$NIX2GPU_CONFIG`, else the
/// default path if it exists. No file at all is a valid, empty configuration.
pub fn sources(cli_configs: &[PathBuf]) -> Vec<PathBuf> {
    if !cli_configs.is_empty() {
        return cli_configs.to_vec();
    }
    if let Some(path) = env::var_os(PATH_ENV).filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let default = Path::new(DEFAULT_PATH);
    if default.exists() { vec![default.to_path_buf()] } else { Vec::new() }
}

/// Reads and merges `paths` in order (see [`Config::merge`]), checking each file's structure:
/// YAML syntax, unknown keys, value types. Every error of every file is returned, sorted by file
/// and position. What the settings mean (dependencies, users, probes, ...) is checked by
/// [`plan`]; [`check`] does both.
pub fn load(paths: &[PathBuf]) -> Result<Config, Vec<ConfigError>> {
    let loaded = load_files(paths);
    if loaded.errors.is_empty() { Ok(loaded.config) } else { Err(sorted(loaded.errors, paths)) }
}

/// Checks one document's structure, as [`load`] does for a file; `path` only names it.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
    let parsed = parse_file(path, text);
    if parsed.errors.is_empty() {
        Ok(parsed.config)
    } else {
        Err(sorted(parsed.errors, &[path.to_path_buf()]))
    }
}

/// Everything `nix2gpu-init check` checks, in one call: [`load`], then [`plan`] with the init's
/// environment and account files. All errors are returned together, not only those of the first
/// stage that had any: a file whose YAML parses is checked for meaning too, with the settings
/// that were readable (a process whose own settings had errors is not checked again).
pub fn check(
    paths: &[PathBuf],
    init_env: &BTreeMap<OsString, OsString>,
    accounts: &AccountFiles,
) -> Result<(Config, Plan), Vec<ConfigError>> {
    let loaded = load_files(paths);
    if !loaded.complete {
        return Err(sorted(loaded.errors, paths));
    }
    match (plan::plan_trusting(&loaded.config, init_env, accounts, &loaded.broken), loaded.errors) {
        (Ok(plan), errors) if errors.is_empty() => Ok((loaded.config, plan)),
        (Ok(_), errors) => Err(sorted(errors, paths)),
        (Err(more), mut errors) => {
            errors.extend(more);
            Err(sorted(errors, paths))
        }
    }
}

/// The JSON Schema of the configuration file (pretty-printed), for editors and
/// `nix2gpu-init schema`.
pub fn json_schema() -> String {
    format!("{:#}", unknown_keys::schema())
}

/// The structural check of one or more files.
struct Loaded {
    /// The settings that could be read; with errors, a partial configuration.
    config: Config,
    errors: Vec<ConfigError>,
    /// Processes with structural errors.
    broken: BTreeSet<String>,
    /// Every file was read and parsed as YAML, so `config` holds all that could be checked
    /// further (otherwise whole files are missing from it).
    complete: bool,
}

fn load_files(paths: &[PathBuf]) -> Loaded {
    let mut loaded =
        Loaded { config: Config::default(), errors: Vec::new(), broken: BTreeSet::new(), complete: true };
    for path in paths {
        let file = match read_file(path) {
            Ok(text) => parse_file(path, &text),
            Err(error) => Loaded {
                config: Config::default(),
                errors: vec![error],
                broken: BTreeSet::new(),
                complete: false,
            },
        };
        loaded.config.merge(file.config);
        loaded.errors.extend(file.errors);
        loaded.broken.extend(file.broken);
        loaded.complete &= file.complete;
    }
    loaded
}

/// Reads a file as UTF-8 text; invalid UTF-8 is located at its first bad byte.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        fs::read(path).map_err(|error| ConfigError::new(path, None, format!("cannot read: {error}")))?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let bad = error.as_bytes().get(valid.len()).copied().unwrap_or_default();
        let location = syntax::position_of(&String::from_utf8_lossy(valid), valid.len());
        ConfigError::new(path, Some(location), format!("not UTF-8 text (byte 0x{bad:02x})"))
    })
}

/// The three structural passes over one document: YAML syntax (nothing else can run without
/// it), unknown keys, and value types.
fn parse_file(path: &Path, text: &str) -> Loaded {
    let document = match syntax::document(text) {
        Ok(document) => document,
        Err(problems) => {
            let errors =
                problems.into_iter().map(|p| ConfigError::new(path, p.location, p.message)).collect();
            return Loaded { config: Config::default(), errors, broken: BTreeSet::new(), complete: false };
        }
    };
    let unknown = unknown_keys::find(&document);
    let mut broken: BTreeSet<String> =
        unknown.iter().filter_map(|issue| issue.path.process()).map(str::to_string).collect();
    let (mut config, type_errors) = if document.is_null() {
        (Config::default(), Vec::new())
    } else {
        let decoded = decode::decode(text);
        broken.extend(decoded.broken_processes);
        (decoded.config, decoded.errors)
    };
    config.provenance = Provenance::file(path, text, config.environment.len());
    let mut errors: Vec<ConfigError> =
        unknown.into_iter().map(|issue| config.provenance.locate(issue)).collect();
    errors.extend(type_errors.iter().map(|error| {
        let problem = syntax::from_yaml_error(error, text);
        ConfigError::new(path, problem.location, problem.message)
    }));
    Loaded { config, errors, broken, complete: true }
}

/// Errors in reading order: by file (as given), then line and column; repeats dropped.
pub(super) fn sorted(mut errors: Vec<ConfigError>, paths: &[PathBuf]) -> Vec<ConfigError> {
    let file_rank = |error: &ConfigError| paths.iter().position(|p| *p == error.file).unwrap_or(paths.len());
    errors.sort_by_key(|error| (file_rank(error), error.location));
    errors.dedup();
    errors
}

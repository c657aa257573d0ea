//! The init's configuration: where it comes from, its schema, and how several files merge.
//!
//! The file format is process-compose's YAML (JSON is YAML too, which is what Nix emits) plus one
//! `nix2gpu:` section. Every key is checked: a key the init does not know is an error with the
//! file, line and column, never silently ignored.

mod schema;

use std::env;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Reads and merges `paths` in order, collecting every error rather than stopping at the first.
pub fn load(paths: &[PathBuf]) -> Result<Config, Vec<ConfigError>> {
    let mut merged = Config::default();
    let mut errors = Vec::new();
    for path in paths {
        match load_file(path) {
            Ok(config) => merged.merge(config),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() { Ok(merged) } else { Err(errors) }
}

/// Reads one file; an empty file is an empty configuration.
fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|error| ConfigError {
        file: path.to_path_buf(),
        location: None,
        message: format!("cannot read: {error}"),
    })?;
    parse(path, &text)
}

/// Parses one document; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml::from_str(text).map_err(|error| ConfigError {
        file: path.to_path_buf(),
        location: error.location().map(|l| (l.line(), l.column())),
        message: strip_location_suffix(&error.to_string()),
    })
}

/// serde_yaml appends " at line L column C" to its messages; the location is printed in front
/// instead, compiler-style, so the suffix would only repeat it.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn empty_document_is_the_default_config() {
        assert_eq!(parse_str("").unwrap(), Config::default());
        assert_eq!(parse_str("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_located() {
        let error = parse_str("log_level: info\nlog_levle: debug\n").unwrap_err();
        assert_eq!(error.location, Some((2, 1)), "{error}");
        assert!(error.to_string().starts_with("test.yaml:2:1: unknown field `log_levle`"), "{error}");
    }

    #[test]
    fn bad_value_is_located() {
        let error = parse_str("nix2gpu:\n  shutdown_timeout_seconds: soon\n").unwrap_err();
        assert_eq!(error.location.map(|l| l.0), Some(2), "{error}");
    }

    #[test]
    fn json_is_accepted() {
        let config =
            parse_str(r#"{"log_level": "debug", "nix2gpu": {"shutdown_timeout_seconds": 2}}"#).unwrap();
        assert_eq!(config.log_level, Some(LogLevel::Debug));
        assert_eq!(config.shutdown_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn later_files_override_earlier_ones_key_by_key() {
        let mut base = parse_str("log_level: warn\nnix2gpu:\n  shutdown_timeout_seconds: 3\n").unwrap();
        base.merge(parse_str("log_level: debug\n").unwrap());
        assert_eq!(base.log_level, Some(LogLevel::Debug));
        assert_eq!(base.shutdown_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn every_file_error_is_reported() {
        let dir = std::env::temp_dir().join(format!("nix2gpu-config-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.yaml");
        fs::write(&bad, "bogus: 1\n").unwrap();
        let missing = dir.join("missing.yaml");
        let errors = load(&[bad, missing]).unwrap_err();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}

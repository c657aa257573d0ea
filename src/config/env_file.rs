//! `env_file`: a file of `KEY=VALUE` lines, read when the plan is made.

use std::fs;
use std::path::Path;

/// The entries of the env file at `path`, in order. The format is the common subset of
/// docker's `--env-file` and dotenv: blank lines and `#` comments are skipped, an `export `
/// prefix is allowed, and a value wholly in single or double quotes loses them. Values are
/// `${VAR}`-expanded later, like `environment` values.
pub(super) fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text =
        read_bounded(path).map_err(|error| format!("cannot read env_file {}: {error}", path.display()))?;
    parse(&text).map_err(|(line, message)| format!("env_file {} line {line}: {message}", path.display()))
}

/// The largest env file read: far beyond any real one, small enough that a config naming
/// /dev/zero (or a huge file) cannot make the init, which plans at boot and on reload, run out
/// of memory.
const MAX_LEN: u64 = 1 << 20;

/// The file's text, refused when it is not a regular file or larger than [`MAX_LEN`].
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_LEN + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_LEN {
        return Err(Error::new(ErrorKind::InvalidData, format!("larger than {MAX_LEN} bytes")));
    }
    Ok(text)
}

/// Parses env-file text; an error names its 1-based line.
fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err((index + 1, format!("expected KEY=VALUE, found `{line}`")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err((index + 1, "the variable name before `=` is empty".into()));
        }
        entries.push((key.to_string(), unquote(value.trim()).to_string()));
    }
    Ok(entries)
}

fn unquote(value: &str) -> &str {
    ['"', '\'']
        .iter()
        .find_map(|quote| value.strip_prefix(*quote).and_then(|inner| inner.strip_suffix(*quote)))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_huge_files_are_refused_not_read() {
        let error = read(Path::new("/dev/zero")).unwrap_err();
        assert!(error.contains("not a regular file"), "{error}");
        let big = std::env::temp_dir().join(format!("nix2gpu-env-big-{}", std::process::id()));
        fs::write(&big, "A=b\n".repeat(300_000)).unwrap();
        let error = read(&big).unwrap_err();
        fs::remove_file(&big).unwrap();
        assert!(error.contains("larger than 1048576 bytes"), "{error}");
    }

    #[test]
    fn parses_the_common_format() {
        let text = "# db\nexport PGHOST=localhost\n\nPGPORT = 5432\nNAME=\"a b\"\nQ='c'\nEMPTY=\nEQ=a=b\n";
        let entries = parse(text).unwrap();
        let pairs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("PGHOST", "localhost"),
                ("PGPORT", "5432"),
                ("NAME", "a b"),
                ("Q", "c"),
                ("EMPTY", ""),
                ("EQ", "a=b")
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(parse("A=1\nnonsense\n").unwrap_err(), (2, "expected KEY=VALUE, found `nonsense`".into()));
        assert_eq!(parse("=1\n").unwrap_err().0, 1);
        assert!(
            read(Path::new("/nonexistent/x.env"))
                .unwrap_err()
                .starts_with("cannot read env_file /nonexistent/x.env: ")
        );
    }
}

//! `env_file`: a file of `KEY=VALUE` lines, read when the plan is made.

use std::fs;
use std::path::Path;

/// The entries of the env file at `path`, in order. The format is the common subset of
/// docker's `--env-file` and dotenv: blank lines and `#` comments are skipped, an `export `
/// prefix is allowed, and a value wholly in single or double quotes loses them. Values are
/// `${VAR}`-expanded later, like `environment` values.
pub(super) fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = fs::read_to_string(path)
        .map_err(|error| format!("cannot read env_file {}: {error}", path.display()))?;
    parse(&text).map_err(|(line, message)| format!("env_file {} line {line}: {message}", path.display()))
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

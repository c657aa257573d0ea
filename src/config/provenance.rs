//! Which file (and where in it) each setting of a merged configuration came from.
//!
//! Semantic errors are found after the files are merged, on the typed [`Config`], which has
//! forgotten its text. A [`Provenance`] keeps the texts so that such an error, described by its
//! key path, can still be printed as `file:line:col`.
//!
//! [`Config`]: super::Config

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;
use super::locate::{self, KeyPath, Segment, Target};

/// The source files of a configuration, in merge order.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    files: Vec<SourceFile>,
}

/// Provenance is bookkeeping, not meaning: two configurations with the same settings are equal
/// wherever they were read from.
impl PartialEq for Provenance {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
struct SourceFile {
    path: PathBuf,
    text: Arc<str>,
    /// The indices of the merged top-level `environment` that came from this file (that list is
    /// concatenated across files, so its indices are not the file's own).
    environment: Range<usize>,
}

/// A problem with a setting, known by its key path; [`Provenance::locate`] turns it into a
/// [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issue {
    pub path: KeyPath,
    pub target: Target,
    pub message: String,
}

impl Issue {
    /// A problem with the key at `path` (a name, or a whole section).
    pub(super) fn key(path: KeyPath, message: impl Into<String>) -> Self {
        Self { path, target: Target::KEY, message: message.into() }
    }

    /// A problem with the value at `path`.
    pub(super) fn value(path: KeyPath, message: impl Into<String>) -> Self {
        Self { path, target: Target::Value, message: message.into() }
    }
}

/// `path: message`, the shape of every error about a setting (serde's type errors have it too):
/// with one-line JSON, the key path is what tells where the column points.
impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The file name used when a configuration was not read from any file.
const NO_FILE: &str = "<config>";

impl Provenance {
    /// One file, whose top-level `environment` has `environment_len` entries.
    pub(super) fn file(path: &Path, text: &str, environment_len: usize) -> Self {
        Self {
            files: vec![SourceFile {
                path: path.to_path_buf(),
                text: Arc::from(text),
                environment: 0..environment_len,
            }],
        }
    }

    /// Appends the files of a configuration merged after this one; `environment_offset` is how
    /// many top-level `environment` entries came before its own.
    pub(super) fn append(&mut self, later: Provenance, environment_offset: usize) {
        self.files.extend(later.files.into_iter().map(|mut file| {
            file.environment =
                file.environment.start + environment_offset..file.environment.end + environment_offset;
            file
        }));
    }

    /// The file an issue belongs to and its place there. Settings override earlier files, so
    /// the latest file that has the path is the one whose value was used; entries of the
    /// top-level `environment` are found by their index range instead.
    pub(super) fn locate(&self, issue: Issue) -> ConfigError {
        let found = match issue.path.segments() {
            [Segment::Key(key), Segment::Index(index), rest @ ..] if key == "environment" => {
                self.locate_environment_entry(*index, rest, issue.target)
            }
            _ => self.files.iter().rev().find_map(|file| {
                locate::locate(&file.text, &issue.path, issue.target).map(|location| (file, location))
            }),
        };
        let message = issue.to_string();
        match found {
            Some((file, location)) => ConfigError::new(&file.path, Some(location), message),
            None => ConfigError::new(self.fallback_path(), None, message),
        }
    }

    fn locate_environment_entry(
        &self,
        index: usize,
        rest: &[Segment],
        target: Target,
    ) -> Option<(&SourceFile, (usize, usize))> {
        let file = self.files.iter().find(|file| file.environment.contains(&index))?;
        let mut segments =
            vec![Segment::Key("environment".into()), Segment::Index(index - file.environment.start)];
        segments.extend_from_slice(rest);
        let location = locate::locate(&file.text, &KeyPath::from_segments(segments), target)?;
        Some((file, location))
    }

    /// Where an issue without a place in any file is reported: the last file read.
    fn fallback_path(&self) -> &Path {
        self.files.last().map_or(Path::new(NO_FILE), |file| &file.path)
    }

    /// The files, in merge order, for sorting errors.
    pub(super) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|file| file.path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_own_the_settings_they_define() {
        let mut provenance =
            Provenance::file(Path::new("a.yaml"), "environment: [A=1]\nlog_level: info\n", 1);
        provenance
            .append(Provenance::file(Path::new("b.yaml"), "environment:\n  - B=2\nlog_level: debug\n", 1), 1);
        let level = provenance.locate(Issue::value(KeyPath::root().key("log_level"), "m"));
        assert_eq!(level.to_string(), "b.yaml:3:12: log_level: m");
        let first = provenance.locate(Issue::value(KeyPath::root().key("environment").index(0), "m"));
        assert_eq!(first.to_string(), "a.yaml:1:15: environment[0]: m");
        let second = provenance.locate(Issue::value(KeyPath::root().key("environment").index(1), "m"));
        assert_eq!(second.to_string(), "b.yaml:2:5: environment[1]: m");
    }

    #[test]
    fn issues_without_a_place_name_the_last_file() {
        let provenance = Provenance::file(Path::new("a.yaml"), "{}", 0);
        assert_eq!(provenance.locate(Issue::key(KeyPath::root().key("x"), "m")).to_string(), "a.yaml: x: m");
        assert_eq!(Provenance::default().locate(Issue::key(KeyPath::root(), "m")).to_string(), "<config>: m");
    }
}

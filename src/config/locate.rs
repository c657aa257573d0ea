//! Line and column of any key or value in a YAML (or JSON) document, by key path.
//!
//! serde_yaml_ng attaches the position of the event being read to an error raised with
//! `serde::de::Error::custom` inside a visitor. [`locate`] deserializes the document with a seed
//! that follows a key path, skipping everything else, and fails on purpose at the node it was
//! asked for: the error's `location()` is that node's. This needs no second parser, knows YAML
//! exactly as the real deserializer does (aliases included), and works as well for one-line JSON
//! as for block YAML. Columns count characters, not bytes, as libyaml does.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a [`KeyPath`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

/// Where a node is in the document, such as `processes.web.environment[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document's top level.
    pub(super) fn root() -> Self {
        Self::default()
    }

    /// This path extended by a mapping key.
    pub(super) fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_string()))
    }

    /// This path extended by a sequence index.
    pub(super) fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Self(segments)
    }

    pub(super) fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub(super) fn from_segments(segments: Vec<Segment>) -> Self {
        Self(segments)
    }

    pub(super) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The process a path is inside of, for paths under `processes.<name>`.
    pub(super) fn process(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Segment::Key(processes), Segment::Key(name), ..] if processes == "processes" => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What to point at: the last key of the path, or the value under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The key itself (for a sequence index, the element). `occurrence` picks among repeated
    /// keys (0 = the first), which only the duplicate-key report needs.
    Key { occurrence: usize },
    /// The value: a scalar's first character, a flow collection's bracket, or a block
    /// collection's first entry.
    Value,
}

impl Target {
    /// The first (usually only) occurrence of the key.
    pub(super) const KEY: Target = Target::Key { occurrence: 0 };
}

/// The message of the error raised on purpose; it cannot come from a document.
const FOUND: &str = "\u{0}nix2gpu-init: found";

/// The 1-based line and column of the node at `path`, or `None` when the document has no such
/// node (or cannot be parsed at all).
pub(super) fn locate(text: &str, path: &KeyPath, target: Target) -> Option<(usize, usize)> {
    let seek = Seek { path: path.segments(), target };
    match seek.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(error) if error.to_string().contains(FOUND) => {
            error.location().map(|location| (location.line(), location.column()))
        }
        _ => None,
    }
}

/// Follows `path`; fails with [`FOUND`] at the target.
struct Seek<'a> {
    path: &'a [Segment],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Seek<'_> {
    /// A scalar: the target if the path ends here, else the path does not exist.
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() { Err(E::custom(FOUND)) } else { Ok(()) }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Segment::Key(name) = first else {
            return skip_map(map);
        };
        let fail_at = match self.target {
            Target::Key { occurrence } if rest.is_empty() => Some(occurrence),
            _ => None,
        };
        let mut seen = 0;
        while let Some(matched) = map.next_key_seed(KeySeed { name, fail_at, seen: &mut seen })? {
            if matched && seen == 1 && fail_at.is_none() {
                map.next_value_seed(Seek { path: rest, target: self.target })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Segment::Index(index) = *first else {
            return skip_seq(seq);
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek { path: rest, target: self.target })?;
        skip_seq(seq)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads one mapping key as text (as serde reads string keys, so `1` is `"1"`) and says whether
/// it is the one sought; fails on the `fail_at`-th match when the key itself is the target.
struct KeySeed<'a> {
    name: &'a str,
    fail_at: Option<usize>,
    seen: &'a mut usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.name {
            return Ok(false);
        }
        let occurrence = *self.seen;
        *self.seen += 1;
        if self.fail_at == Some(occurrence) { Err(E::custom(FOUND)) } else { Ok(true) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> KeyPath {
        segments.iter().fold(KeyPath::root(), |path, segment| {
            match segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(index) => path.index(index.parse().unwrap()),
                None => path.key(segment),
            }
        })
    }

    const YAML: &str = "\
log_level: info
processes:
  web:
    command: serve
    environment:
      - A=1
      - B
    depends_on:
      db: {condition: process_healthy}
  1:
    command: x
";

    #[test]
    fn finds_keys_and_values_in_block_yaml() {
        let web = path(&["processes", "web", "command"]);
        assert_eq!(locate(YAML, &web, Target::KEY), Some((4, 5)));
        assert_eq!(locate(YAML, &web, Target::Value), Some((4, 14)));
        assert_eq!(
            locate(YAML, &path(&["processes", "web", "environment", "[1]"]), Target::Value),
            Some((7, 9))
        );
        let condition = path(&["processes", "web", "depends_on", "db", "condition"]);
        assert_eq!(locate(YAML, &condition, Target::Value), Some((9, 23)));
        assert_eq!(locate(YAML, &path(&["processes", "1"]), Target::KEY), Some((10, 3)));
    }

    #[test]
    fn finds_nodes_in_one_line_json() {
        let json = r#"{"processes": {"web": {"command": "x", "environment": ["A=1", "B"]}, "db": {"entrypoint": []}}}"#;
        let entry = path(&["processes", "web", "environment", "[1]"]);
        assert_eq!(locate(json, &entry, Target::Value), Some((1, 63)));
        assert_eq!(locate(json, &path(&["processes", "db"]), Target::KEY), Some((1, 70)));
        assert_eq!(locate(json, &path(&["processes", "db", "entrypoint"]), Target::Value), Some((1, 91)));
    }

    #[test]
    fn missing_paths_and_broken_documents_have_no_location() {
        assert_eq!(locate(YAML, &path(&["processes", "nope"]), Target::KEY), None);
        assert_eq!(locate(YAML, &path(&["log_level", "deeper"]), Target::KEY), None);
        assert_eq!(locate(YAML, &path(&["processes", "web", "environment", "[9]"]), Target::Value), None);
        assert_eq!(locate("a: [\nb: 1\n", &path(&["b"]), Target::KEY), None);
        assert_eq!(locate("", &path(&["a"]), Target::KEY), None);
    }

    #[test]
    fn nodes_before_a_syntax_error_are_found() {
        assert_eq!(locate("a: [", &path(&["a"]), Target::KEY), Some((1, 1)));
    }

    #[test]
    fn follows_aliases_and_counts_repeated_keys() {
        let text = "x: &a {b: 1}\ny: *a\nz: 1\nz: 2\n";
        assert_eq!(locate(text, &path(&["y", "b"]), Target::Value), Some((1, 11)));
        assert_eq!(locate(text, &path(&["z"]), Target::Key { occurrence: 1 }), Some((4, 1)));
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(locate("{\"é\": 1, \"b\": 2}", &path(&["b"]), Target::KEY), Some((1, 10)));
    }

    #[test]
    fn paths_print_like_accessors() {
        assert_eq!(
            path(&["processes", "web", "environment", "[2]"]).to_string(),
            "processes.web.environment[2]"
        );
        assert_eq!(path(&["processes", "web"]).process(), Some("web"));
        assert_eq!(path(&["environment", "[0]"]).process(), None);
    }
}

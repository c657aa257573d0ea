//! The first pass: the text as a YAML document, with syntax errors made readable.
//!
//! Nothing else can run on a document that does not parse, so these errors end the file's
//! check. libyaml's messages are kept, minus the positions that the `file:line:col` prefix
//! already gives, plus a hint for the mistakes people make most (tabs, several documents).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;

use super::locate::{self, KeyPath, Target};

/// A problem found in one file's text, already located (or not locatable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// Parses `text` as one YAML document. An empty document (or only comments) is `Null`.
pub(super) fn document(text: &str) -> Result<Value, Vec<Located>> {
    match serde_yaml::from_str::<Value>(text) {
        Ok(value) => {
            let mut tagged = Vec::new();
            find_tags(&value, &KeyPath::root(), &mut tagged);
            if tagged.is_empty() { Ok(value) } else { Err(tag_errors(text, tagged)) }
        }
        Err(error) if error.to_string().contains("duplicate entry with key") => {
            let duplicates = duplicate_keys(text);
            Err(if duplicates.is_empty() { vec![from_yaml_error(&error, text)] } else { duplicates })
        }
        Err(error) if error.to_string().contains("more than one document") => Err(vec![Located {
            location: second_document(text),
            message: "a config file holds one YAML document; this one has several (a line `---` starts \
                      another): merge them into one, or pass each with its own --config"
                .into(),
        }]),
        Err(error) if error.to_string() == "repetition limit exceeded" => Err(vec![Located {
            location: Some((1, 1)),
            message: "the document's aliases (`*name`) expand to far more than the document itself; \
                      repeat less, or generate the file"
                .into(),
        }]),
        Err(error) => Err(vec![from_yaml_error(&error, text)]),
    }
}

/// The paths of nodes with a YAML tag (`!name value`), and the tags.
fn find_tags(value: &Value, path: &KeyPath, out: &mut Vec<(KeyPath, String)>) {
    match value {
        Value::Tagged(tagged) => out.push((path.clone(), tagged.tag.to_string())),
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                find_tags(item, &path.index(index), out);
            }
        }
        Value::Mapping(mapping) => {
            for (key, item) in mapping {
                if let Some(key) = key.as_str() {
                    find_tags(item, &path.key(key), out);
                }
            }
        }
        _ => {}
    }
}

/// Tags mean nothing to the config (serde would read `!name` as an enum variant and fail with a
/// confusing message): each is an error at its key.
fn tag_errors(text: &str, tagged: Vec<(KeyPath, String)>) -> Vec<Located> {
    tagged
        .into_iter()
        .map(|(path, tag)| Located {
            location: locate::locate(text, &path, Target::KEY),
            message: format!("{path}: YAML tags such as `{tag}` are not supported; remove it"),
        })
        .collect()
}

/// A serde_yaml error as a located message: positions inside the message that repeat the
/// location are dropped, others are shortened to `line:col`.
pub(super) fn from_yaml_error(error: &serde_yaml::Error, text: &str) -> Located {
    let (message, offset) = split_offset(&error.to_string());
    let location = match offset {
        Some(offset) => Some(position_of(text, offset)),
        None => error.location().map(|l| within_text(text, (l.line(), l.column()))),
    };
    let mut message = tidy_positions(&message, error.location().map(|l| (l.line(), l.column())));
    if location.is_some_and(|(line, column)| char_at(text, line, column) == Some('\t')) {
        message.push_str(" (YAML does not allow tabs for indentation: use spaces)");
    }
    Located { location, message }
}

/// Rewrites libyaml's " at line L column C" positions: the one equal to `location` goes, others
/// become " at L:C".
fn tidy_positions(message: &str, location: Option<(usize, usize)>) -> String {
    const MARKER: &str = " at line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(MARKER) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MARKER.len()..];
        match parse_position(after) {
            Some((position, consumed)) => {
                if Some(position) != location {
                    out.push_str(&format!(" at {}:{}", position.0, position.1));
                }
                rest = &after[consumed..];
            }
            None => {
                out.push_str(MARKER);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses "L column C" at the start of `text`: the position and how many bytes it took.
fn parse_position(text: &str) -> Option<((usize, usize), usize)> {
    let line_len = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let line = text[..line_len].parse().ok()?;
    let after_line = text[line_len..].strip_prefix(" column ")?;
    let column_len = after_line.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_line.len());
    let column = after_line[..column_len].parse().ok()?;
    Some(((line, column), text.len() - after_line.len() + column_len))
}

/// libyaml's reader errors (control characters, bad encodings) carry a byte offset, " at
/// position N", instead of a line and column: the message without it, and the offset.
fn split_offset(message: &str) -> (String, Option<usize>) {
    const MARKER: &str = " at position ";
    let Some(start) = message.find(MARKER) else { return (message.to_string(), None) };
    let digits = &message[start + MARKER.len()..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    match digits[..end].parse() {
        Ok(offset) => (format!("{}{}", &message[..start], &digits[end..]), Some(offset)),
        Err(_) => (message.to_string(), None),
    }
}

/// The 1-based line and column (in characters) of a byte offset into `text`.
pub(super) fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// libyaml places "unexpected end" problems on a line after the last one when the text does not
/// end with a newline (one-line JSON from Nix, typically): point at the end of the text instead.
fn within_text(text: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let lines = text.lines().count();
    match text.lines().last() {
        Some(last) if line > lines && !text.ends_with('\n') => (lines, last.chars().count() + 1),
        _ => (line, column),
    }
}

/// The character at a 1-based line and column (in characters, as libyaml counts).
fn char_at(text: &str, line: usize, column: usize) -> Option<char> {
    text.lines().nth(line.checked_sub(1)?)?.chars().nth(column.checked_sub(1)?)
}

/// The line of the `---` that starts a second document, found in the text (libyaml's error for
/// it carries no position).
fn second_document(text: &str) -> Option<(usize, usize)> {
    let mut content_seen = false;
    for (index, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker && content_seen {
            return Some((index + 1, 1));
        }
        let trimmed = line.trim_start();
        if !is_marker && !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%') {
            content_seen = true;
        }
    }
    None
}

/// Every repeated key in the document, located at its second (third, …) occurrence. serde_yaml
/// reports only the first duplicate, at the start of its mapping.
fn duplicate_keys(text: &str) -> Vec<Located> {
    let mut found = Vec::new();
    let finder = DuplicateFinder { path: KeyPath::root(), found: &mut found };
    if finder.deserialize(serde_yaml::Deserializer::from_str(text)).is_err() {
        return Vec::new();
    }
    found
        .into_iter()
        .map(|(path, occurrence)| {
            let first = match locate::locate(text, &path, Target::KEY) {
                Some((line, column)) => format!(", first defined at {line}:{column}"),
                None => String::new(),
            };
            Located {
                location: locate::locate(text, &path, Target::Key { occurrence }),
                message: format!("{path}: duplicate key{first}"),
            }
        })
        .collect()
}

/// Walks the whole document and records `(path of the key, occurrence)` for each repeat.
struct DuplicateFinder<'a> {
    path: KeyPath,
    found: &'a mut Vec<(KeyPath, usize)>,
}

impl<'de> DeserializeSeed<'de> for DuplicateFinder<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateFinder<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let count = seen.entry(key.clone()).or_default();
            let path = self.path.key(&key);
            if *count > 0 {
                self.found.push((path, *count));
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(DuplicateFinder { path, found: self.found })?;
            }
            *count += 1;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(DuplicateFinder { path: self.path.index(index), found: self.found })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let errors = document(text).unwrap_err();
        errors
            .into_iter()
            .map(|e| match e.location {
                Some((line, column)) => format!("{line}:{column}: {}", e.message),
                None => format!("?: {}", e.message),
            })
            .collect()
    }

    #[test]
    fn empty_and_comment_only_documents_are_null() {
        for text in ["", "\n\n", "# only a comment\n", "---\n", "~\n"] {
            assert_eq!(document(text).unwrap(), Value::Null, "{text:?}");
        }
    }

    #[test]
    fn tabs_get_a_hint() {
        assert_eq!(
            errors("processes:\n\tweb: {}\n"),
            ["2:1: found character that cannot start any token, while scanning for the next token \
              (YAML does not allow tabs for indentation: use spaces)"]
        );
    }

    #[test]
    fn unclosed_quotes_and_brackets_are_located() {
        assert_eq!(
            errors("a: \"open\nb: 1\n"),
            ["3:1: found unexpected end of stream, while scanning a quoted scalar at 1:4"]
        );
        assert_eq!(
            errors("a: [1, 2\nb: 3\n"),
            ["2:2: did not find expected ',' or ']', while parsing a flow sequence at 1:4"]
        );
        assert_eq!(
            errors("{\"a\": 1"),
            ["1:8: did not find expected ',' or '}', while parsing a flow mapping"]
        );
    }

    #[test]
    fn every_duplicate_key_is_reported_where_it_repeats() {
        let text =
            "log_level: info\nprocesses:\n  web:\n    command: a\n    command: b\n  web: {}\nlog_level: x\n";
        assert_eq!(
            errors(text),
            [
                "5:5: processes.web.command: duplicate key, first defined at 4:5",
                "6:3: processes.web: duplicate key, first defined at 3:3",
                "7:1: log_level: duplicate key, first defined at 1:1"
            ]
        );
    }

    #[test]
    fn several_documents_point_at_the_second() {
        assert_eq!(
            errors("# c\n---\na: 1\n---\nb: 2\n"),
            [
                "4:1: a config file holds one YAML document; this one has several (a line `---` starts another): \
              merge them into one, or pass each with its own --config"
            ]
        );
    }

    #[test]
    fn garbage_and_deep_nesting_are_located() {
        assert_eq!(errors("\u{1}\u{2}abc: \u{7f}"), ["1:1: control characters are not allowed"]);
        assert_eq!(errors("a: b\nc: \u{e9}\u{7}\n"), ["2:5: control characters are not allowed"]);
        assert_eq!(errors(&"[".repeat(500)), ["1:129: recursion limit exceeded"]);
        assert_eq!(errors("a: *nowhere\n"), ["1:4: unknown anchor"]);
        assert_eq!(errors("a: b: c\n"), ["1:5: mapping values are not allowed in this context"]);
    }

    #[test]
    fn tags_are_rejected_where_they_are() {
        assert_eq!(
            errors("log_level: !custom info\nprocesses:\n  web: {command: !x y}\n"),
            [
                "1:1: log_level: YAML tags such as `!custom` are not supported; remove it",
                "3:9: processes.web.command: YAML tags such as `!x` are not supported; remove it",
            ]
        );
    }

    #[test]
    fn positions_are_tidied() {
        assert_eq!(
            tidy_positions("x at line 1 column 2, while y at line 3 column 4", Some((1, 2))),
            "x, while y at 3:4"
        );
        assert_eq!(tidy_positions("at line one", None), "at line one");
    }
}

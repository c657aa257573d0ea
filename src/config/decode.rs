//! The typed pass: the document deserialized into the config types, collecting every type
//! error rather than stopping at the first.
//!
//! serde stops at the first error. To go on, the top level and each process are deserialized on
//! their own, in place in the document (so serde_yaml still attaches the line and column of the
//! offending value), and a key whose value failed is skipped on the next attempt. Each attempt
//! skips one more key, so this ends; what is left is a partial configuration, good enough to
//! check the rest of the file against.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};

use super::locate::{KeyPath, Segment};
use super::{Config, Process};

/// What the typed pass made of a document.
pub(super) struct Decoded {
    /// The settings that deserialized; keys with errors are left at their defaults.
    pub config: Config,
    pub errors: Vec<serde_yaml::Error>,
    /// Processes with a type error: their own checks would only repeat it.
    pub broken_processes: BTreeSet<String>,
}

/// Deserializes `text`, a document that parsed as YAML.
pub(super) fn decode(text: &str) -> Decoded {
    // The usual case, a document without type errors, takes one pass.
    if let Ok(config) = serde_yaml::from_str::<Config>(text) {
        return Decoded { config, errors: Vec::new(), broken_processes: BTreeSet::new() };
    }
    let top = KeyPath::root();
    let (config, mut errors) =
        decode_skipping::<Config>(text, &top, BTreeSet::from(["processes".to_string()]));
    let mut config = config.unwrap_or_default();
    let mut broken_processes = BTreeSet::new();
    let (names, name_errors) =
        decode_skipping::<BTreeMap<String, IgnoredAny>>(text, &top.key("processes"), BTreeSet::new());
    errors.extend(name_errors);
    for name in names.unwrap_or_default().into_keys() {
        let (process, process_errors) =
            decode_skipping::<Process>(text, &top.key("processes").key(&name), BTreeSet::new());
        if !process_errors.is_empty() {
            errors.extend(process_errors);
            broken_processes.insert(name.clone());
        }
        if let Some(process) = process {
            config.processes.insert(name, process);
        }
    }
    Decoded { config, errors, broken_processes }
}

/// Deserializes the mapping at `path` as a `T`, retrying without each key whose value fails.
/// `None` when there is no such mapping (or it is not one: that error is returned).
fn decode_skipping<T: DeserializeOwned>(
    text: &str,
    path: &KeyPath,
    mut skip: BTreeSet<String>,
) -> (Option<T>, Vec<serde_yaml::Error>) {
    let mut errors = Vec::new();
    loop {
        let failed_key = RefCell::new(None);
        let seed =
            At::<T> { path: path.segments(), skip: &skip, failed_key: &failed_key, output: PhantomData };
        match seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
            Ok(value) => return (value, errors),
            Err(error) => {
                errors.push(error);
                match failed_key.into_inner() {
                    Some(key) if !skip.contains(&key) => {
                        skip.insert(key);
                    }
                    _ => return (None, errors),
                }
            }
        }
    }
}

/// Walks to the mapping at `path` and deserializes a `T` from it without the keys in `skip`;
/// records in `failed_key` the key whose value failed, if one did.
struct At<'a, T> {
    path: &'a [Segment],
    skip: &'a BTreeSet<String>,
    failed_key: &'a RefCell<Option<String>>,
    output: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for At<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        if self.path.is_empty() {
            deserializer.deserialize_map(Target(self)).map(Some)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

/// On the way to the target: a mapping is searched for the next key; any other node means the
/// path is not there, and there is nothing to deserialize.
impl<'de, T: DeserializeOwned> Visitor<'de> for At<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let Some((Segment::Key(name), rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if &key == name && found.is_none() {
                let seed =
                    At::<T> { path: rest, skip: self.skip, failed_key: self.failed_key, output: PhantomData };
                found = map.next_value_seed(seed)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// At the target: it must be a mapping, deserialized as a `T` without the skipped keys.
struct Target<'a, T>(At<'a, T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for Target<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let At { skip, failed_key, .. } = self.0;
        T::deserialize(FilteredMap(Filtered { map, skip, current: None, failed_key }))
    }
}

/// A mapping whose skipped keys are invisible, handed to `T::deserialize`.
struct FilteredMap<'a, A>(Filtered<'a, A>);

impl<'de, A: MapAccess<'de>> Deserializer<'de> for FilteredMap<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The entries of a mapping minus the skipped keys; remembers which key's value failed.
struct Filtered<'a, A> {
    map: A,
    skip: &'a BTreeSet<String>,
    current: Option<String>,
    failed_key: &'a RefCell<Option<String>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Filtered<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            if self.skip.contains(&key) {
                self.map.next_value::<IgnoredAny>()?;
                continue;
            }
            let deserializer: StrDeserializer<'_, A::Error> = key.as_str().into_deserializer();
            let value = seed.deserialize(deserializer)?;
            self.current = Some(key);
            return Ok(Some(value));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed).inspect_err(|_| {
            *self.failed_key.borrow_mut() = self.current.take();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> (Decoded, Vec<String>) {
        let decoded = decode(text);
        let errors = decoded
            .errors
            .iter()
            .map(|e| {
                let l = e.location().unwrap();
                format!("{}:{}: {}", l.line(), l.column(), e)
            })
            .collect();
        (decoded, errors)
    }

    #[test]
    fn a_valid_document_decodes_whole() {
        let (decoded, errors) =
            decoded("log_level: debug\nprocesses:\n  web: {command: serve}\n  db: {entrypoint: [pg]}\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(decoded.config.processes.len(), 2);
        assert_eq!(decoded.config.log_level, Some(super::super::LogLevel::Debug));
    }

    #[test]
    fn every_wrong_type_is_reported_and_the_rest_kept() {
        let text = "\
log_level: loud
log_length: -3
environment: A=1
processes:
  web:
    command: [serve]
    disabled: maybe
    working_dir: /srv
  db:
    entrypoint: pg
  ok:
    command: true
nix2gpu:
  shutdown_timeout_seconds: -1
";
        let (decoded, errors) = decoded(text);
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(errors[0].starts_with("1:12: log_level: unknown variant `loud`"), "{errors:#?}");
        assert!(
            errors[1].starts_with("2:13: log_length: invalid type: integer `-3`, expected usize"),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("3:14: environment: invalid type: string \"A=1\", expected a sequence"),
            "{errors:#?}"
        );
        assert!(
            errors[3].starts_with(
                "14:29: nix2gpu.shutdown_timeout_seconds: expected a non-negative number of seconds, got -1"
            ),
            "{errors:#?}"
        );
        assert!(
            errors[4].starts_with(
                "10:17: processes.db.entrypoint: invalid type: string \"pg\", expected a sequence"
            ),
            "{errors:#?}"
        );
        assert!(
            errors[5].starts_with("6:14: processes.web.command: invalid type: sequence, expected a string"),
            "{errors:#?}"
        );
        assert!(
            errors[6].starts_with(
                "7:15: processes.web.disabled: invalid type: string \"maybe\", expected a boolean"
            ),
            "{errors:#?}"
        );
        assert_eq!(decoded.broken_processes, BTreeSet::from(["db".to_string(), "web".to_string()]));
        assert_eq!(decoded.config.processes["web"].working_dir.as_deref(), Some("/srv"));
        assert_eq!(decoded.config.processes["ok"].command.as_deref(), Some("true"));
    }

    #[test]
    fn wrong_shapes_at_the_top_are_reported() {
        assert!(decoded("- a\n- b\n").1[0].starts_with("1:1: invalid type: sequence, expected a mapping"));
        assert!(
            decoded("processes: [a]\n").1[0]
                .starts_with("1:12: processes: invalid type: sequence, expected a mapping")
        );
        let (empty, errors) = decoded("processes:\n  web:\n");
        assert!(errors.is_empty() && empty.config.processes["web"] == Process::default(), "{errors:?}");
        assert!(
            decoded("just text").1[0]
                .starts_with("1:1: invalid type: string \"just text\", expected a mapping")
        );
    }

    #[test]
    fn huge_numbers_are_type_errors() {
        let errors = decoded("log_length: 99999999999999999999999999\nprocesses:\n  a:\n    readiness_probe: {tcp_socket: {port: 70000}}\n").1;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].contains("port 70000 is out of range: expected 1..=65535"), "{errors:?}");
    }
}

//! One `services.*_stores[]` entry: `id`, `type`, and the keys of that type.
//!
//! An entry is read in two steps so that each store kind can own its keys: first
//! `id`, `type` and the remaining keys as a YAML mapping ([`RawStore`]); then the
//! kind named by `type` deserializes the rest into its own config struct (with
//! `deny_unknown_fields`) and checks it ([`StoreKind`]). Errors carry the key path
//! inside the entry and whether they are about the key or its value, so the config
//! loader can point at `file:line:col`.

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Secret;

/// One entry as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawStore {
    /// Unique store id, used in logs and errors.
    pub id: String,
    /// Store type, looked up in the registry.
    #[serde(rename = "type")]
    pub kind: String,
    /// Every other key, checked by the store type.
    #[serde(flatten)]
    pub rest: serde_yaml::Mapping,
}

/// A store kind's config: the keys it accepts (its struct's fields), its checks
/// and how it shows in `check-config`. Starting the store is in [`super::EventKind`]
/// and [`super::ObjectKind`].
pub trait StoreKind: DeserializeOwned + Sized {
    /// The `type` value naming this kind.
    const NAME: &'static str;
    /// Other spellings accepted for keys (`url` for `endpoint`), not listed in
    /// error messages.
    const ALIASES: &'static [&'static str] = &[];

    /// Sets the store id (not one of the kind's keys) and fills defaults that
    /// depend on it.
    fn set_id(&mut self, id: String);

    /// The store id.
    fn id(&self) -> &str;

    /// Checks that span keys or need more than a type: run at load, so
    /// `check-config` refuses exactly what start-up refuses.
    fn check(&self) -> Result<(), KindError> {
        Ok(())
    }

    /// The store's settings for `check-config`, secrets masked.
    fn summary(&self) -> String;

    /// The credentials the store reads at start, with the key holding each.
    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        Vec::new()
    }
}

/// A kind-specific problem with one key's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KindError {
    /// The key the problem is about.
    pub key: &'static str,
    /// Whether the key itself or its value is wrong.
    pub at: At,
    /// What is wrong.
    pub message: String,
}

impl KindError {
    /// The value of `key` is refused.
    pub fn value(key: &'static str, message: String) -> Self {
        Self {
            key,
            at: At::Value,
            message,
        }
    }
}

/// One step of a key path inside an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Which end of `key: value` an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The key (wrong or misplaced keys; for an empty path, the entry).
    Key,
    /// The value.
    Value,
}

/// What is wrong with an entry.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A key no store type accepts.
    #[error("unknown field `{key}`, expected {expected}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys that are accepted, as serde lists them.
        expected: String,
    },
    /// A key that another store type accepts but this one does not.
    #[error("key `{key}` is not valid for store type `{kind}`")]
    NotValid {
        /// The key.
        key: String,
        /// The store type.
        kind: &'static str,
    },
    /// A required key is missing.
    #[error("missing required key `{key}` for store type `{kind}`")]
    Missing {
        /// The key.
        key: String,
        /// The store type.
        kind: &'static str,
    },
    /// `type` names no registered store kind.
    #[error("unknown variant `{name}`, expected {expected}")]
    UnknownType {
        /// The `type` value.
        name: String,
        /// The registered kinds.
        expected: String,
    },
    /// A value of the wrong type or shape.
    #[error(transparent)]
    Value(serde_yaml::Error),
    /// A value the store kind refuses.
    #[error(transparent)]
    Kind(KindError),
}

/// A store entry that cannot be used, with where in the entry the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct EntryError {
    /// Key path inside the entry; empty for the entry itself.
    pub path: Vec<KeyPart>,
    /// Whether the key or its value is wrong.
    pub at: At,
    /// What is wrong.
    pub problem: Problem,
}

impl EntryError {
    fn at_key(key: &str, problem: Problem) -> Self {
        Self {
            path: vec![KeyPart::Key(key.to_owned())],
            at: At::Key,
            problem,
        }
    }
}

impl RawStore {
    /// The error for a `type` no kind in `kinds` has.
    pub(crate) fn unknown_type(&self, kinds: &[&str]) -> EntryError {
        EntryError {
            path: vec![KeyPart::Key("type".to_owned())],
            at: At::Value,
            problem: Problem::UnknownType {
                name: self.kind.clone(),
                expected: one_of(kinds),
            },
        }
    }

    /// Builds kind `K`'s config from the entry. `all_keys` are the keys of every
    /// kind in the same list (for telling a misplaced key from an unknown one).
    pub(crate) fn parse<K: StoreKind>(self, all_keys: &[&'static str]) -> Result<K, EntryError> {
        let own = fields::<K>();
        for key in self.rest.keys() {
            let key = match key {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            if own.contains(&key.as_str()) || K::ALIASES.contains(&key.as_str()) {
                continue;
            }
            let problem = if all_keys.contains(&key.as_str()) {
                Problem::NotValid {
                    key: key.clone(),
                    kind: K::NAME,
                }
            } else {
                Problem::UnknownKey {
                    key: key.clone(),
                    expected: one_of(all_keys),
                }
            };
            return Err(EntryError::at_key(&key, problem));
        }
        let mut config: K = serde_path_to_error::deserialize(serde_yaml::Value::Mapping(self.rest))
            .map_err(|err| value_error(err, K::NAME))?;
        config.set_id(self.id);
        config.check().map_err(|e| EntryError {
            path: vec![KeyPart::Key(e.key.to_owned())],
            at: e.at,
            problem: Problem::Kind(e),
        })?;
        Ok(config)
    }
}

/// Turns a serde error inside an entry into an [`EntryError`]: a missing key is
/// about the entry, an unknown nested key about that key, the rest about a value.
fn value_error(
    err: serde_path_to_error::Error<serde_yaml::Error>,
    kind: &'static str,
) -> EntryError {
    let mut path: Vec<KeyPart> = err
        .path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(KeyPart::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(KeyPart::Index(*index)),
            _ => None,
        })
        .collect();
    let inner = err.into_inner();
    let message = inner.to_string();
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    if path.is_empty()
        && let Some(key) = quoted("missing field `")
    {
        return EntryError {
            path,
            at: At::Key,
            problem: Problem::Missing { key, kind },
        };
    }
    if let Some(key) = quoted("unknown field `") {
        if path.last() != Some(&KeyPart::Key(key.clone())) {
            path.push(KeyPart::Key(key));
        }
        return EntryError {
            path,
            at: At::Key,
            problem: Problem::Value(inner),
        };
    }
    EntryError {
        path,
        at: At::Value,
        problem: Problem::Value(inner),
    }
}

/// `a`, `a or b`, `one of a, b, c` — serde's wording, with backticks.
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        many => {
            let list: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", list.join(", "))
        }
    }
}

/// The field names of a struct's `Deserialize` impl (what `deny_unknown_fields`
/// accepts, aliases included), read by asking it to deserialize from a probe that
/// only records them.
pub(crate) fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only the field names are read")]
    struct Two {
        first: u32,
        #[serde(default, alias = "other")]
        second: Option<String>,
    }

    #[test]
    fn fields_lists_a_structs_keys_and_aliases() {
        assert_eq!(fields::<Two>(), ["first", "other", "second"]);
    }

    #[test]
    fn one_of_follows_serde() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b"]), "`a` or `b`");
        assert_eq!(one_of(&["a", "b", "c"]), "one of `a`, `b`, `c`");
    }
}

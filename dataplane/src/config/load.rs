//! Strict loading: every error names `file:line:col`, the key path and what is wrong.

use std::collections::HashMap;
use std::path::Path;

use super::locate::{Segment, Target, locate};
use tapwire_store::config::{At, EntryError, EventStoreConfig, KeyPart, ObjectStoreConfig};

use super::model::{Config, RawConfig, RecordsTo, Services, Tap};
use crate::plugins::{PathStep, Refusal, StackError};

/// The only `version` this loader reads.
const SUPPORTED_VERSION: u32 = 2;

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config")]
    Read {
        /// The path given.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{file}:{line}:{col}: {path}: {message}")]
    Invalid {
        /// The path given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// Dotted key path (`services.object_stores[0].bucket`), `.` for the document.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and validates the config at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parses and validates config `text`; `file` is the name used in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let invalid_at = |path: &[Segment<'_>], at: Target, message: String| {
        let pos = locate(text, path, at);
        ConfigError::Invalid {
            file: file.to_owned(),
            line: pos.line,
            col: pos.col,
            path: render_path(path),
            message,
        }
    };

    let raw: RawConfig = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|err| serde_error(file, err))?;

    if raw.version != SUPPORTED_VERSION {
        return Err(invalid_at(
            &[Segment::Key("version")],
            Target::Value,
            format!(
                "unsupported version {}, expected {SUPPORTED_VERSION}",
                raw.version
            ),
        ));
    }

    let mut raw_objects = raw.services.object_stores;
    // `event_store` is a key of every object store entry, read here rather
    // than by each store kind.
    let event_store_key = serde_yaml::Value::from("event_store");
    let event_store_refs: Vec<Option<serde_yaml::Value>> = raw_objects
        .iter_mut()
        .map(|s| s.rest.remove(&event_store_key))
        .collect();
    let mut services = Services {
        event_stores: validate_stores(
            raw.services.event_stores,
            "event_stores",
            |s| &s.id,
            EventStoreConfig::from_raw,
            &invalid_at,
        )?,
        object_stores: validate_stores(
            raw_objects,
            "object_stores",
            |s| &s.id,
            ObjectStoreConfig::from_raw,
            &invalid_at,
        )?,
        records: Vec::new(),
    };
    let event_store_ids: Vec<&str> = services.event_stores.iter().map(|s| s.id()).collect();
    let mut records = Vec::with_capacity(event_store_refs.len());
    for (i, value) in event_store_refs.into_iter().enumerate() {
        let at = |key: Option<&'static str>, target, message| {
            let mut path = vec![
                Segment::Key("services"),
                Segment::Key("object_stores"),
                Segment::Index(i),
                Segment::Key("event_store"),
            ];
            path.extend(key.map(Segment::Key));
            invalid_at(&path, target, message)
        };
        records.push(
            records_to(value, &event_store_ids).map_err(|(key, message)| {
                let target = if key.is_some() {
                    Target::Value
                } else {
                    Target::Key
                };
                at(key, target, message)
            })?,
        );
    }
    services.records = records;

    refuse_unapplied_tap(&raw.tap).map_err(|r| refusal(&r, &invalid_at))?;
    let filters = crate::capture::filters::ProcessFilters::compile(&raw.tap.filters)
        .map_err(|r| refusal(&r, &invalid_at))?;
    let object_store_ids: Vec<&str> = services.object_stores.iter().map(|s| s.id()).collect();
    let http = crate::plugins::compile(&raw.stacks, &raw.tap, &raw.rulekit, &object_store_ids)
        .map_err(|e| match e {
            StackError::Refused(r) => refusal(&r, &invalid_at),
            StackError::Expression { path, col, message } => {
                expression_error(text, file, &path, col, message)
            }
        })?;

    if let Some(budget) = raw.tapwire.memory_budget
        && budget.0 < crate::pipeline::budget::MIN_MEMORY_BUDGET as u64
    {
        let path = [Segment::Key("tapwire"), Segment::Key("memory_budget")];
        return Err(invalid_at(
            &path,
            Target::Value,
            format!(
                "{} bytes is below the minimum of {} MiB",
                budget.0,
                crate::pipeline::budget::MIN_MEMORY_BUDGET >> 20
            ),
        ));
    }
    if raw.tapwire.idle_timeout == Some(super::model::Seconds(0)) {
        let path = [Segment::Key("tapwire"), Segment::Key("idle_timeout")];
        return Err(invalid_at(
            &path,
            Target::Value,
            "must be at least 1s".to_owned(),
        ));
    }

    Ok(Config {
        services,
        stacks: raw.stacks,
        tap: raw.tap,
        http,
        filters,
        tapwire: raw.tapwire,
    })
}

/// Refuses `tap` settings this version does not apply, rather than accept
/// and ignore them.
fn refuse_unapplied_tap(tap: &Tap) -> Result<(), Refusal> {
    let key = |k: &str| PathStep::Key(k.to_owned());
    if tap.audit_include_dns {
        return Err(Refusal {
            path: vec![key("tap"), key("audit_include_dns")],
            at_key: false,
            message: "`true` needs DNS capture, which tapwire does not have".to_owned(),
        });
    }
    Ok(())
}

/// A refusal from a later check, located in the text.
fn refusal(
    r: &Refusal,
    invalid_at: &dyn Fn(&[Segment<'_>], Target, String) -> ConfigError,
) -> ConfigError {
    let path = segments(&r.path);
    let target = if r.at_key { Target::Key } else { Target::Value };
    invalid_at(&path, target, r.message.clone())
}

/// An expression error, pointed at its column inside the `expr` value when the
/// value is written on one line (plain or quoted), else at the value.
fn expression_error(
    text: &str,
    file: &str,
    path: &[PathStep],
    col: usize,
    message: String,
) -> ConfigError {
    let segments = segments(path);
    let pos = locate(text, &segments, Target::Value);
    let line = text.lines().nth(pos.line - 1).unwrap_or("");
    let value: String = line.chars().skip(pos.col - 1).collect();
    let inline = !value.starts_with(['|', '>']);
    let quote = usize::from(value.starts_with(['"', '\'']));
    ConfigError::Invalid {
        file: file.to_owned(),
        line: pos.line,
        col: if inline {
            pos.col + quote + col - 1
        } else {
            pos.col
        },
        path: render_path(&segments),
        message,
    }
}

fn segments(path: &[PathStep]) -> Vec<Segment<'_>> {
    path.iter()
        .map(|step| match step {
            PathStep::Key(k) => Segment::Key(k),
            PathStep::Index(i) => Segment::Index(*i),
        })
        .collect()
}

/// `event_store` of an object store as written: Qtap's choice of the event
/// store that receives the object store's `artifact_record` events.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventStoreRef {
    /// The event store's `id`; every event store when absent.
    #[serde(default)]
    id: Option<String>,
    /// No `artifact_record` events at all.
    #[serde(default)]
    disabled: bool,
}

/// Where `value` (an object store's `event_store`) sends records, `event_stores`
/// being the event store ids; else the key at fault (`None`: `event_store`
/// itself) and why.
fn records_to(
    value: Option<serde_yaml::Value>,
    event_stores: &[&str],
) -> Result<RecordsTo, (Option<&'static str>, String)> {
    let Some(value) = value else {
        return Ok(RecordsTo::Every);
    };
    let r: EventStoreRef = serde_yaml::from_value(value).map_err(|e| (None, e.to_string()))?;
    match r.id {
        _ if r.disabled => Ok(RecordsTo::Off),
        None => Ok(RecordsTo::Every),
        Some(id) if event_stores.contains(&id.as_str()) => Ok(RecordsTo::Store(id)),
        Some(id) => Err((
            Some("id"),
            unknown_id("event store", &id, event_stores, "services.event_stores"),
        )),
    }
}

/// Why `id` names no `what` (`object store`) of `ids`, the ids of the list at
/// key path `list`.
pub(crate) fn unknown_id(what: &str, id: &str, ids: &[&str], list: &str) -> String {
    if ids.is_empty() {
        return format!("unknown {what} `{id}`: `{list}` is empty");
    }
    let ids: Vec<String> = ids.iter().map(|s| format!("`{s}`")).collect();
    format!("unknown {what} `{id}`, expected one of {}", ids.join(", "))
}

/// Checks one store list: ids unique within it, keys fitting each store's type.
fn validate_stores<R, T>(
    raw: Vec<R>,
    list: &'static str,
    id: impl Fn(&R) -> &str,
    validate: impl Fn(R) -> Result<T, EntryError>,
    invalid_at: &dyn Fn(&[Segment<'_>], Target, String) -> ConfigError,
) -> Result<Vec<T>, ConfigError> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, store) in raw.into_iter().enumerate() {
        let here = [
            Segment::Key("services"),
            Segment::Key(list),
            Segment::Index(i),
        ];
        let store_id = id(&store).to_owned();
        check_unique(&mut seen, &store_id, i, |first| {
            invalid_at(
                &with(&here, "id"),
                Target::Value,
                duplicate(&store_id, list, first),
            )
        })?;
        let store = validate(store).map_err(|err| {
            let mut path = here.to_vec();
            path.extend(err.path.iter().map(|part| match part {
                KeyPart::Key(key) => Segment::Key(key),
                KeyPart::Index(i) => Segment::Index(*i),
            }));
            let target = match err.at {
                At::Key => Target::Key,
                At::Value => Target::Value,
            };
            invalid_at(&path, target, err.to_string())
        })?;
        out.push(store);
    }
    Ok(out)
}

fn with<'a>(base: &[Segment<'a>; 3], key: &'a str) -> [Segment<'a>; 4] {
    [
        base[0].clone(),
        base[1].clone(),
        base[2].clone(),
        Segment::Key(key),
    ]
}

fn duplicate(id: &str, list: &str, first: usize) -> String {
    format!("duplicate store id `{id}` (already used by {list}[{first}])")
}

fn check_unique(
    seen: &mut HashMap<String, usize>,
    id: &str,
    index: usize,
    err: impl FnOnce(usize) -> ConfigError,
) -> Result<(), ConfigError> {
    match seen.get(id) {
        Some(&first) => Err(err(first)),
        None => {
            seen.insert(id.to_owned(), index);
            Ok(())
        }
    }
}

fn render_path(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

/// Turns a serde error into `file:line:col: path: message`, keeping serde_yaml's
/// position where it has one.
fn serde_error(file: &str, err: serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let mut path = err.path().to_string();
    let inner = err.into_inner();
    let mut message = inner.to_string();
    // serde_yaml appends " at line L column C" to its messages; the position is
    // printed up front instead.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    // serde_yaml starts nested messages with the path; it is printed separately.
    if let Some((prefix, rest)) = message.split_once(": ")
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    // An unknown key is not always part of the path serde tracked; add it so the
    // path names the offending key itself.
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        && path.rsplit(['.', ']']).next() != Some(key)
    {
        path = if path == "." {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
    }
    let (line, col) = match inner.location() {
        Some(loc) => (loc.line(), loc.column()),
        None => (1, 1),
    };
    ConfigError::Invalid {
        file: file.to_owned(),
        line,
        col,
        path,
        message,
    }
}

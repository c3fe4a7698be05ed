//! The stores part of `tapwire check-config`'s account of the plan: the
//! stores it would start, with secrets masked. Reads no secrets.

use std::fmt::Write;

use crate::config::{Config, RecordsTo};

/// `FILE: ok` and one line per store of `config`, secrets masked.
pub fn stores(file: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: ok");
    for store in &config.services.event_stores {
        let _ = writeln!(out, "event store `{}`: {}", store.id(), store.summary());
    }
    for (store, (_, records)) in config
        .services
        .object_stores
        .iter()
        .zip(config.services.record_routes())
    {
        let records = match records {
            RecordsTo::Every => String::new(),
            RecordsTo::Store(id) => format!("; artifact_record events to `{id}`"),
            RecordsTo::Off => "; no artifact_record events".to_owned(),
        };
        let _ = writeln!(
            out,
            "object store `{}`: {}{records}",
            store.id(),
            store.summary()
        );
    }
    out
}

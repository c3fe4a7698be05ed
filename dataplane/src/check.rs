//! The stores part of `tapwire check-config`'s account of the plan: the
//! stores it would start, with secrets masked. Reads no secrets.

use std::fmt::Write;

use crate::config::Config;

/// `FILE: ok` and one line per store of `config`, secrets masked.
pub fn stores(file: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: ok");
    for store in &config.services.event_stores {
        let _ = writeln!(out, "event store `{}`: {}", store.id(), store.summary());
    }
    for store in &config.services.object_stores {
        let _ = writeln!(out, "object store `{}`: {}", store.id(), store.summary());
    }
    out
}

//! The stores part of `tapwire check-config`'s account of the plan: the
//! stores it would start, with secrets masked. Reads no secrets.

use std::fmt::Write;

use tapwire_store::config::{EventStoreConfig, ObjectStoreConfig};

use crate::config::Config;

/// `FILE: ok` and one line per store of `config`, secrets masked.
pub fn stores(file: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: ok");
    for store in &config.services.event_stores {
        match store {
            EventStoreConfig::Stdout { id } => {
                let _ = writeln!(out, "event store `{id}`: stdout");
            }
            EventStoreConfig::Pulse(p) => {
                let token = p.token.as_ref().map_or("none".to_owned(), |t| t.describe());
                let _ = writeln!(
                    out,
                    "event store `{}`: pulse endpoint={} token={token} batch_max_events={} \
                     batch_max_delay_ms={} queue_capacity={}",
                    p.id, p.endpoint, p.batch_max_events, p.batch_max_delay_ms, p.queue_capacity
                );
            }
        }
    }
    for store in &config.services.object_stores {
        match store {
            ObjectStoreConfig::Stdout { id } => {
                let _ = writeln!(out, "object store `{id}`: stdout");
            }
            ObjectStoreConfig::S3(s) => {
                let _ = writeln!(
                    out,
                    "object store `{}`: s3 endpoint={} bucket={} region={} insecure={} \
                     access_url={} access_key={} secret_key={} spool_dir={} \
                     spool_max_bytes={} concurrency={} multipart_threshold_bytes={} \
                     multipart_part_bytes={} startup_check={:?}",
                    s.id,
                    s.endpoint,
                    s.bucket,
                    s.region,
                    s.insecure,
                    s.access_url,
                    s.access_key.describe(),
                    s.secret_key.describe(),
                    s.spool_dir,
                    s.spool_max_bytes,
                    s.concurrency,
                    s.multipart_threshold_bytes,
                    s.multipart_part_bytes,
                    s.startup_check,
                );
            }
        }
    }
    out
}

//! The `services` section of `qpoint.yaml` (version 2): event and object stores.
//!
//! Entries are parsed as flat structs (every key any store type accepts) so that
//! serde_yaml reports unknown keys and wrong types at their exact line and column;
//! [`RawEventStore::validate`]/[`RawObjectStore::validate`] then check that the keys
//! present fit the store `type` and build the typed [`EventStoreConfig`] /
//! [`ObjectStoreConfig`].

use serde::{Deserialize, Serialize};

/// A credential: read from the environment (`type: env`) or given inline (`type: text`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Where the value comes from.
    #[serde(rename = "type")]
    pub source: SecretSource,
    /// The environment variable's name (`env`) or the secret itself (`text`).
    pub value: String,
}

/// Where a [`Secret`]'s value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// `value` names an environment variable, read at start-up.
    Env,
    /// `value` is the secret itself (accepted with a warning: it sits in the file).
    Text,
}

/// A secret resolution failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The named variable is unset or empty.
    #[error("store `{store}`: environment variable `{var}` for `{key}` is not set")]
    Unset {
        /// The store id.
        store: String,
        /// The config key holding the secret (`access_key`, `token`, …).
        key: &'static str,
        /// The environment variable.
        var: String,
    },
    /// The named variable is set to the empty string.
    #[error("store `{store}`: environment variable `{var}` for `{key}` is empty")]
    Empty {
        /// The store id.
        store: String,
        /// The config key holding the secret.
        key: &'static str,
        /// The environment variable.
        var: String,
    },
}

impl Secret {
    /// Resolves the secret's value now, reading the environment for `type: env`.
    pub fn resolve(&self, store: &str, key: &'static str) -> Result<String, SecretError> {
        match self.source {
            SecretSource::Text => Ok(self.value.clone()),
            SecretSource::Env => match std::env::var_os(&self.value) {
                None => Err(SecretError::Unset {
                    store: store.to_owned(),
                    key,
                    var: self.value.clone(),
                }),
                Some(v) if v.is_empty() => Err(SecretError::Empty {
                    store: store.to_owned(),
                    key,
                    var: self.value.clone(),
                }),
                Some(v) => Ok(v.to_string_lossy().into_owned()),
            },
        }
    }

    /// How the secret is shown in `check-config` output: never its value.
    pub fn describe(&self) -> String {
        match self.source {
            SecretSource::Env => format!("env:{}", self.value),
            SecretSource::Text => "text:********".to_owned(),
        }
    }
}

/// Event store types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStoreType {
    /// NDJSON on standard output.
    Stdout,
    /// NDJSON batches POSTed to a Pulse service.
    Pulse,
}

/// Object store types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreType {
    /// NDJSON lines with base64 bytes on standard output.
    Stdout,
    /// Any S3-compatible service (AWS S3, GCS XML API, MinIO, SeaweedFS).
    S3,
}

/// One `services.event_stores[]` entry as written: every key any type accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventStore {
    /// Unique store id, used in logs and errors.
    pub id: String,
    /// Store type.
    #[serde(rename = "type")]
    pub kind: EventStoreType,
    /// pulse: base URL of the Pulse service (`http://pulse-service:8000`).
    #[serde(default, alias = "url")]
    pub endpoint: Option<String>,
    /// pulse: bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// pulse: events per POST at most (default 500).
    #[serde(default)]
    pub batch_max_events: Option<usize>,
    /// pulse: longest an event waits before its batch is sent, in ms (default 1000).
    #[serde(default)]
    pub batch_max_delay_ms: Option<u64>,
    /// pulse: events buffered in memory at most; past it new events are dropped and
    /// counted (default 100000).
    #[serde(default)]
    pub queue_capacity: Option<usize>,
}

/// A key present in an entry that its `type` does not accept, or a required key missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreKeyError {
    /// A required key for this type is missing.
    #[error("missing required key `{key}` for store type `{kind}`")]
    Missing {
        /// The missing key.
        key: &'static str,
        /// The store type.
        kind: &'static str,
    },
    /// A key that does not apply to this type.
    #[error("key `{key}` is not valid for store type `{kind}`")]
    NotValid {
        /// The offending key.
        key: &'static str,
        /// The store type.
        kind: &'static str,
    },
}

/// A validated event store.
#[derive(Debug, Clone, PartialEq)]
pub enum EventStoreConfig {
    /// NDJSON on standard output.
    Stdout {
        /// Store id.
        id: String,
    },
    /// Pulse HTTP service.
    Pulse(PulseConfig),
}

impl EventStoreConfig {
    /// The store's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Stdout { id } => id,
            Self::Pulse(p) => &p.id,
        }
    }
}

/// A validated `type: pulse` event store.
#[derive(Debug, Clone, PartialEq)]
pub struct PulseConfig {
    /// Store id.
    pub id: String,
    /// Base URL; events are POSTed to `{endpoint}/events` — see `docs/pulse.md`.
    pub endpoint: String,
    /// Bearer token, if any.
    pub token: Option<Secret>,
    /// Events per POST at most.
    pub batch_max_events: usize,
    /// Longest an event waits before its batch is sent, in ms.
    pub batch_max_delay_ms: u64,
    /// Events buffered in memory at most.
    pub queue_capacity: usize,
}

impl RawEventStore {
    /// Checks the keys present against the store type. On error, also returns the
    /// key the error is about (for locating it in the file), or `None` for the entry.
    pub fn validate(self) -> Result<EventStoreConfig, (Option<&'static str>, StoreKeyError)> {
        match self.kind {
            EventStoreType::Stdout => {
                let extra = [
                    ("endpoint", self.endpoint.is_some()),
                    ("token", self.token.is_some()),
                    ("batch_max_events", self.batch_max_events.is_some()),
                    ("batch_max_delay_ms", self.batch_max_delay_ms.is_some()),
                    ("queue_capacity", self.queue_capacity.is_some()),
                ];
                reject_present(&extra, "stdout")?;
                Ok(EventStoreConfig::Stdout { id: self.id })
            }
            EventStoreType::Pulse => Ok(EventStoreConfig::Pulse(PulseConfig {
                endpoint: self.endpoint.ok_or(missing("endpoint", "pulse"))?,
                id: self.id,
                token: self.token,
                batch_max_events: self.batch_max_events.unwrap_or(500),
                batch_max_delay_ms: self.batch_max_delay_ms.unwrap_or(1000),
                queue_capacity: self.queue_capacity.unwrap_or(100_000),
            })),
        }
    }
}

/// One `services.object_stores[]` entry as written: every key any type accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjectStore {
    /// Unique store id, used in logs and errors.
    pub id: String,
    /// Store type.
    #[serde(rename = "type")]
    pub kind: ObjectStoreType,
    /// s3: server host and optional port, no scheme (`minio.example.com:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// s3: bucket name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// s3: region used in the signature (`us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// s3: URL template written into events: `{{SCHEME}}`, `{{ENDPOINT}}`,
    /// `{{BUCKET}}`, `{{DIGEST}}`.
    #[serde(default)]
    pub access_url: Option<String>,
    /// s3: `false` (default) → HTTPS with certificate verification; `true` → plain HTTP.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// s3: access key id.
    #[serde(default)]
    pub access_key: Option<Secret>,
    /// s3: secret access key.
    #[serde(default)]
    pub secret_key: Option<Secret>,
    /// s3: spool directory for objects waiting to be uploaded
    /// (default `/var/lib/tapwire/spool/<id>`).
    #[serde(default)]
    pub spool_dir: Option<String>,
    /// s3: spool size limit in bytes; past it the oldest objects are dropped and
    /// counted (default 1 GiB).
    #[serde(default)]
    pub spool_max_bytes: Option<u64>,
    /// s3: uploads in flight at once (default 16).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// s3: objects this size or larger go up as multipart uploads (default 8 MiB).
    #[serde(default)]
    pub multipart_threshold_bytes: Option<u64>,
    /// s3: multipart part size, at least 5 MiB (default 8 MiB).
    #[serde(default)]
    pub multipart_part_bytes: Option<u64>,
    /// s3: what a failed bucket check at start-up does: `fatal` (default), `warn`.
    #[serde(default)]
    pub startup_check: Option<StartupCheck>,
}

/// What a failing start-up bucket check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartupCheck {
    /// Refuse to start (default).
    #[default]
    Fatal,
    /// Log the error and start anyway; objects wait in the spool.
    Warn,
}

/// A validated object store.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once at start-up, never moved in bulk"
)]
pub enum ObjectStoreConfig {
    /// NDJSON on standard output.
    Stdout {
        /// Store id.
        id: String,
    },
    /// An S3-compatible service.
    S3(S3Config),
}

impl ObjectStoreConfig {
    /// The store's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Stdout { id } => id,
            Self::S3(s) => &s.id,
        }
    }
}

/// Default multipart threshold and part size: 8 MiB.
pub const DEFAULT_MULTIPART_BYTES: u64 = 8 << 20;
/// S3's minimum part size (all parts but the last): 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Default spool size limit: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Default uploads in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// A validated `type: s3` object store.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    /// Store id.
    pub id: String,
    /// Host and optional port, no scheme.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region for SigV4.
    pub region: String,
    /// URL template for events.
    pub access_url: String,
    /// Plain HTTP when true.
    pub insecure: bool,
    /// Access key id.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// Spool directory.
    pub spool_dir: String,
    /// Spool size limit in bytes.
    pub spool_max_bytes: u64,
    /// Uploads in flight.
    pub concurrency: usize,
    /// Multipart threshold in bytes.
    pub multipart_threshold_bytes: u64,
    /// Multipart part size in bytes.
    pub multipart_part_bytes: u64,
    /// Start-up bucket check behaviour.
    pub startup_check: StartupCheck,
}

impl RawObjectStore {
    /// Checks the keys present against the store type. On error, also returns the
    /// key the error is about (for locating it in the file), or `None` for the entry.
    pub fn validate(self) -> Result<ObjectStoreConfig, (Option<&'static str>, StoreKeyError)> {
        match self.kind {
            ObjectStoreType::Stdout => {
                let extra = [
                    ("endpoint", self.endpoint.is_some()),
                    ("bucket", self.bucket.is_some()),
                    ("region", self.region.is_some()),
                    ("access_url", self.access_url.is_some()),
                    ("insecure", self.insecure.is_some()),
                    ("access_key", self.access_key.is_some()),
                    ("secret_key", self.secret_key.is_some()),
                    ("spool_dir", self.spool_dir.is_some()),
                    ("spool_max_bytes", self.spool_max_bytes.is_some()),
                    ("concurrency", self.concurrency.is_some()),
                    (
                        "multipart_threshold_bytes",
                        self.multipart_threshold_bytes.is_some(),
                    ),
                    ("multipart_part_bytes", self.multipart_part_bytes.is_some()),
                    ("startup_check", self.startup_check.is_some()),
                ];
                reject_present(&extra, "stdout")?;
                Ok(ObjectStoreConfig::Stdout { id: self.id })
            }
            ObjectStoreType::S3 => {
                let part = self.multipart_part_bytes.unwrap_or(DEFAULT_MULTIPART_BYTES);
                if part < MIN_PART_BYTES {
                    return Err((
                        Some("multipart_part_bytes"),
                        StoreKeyError::NotValid {
                            key: "multipart_part_bytes",
                            kind: "s3",
                        },
                    ));
                }
                Ok(ObjectStoreConfig::S3(S3Config {
                    endpoint: self.endpoint.ok_or(missing("endpoint", "s3"))?,
                    bucket: self.bucket.ok_or(missing("bucket", "s3"))?,
                    region: self.region.unwrap_or_else(|| "us-east-1".to_owned()),
                    access_url: self.access_url.unwrap_or_else(|| {
                        "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}".to_owned()
                    }),
                    insecure: self.insecure.unwrap_or(false),
                    access_key: self.access_key.ok_or(missing("access_key", "s3"))?,
                    secret_key: self.secret_key.ok_or(missing("secret_key", "s3"))?,
                    spool_dir: self
                        .spool_dir
                        .unwrap_or_else(|| format!("/var/lib/tapwire/spool/{}", self.id)),
                    spool_max_bytes: self.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
                    concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
                    multipart_threshold_bytes: self
                        .multipart_threshold_bytes
                        .unwrap_or(DEFAULT_MULTIPART_BYTES),
                    multipart_part_bytes: part,
                    startup_check: self.startup_check.unwrap_or_default(),
                    id: self.id,
                }))
            }
        }
    }
}

fn missing(key: &'static str, kind: &'static str) -> (Option<&'static str>, StoreKeyError) {
    (None, StoreKeyError::Missing { key, kind })
}

fn reject_present(
    keys: &[(&'static str, bool)],
    kind: &'static str,
) -> Result<(), (Option<&'static str>, StoreKeyError)> {
    match keys.iter().find(|(_, present)| *present) {
        Some((key, _)) => Err((Some(key), StoreKeyError::NotValid { key, kind })),
        None => Ok(()),
    }
}

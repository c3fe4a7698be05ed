//! The `type: s3` entry of `services.object_stores[]`: keys, defaults, checks,
//! summary and start.

use std::sync::Arc;

use serde::Deserialize;

use super::client::Encryption;
use crate::ObjectStore;
use crate::config::{KindError, ObjectKind, Secret, StoreKind};
use crate::stores::{StartContext, StoreStartError};

/// Default multipart threshold and part size: 8 MiB.
pub const DEFAULT_MULTIPART_BYTES: u64 = 8 << 20;
/// S3's minimum part size (all parts but the last): 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Default spool size limit: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Default uploads in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Where spools live unless `spool_dir` says otherwise: `<this>/<store id>`.
pub const DEFAULT_SPOOL_ROOT: &str = "/var/lib/tapwire/spool";

/// What a failing start-up bucket check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartupCheck {
    /// Refuse to start (default).
    #[default]
    Fatal,
    /// Log the error and start anyway; objects wait in the spool.
    Warn,
}

/// A `type: s3` object store: any S3-compatible service (AWS S3, GCS XML API,
/// MinIO, SeaweedFS). Keys are documented in `docs/s3.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Store id (the entry's `id`).
    #[serde(skip)]
    pub id: String,
    /// Server host and optional port, no scheme (`minio.example.com:9000`).
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region used in the signature (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// URL template written into events: `{{SCHEME}}`, `{{ENDPOINT}}`, `{{BUCKET}}`,
    /// `{{DIGEST}}` (default `{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}`).
    #[serde(default = "default_access_url")]
    pub access_url: String,
    /// `false` (default) → HTTPS with certificate verification; `true` → plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// Access key id.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// Spool directory for objects waiting to be uploaded
    /// (default `/var/lib/tapwire/spool/<id>`).
    #[serde(default)]
    pub spool_dir: String,
    /// Spool size limit in bytes; past it new objects are refused and counted
    /// (default 1 GiB).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Uploads in flight at once, at least 1 (default 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Objects this size or larger go up as multipart uploads (default 8 MiB).
    #[serde(default = "default_multipart_bytes")]
    pub multipart_threshold_bytes: u64,
    /// Multipart part size, at least 5 MiB (default 8 MiB).
    #[serde(default = "default_multipart_bytes")]
    pub multipart_part_bytes: u64,
    /// What a failed bucket check at start-up does: `fatal` (default), `warn`.
    #[serde(default)]
    pub startup_check: StartupCheck,
    /// Temporary credentials' session token, sent as `x-amz-security-token`.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Server-side encryption asked for on every object: `AES256` or `aws:kms`
    /// (default: none asked; the bucket's default applies).
    #[serde(default)]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// The KMS key for `server_side_encryption: aws:kms` (default: the
    /// account's S3 key).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// `server_side_encryption` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerSideEncryption {
    /// SSE-S3: keys managed by the service.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS.
    #[serde(rename = "aws:kms")]
    Kms,
}

impl S3Config {
    /// The encryption to ask for on new objects.
    pub fn encryption(&self) -> Option<Encryption> {
        match self.server_side_encryption? {
            ServerSideEncryption::Aes256 => Some(Encryption::Aes256),
            ServerSideEncryption::Kms => Some(Encryption::Kms(self.kms_key_id.clone())),
        }
    }
}

/// Reads a `ca_file` and checks that it holds at least one PEM certificate:
/// the same check at load and at start.
pub fn read_ca_file(key: &'static str, path: &str) -> Result<Vec<u8>, KindError> {
    let pem = std::fs::read(path)
        .map_err(|e| KindError::value(key, format!("cannot read `{path}`: {e}")))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(KindError::value(
            key,
            format!("`{path}` holds no PEM certificate"),
        )),
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_access_url() -> String {
    "{{SCHEME}}://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}".to_owned()
}

fn default_spool_max_bytes() -> u64 {
    DEFAULT_SPOOL_MAX_BYTES
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

fn default_multipart_bytes() -> u64 {
    DEFAULT_MULTIPART_BYTES
}

impl StoreKind for S3Config {
    const NAME: &'static str = "s3";

    fn set_id(&mut self, id: String) {
        if self.spool_dir.is_empty() {
            self.spool_dir = format!("{DEFAULT_SPOOL_ROOT}/{id}");
        }
        self.id = id;
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn check(&self) -> Result<(), KindError> {
        let endpoint = &self.endpoint;
        if endpoint.is_empty() || endpoint.contains("://") || endpoint.contains('/') {
            return Err(KindError::value(
                "endpoint",
                format!(
                    "endpoint `{endpoint}` must be a host and optional port, without scheme \
                     or path (use `insecure` to choose HTTP)"
                ),
            ));
        }
        if self.multipart_part_bytes < MIN_PART_BYTES {
            return Err(KindError::value(
                "multipart_part_bytes",
                format!(
                    "multipart_part_bytes {} is below S3's smallest part, {MIN_PART_BYTES} \
                     bytes (5 MiB)",
                    self.multipart_part_bytes
                ),
            ));
        }
        if self.kms_key_id.is_some()
            && self.server_side_encryption != Some(ServerSideEncryption::Kms)
        {
            return Err(KindError::value(
                "kms_key_id",
                "kms_key_id applies only with `server_side_encryption: aws:kms`".to_owned(),
            ));
        }
        if let Some(path) = &self.ca_file {
            if self.insecure {
                return Err(KindError::value(
                    "ca_file",
                    "ca_file applies only to HTTPS (`insecure: false`)".to_owned(),
                ));
            }
            read_ca_file("ca_file", path)?;
        }
        if self.concurrency == 0 {
            return Err(KindError::value(
                "concurrency",
                "concurrency must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    fn summary(&self) -> String {
        format!(
            "s3 endpoint={} bucket={} region={} insecure={} access_url={} access_key={} \
             secret_key={} spool_dir={} spool_max_bytes={} concurrency={} \
             multipart_threshold_bytes={} multipart_part_bytes={} startup_check={:?} \
             session_token={} server_side_encryption={} kms_key_id={} ca_file={}",
            self.endpoint,
            self.bucket,
            self.region,
            self.insecure,
            self.access_url,
            self.access_key.describe(),
            self.secret_key.describe(),
            self.spool_dir,
            self.spool_max_bytes,
            self.concurrency,
            self.multipart_threshold_bytes,
            self.multipart_part_bytes,
            self.startup_check,
            self.session_token
                .as_ref()
                .map_or("none".to_owned(), Secret::describe),
            match self.server_side_encryption {
                None => "none",
                Some(ServerSideEncryption::Aes256) => "AES256",
                Some(ServerSideEncryption::Kms) => "aws:kms",
            },
            self.kms_key_id.as_deref().unwrap_or("none"),
            self.ca_file.as_deref().unwrap_or("none"),
        )
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut secrets = vec![
            ("access_key", &self.access_key),
            ("secret_key", &self.secret_key),
        ];
        secrets.extend(self.session_token.iter().map(|t| ("session_token", t)));
        secrets
    }
}

impl ObjectKind for S3Config {
    fn start(&self, ctx: &mut StartContext) -> Result<Arc<dyn ObjectStore>, StoreStartError> {
        Ok(Arc::new(super::S3Store::start_with(self, ctx.memory())?))
    }
}

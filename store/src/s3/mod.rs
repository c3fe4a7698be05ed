//! The `type: s3` object store: any S3-compatible service (AWS S3, GCS's XML API,
//! MinIO, SeaweedFS), path-style requests signed with AWS Signature V4.
//!
//! - [`config`]: the `type: s3` entry: keys, checks, summary, start.
//! - [`sign`]: SigV4, checked against AWS's published test vectors.
//! - [`client`]: the HTTP calls (PUT, multipart, bucket check) and S3 error codes.
//! - [`multipart`]: large objects in parts read from the spool file.
//! - [`uploader`]: drains the spool with bounded concurrency and retries.
//! - [`store`]: [`S3Store`], tying queue, spool and uploader together.

pub mod client;
pub mod config;
pub mod multipart;
pub mod sign;
pub mod store;
pub mod uploader;

pub use crate::access_url::AccessUrl;
pub use client::{ClientConfig, ClientError, Encryption, S3Client};
pub use sign::Credentials;
pub use store::{S3Error, S3Store};

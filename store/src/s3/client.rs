//! A small S3 client: path-style requests signed with SigV4, over one kept-alive
//! reqwest connection pool.
//!
//! Only what the store needs: PUT object, the multipart calls, a bucket check, and
//! (for tests and tooling) GET object, list keys and create bucket. Error answers are
//! parsed for their S3 `Code` so callers can tell `NoSuchBucket` from
//! `SignatureDoesNotMatch` from an outage.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use super::sign::{self, AmzDate, Credentials, EMPTY_PAYLOAD_SHA256, Scope, SignableRequest};

/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take end to end: a part of up to a few tens of MiB
/// at a slow but healthy few MB/s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an idle kept-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys asked for per list page (S3's own maximum).
const LIST_PAGE_KEYS: &str = "1000";
/// Longest error body kept for the message.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// An S3 request failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("S3 answered {status} `{code}`: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code from the XML body (`NoSuchBucket`), or `HTTP <status>` when
        /// the body had none (HEAD answers, proxies).
        code: String,
        /// S3's message, if any.
        message: String,
    },
    /// The request did not get an answer: connection refused or reset, timeout, TLS.
    #[error("request to `{url}` failed ({reason})")]
    Transport {
        /// The URL.
        url: String,
        /// `connection refused`, `timed out`, `TLS handshake failed`,
        /// `connection failed`, …
        reason: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
    /// A success answer lacked something we need (`UploadId`, `ETag`).
    #[error("S3 answer to {operation} lacks `{field}`")]
    Malformed {
        /// The operation.
        operation: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

impl ClientError {
    /// A short name for the failure: the S3 error code, or the transport reason.
    pub fn code(&self) -> &str {
        match self {
            Self::Status { code, .. } => code,
            Self::Transport { reason, .. } => reason,
            Self::Build(_) => "client build failed",
            Self::Malformed { .. } => "malformed answer",
        }
    }

    /// Worth retrying: transport errors, 5xx, 408, 429, and S3's throttling codes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { reason, .. } => *reason != "invalid request",
            Self::Status { status, code, .. } => {
                *status >= 500
                    || *status == 408
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                    )
            }
            Self::Build(_) | Self::Malformed { .. } => false,
        }
    }

    /// Refused because of the store's set-up, not the object: authentication or
    /// permission (401, 403, a malformed or expired signature or token), a missing
    /// or moved bucket (`NoSuchBucket`, 301 `PermanentRedirect`, 307), or an answer
    /// that is not S3's at all (a proxy's 404 with no S3 error code). Every object
    /// would fail the same way: the store waits and tries again, the objects wait
    /// in the spool.
    pub fn is_setup(&self) -> bool {
        match self {
            Self::Status { status, code, .. } => {
                matches!(*status, 301 | 307 | 401 | 403)
                    || (*status == 404 && code.starts_with("HTTP "))
                    || matches!(
                        code.as_str(),
                        "AccessDenied"
                            | "AuthorizationHeaderMalformed"
                            | "SignatureDoesNotMatch"
                            | "InvalidAccessKeyId"
                            | "ExpiredToken"
                            | "InvalidToken"
                            | "TokenRefreshRequired"
                            | "NoSuchBucket"
                            | "PermanentRedirect"
                            | "TemporaryRedirect"
                            | "InvalidBucketName"
                            | "AllAccessDisabled"
                            | "AccountProblem"
                            | "KMS.NotFoundException"
                            | "KMS.DisabledException"
                            | "KMS.AccessDeniedException"
                    )
            }
            _ => false,
        }
    }
}

/// Where and as whom the client talks.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host and optional port, no scheme.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region for signing.
    pub region: String,
    /// Plain HTTP when true; HTTPS with certificate verification otherwise.
    pub insecure: bool,
    /// Key pair.
    pub credentials: Credentials,
    /// Temporary credentials' session token (`x-amz-security-token`), if any.
    pub session_token: Option<String>,
    /// Server-side encryption asked for on every object.
    pub encryption: Option<Encryption>,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Connections kept alive at most.
    pub max_idle_connections: usize,
}

/// Server-side encryption for new objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// `AES256`: keys managed by the service (SSE-S3).
    Aes256,
    /// `aws:kms`, with the KMS key id (or the account's default key).
    Kms(Option<String>),
}

/// A successful answer.
struct Answer {
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

/// The S3 client. Cheap to share behind an `Arc`; requests may run concurrently.
#[derive(Debug)]
pub struct S3Client {
    http: reqwest::Client,
    cfg: ClientConfig,
    scheme: &'static str,
    /// The `Host` header as reqwest sends it (lowercase host, default port
    /// left out), which is what the signature must cover.
    host: String,
}

impl S3Client {
    /// Builds the client (no request is made).
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(cfg.max_idle_connections.max(1))
            // S3 answers a wrong region or endpoint with a redirect; following it
            // would resend a request signed for another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tapwire/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::Build)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(ClientError::Build)?;
        let scheme = if cfg.insecure { "http" } else { "https" };
        let host = host_as_sent(scheme, &cfg.endpoint);
        Ok(Self {
            http,
            cfg,
            scheme,
            host,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The endpoint (`host[:port]`).
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    /// Signs and sends one request to `/{bucket}` or `/{bucket}/{key}`.
    async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let content_type = content_type.map(sanitize_content_type);
        let path = match key {
            Some(key) => format!("/{}/{}", self.cfg.bucket, key),
            None => format!("/{}", self.cfg.bucket),
        };
        let payload_hash = if body.is_empty() {
            EMPTY_PAYLOAD_SHA256.to_owned()
        } else {
            sign::sha256_hex(&body)
        };
        let date = AmzDate::now();
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &self.host),
            ("x-amz-content-sha256", &payload_hash),
            ("x-amz-date", date.stamp()),
        ];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        if let Some(token) = &self.cfg.session_token {
            headers.push(("x-amz-security-token", token));
        }
        // New objects (a PUT of a whole object, or the start of a multipart
        // upload) carry the encryption asked for; parts inherit it.
        let new_object = key.is_some()
            && ((method == Method::PUT && query.is_empty())
                || (method == Method::POST && query.iter().any(|(k, _)| *k == "uploads")));
        if new_object {
            match &self.cfg.encryption {
                Some(Encryption::Aes256) => {
                    headers.push(("x-amz-server-side-encryption", "AES256"));
                }
                Some(Encryption::Kms(key_id)) => {
                    headers.push(("x-amz-server-side-encryption", "aws:kms"));
                    if let Some(id) = key_id {
                        headers.push(("x-amz-server-side-encryption-aws-kms-key-id", id));
                    }
                }
                None => {}
            }
        }
        let signature = sign::sign(
            &SignableRequest {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                payload_hash: &payload_hash,
            },
            &Scope {
                credentials: &self.cfg.credentials,
                region: &self.cfg.region,
                service: "s3",
                date,
            },
        );
        let mut url = format!(
            "{}://{}{}",
            self.scheme,
            self.cfg.endpoint,
            sign::uri_encode(&path, true)
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(&sign::canonical_query(query));
        }
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("authorization", signature.authorization);
        // Every signed header but `host` (which reqwest writes from the URL, as
        // `host_as_sent` predicts), with the very value signed.
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            req = req.header(*name, *value);
        }
        if !body.is_empty() || method == Method::PUT || method == Method::POST {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| transport(&url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| transport(&url, e))?;
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        Err(status_error(status, &body))
    }

    /// Checks that the bucket exists and these credentials may list it (a
    /// ListObjectsV2 asking for one key; HEAD answers carry no error code).
    pub async fn check_bucket(&self) -> Result<(), ClientError> {
        self.send(
            Method::GET,
            None,
            &[("list-type", "2"), ("max-keys", "1")],
            None,
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// Stores `body` under `key` in one request.
    pub async fn put_object(
        &self,
        key: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), ClientError> {
        self.send(Method::PUT, Some(key), &[], Some(content_type), body)
            .await
            .map(drop)
    }

    /// Starts a multipart upload; returns its upload id.
    pub async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, ClientError> {
        let answer = self
            .send(
                Method::POST,
                Some(key),
                &[("uploads", "")],
                Some(content_type),
                Bytes::new(),
            )
            .await?;
        xml_text(&answer.body, "UploadId")
            .map(unescape)
            .ok_or(ClientError::Malformed {
                operation: "CreateMultipartUpload",
                field: "UploadId",
            })
    }

    /// Uploads part `part_number` (1-based); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<String, ClientError> {
        let part = part_number.to_string();
        let answer = self
            .send(
                Method::PUT,
                Some(key),
                &[("partNumber", &part), ("uploadId", upload_id)],
                None,
                body,
            )
            .await?;
        answer
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(ClientError::Malformed {
                operation: "UploadPart",
                field: "ETag",
            })
    }

    /// Completes a multipart upload from its parts' (number, ETag), in order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), ClientError> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str("<Part><PartNumber>");
            xml.push_str(&number.to_string());
            xml.push_str("</PartNumber><ETag>");
            xml.push_str(&escape(etag));
            xml.push_str("</ETag></Part>");
        }
        xml.push_str("</CompleteMultipartUpload>");
        let answer = self
            .send(
                Method::POST,
                Some(key),
                &[("uploadId", upload_id)],
                Some("application/xml"),
                Bytes::from(xml),
            )
            .await?;
        // S3 may answer 200 and put the error in the body.
        if let Some(code) = xml_text(&answer.body, "Code") {
            return Err(ClientError::Status {
                status: 200,
                code: code.to_owned(),
                message: xml_text(&answer.body, "Message")
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Abandons a multipart upload, freeing its parts.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        self.send(
            Method::DELETE,
            Some(key),
            &[("uploadId", upload_id)],
            None,
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// Reads an object whole.
    pub async fn get_object(&self, key: &str) -> Result<Bytes, ClientError> {
        Ok(self
            .send(Method::GET, Some(key), &[], None, Bytes::new())
            .await?
            .body)
    }

    /// Every key in the bucket (ListObjectsV2, page by page).
    pub async fn list_keys(&self) -> Result<Vec<String>, ClientError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("max-keys", LIST_PAGE_KEYS)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let answer = self
                .send(Method::GET, None, &query, None, Bytes::new())
                .await?;
            let body = String::from_utf8_lossy(&answer.body);
            let mut rest: &str = &body;
            while let Some(start) = rest.find("<Key>") {
                let after = &rest[start + 5..];
                let Some(end) = after.find("</Key>") else {
                    break;
                };
                keys.push(unescape(&after[..end]));
                rest = &after[end + 6..];
            }
            let truncated = xml_text(&answer.body, "IsTruncated") == Some("true");
            match xml_text(&answer.body, "NextContinuationToken") {
                Some(next) if truncated => token = Some(unescape(next)),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// Creates the bucket (for tests and set-up tools).
    pub async fn create_bucket(&self) -> Result<(), ClientError> {
        self.send(Method::PUT, None, &[], None, Bytes::new())
            .await
            .map(drop)
    }
}

/// The `Host` header reqwest sends for `endpoint` (`host[:port]`) over `scheme`:
/// the URL's host lowercased, its port only when it is not the scheme's default.
pub fn host_as_sent(scheme: &str, endpoint: &str) -> String {
    match reqwest::Url::parse(&format!("{scheme}://{endpoint}/")) {
        Ok(url) => {
            let host = url.host_str().unwrap_or(endpoint);
            match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        }
        Err(_) => endpoint.to_owned(),
    }
}

/// AWS's global endpoint, which serves path-style requests for us-east-1 buckets
/// only and redirects the rest.
const AWS_GLOBAL_ENDPOINT: &str = "s3.amazonaws.com";

/// The host requests go to for `endpoint` in `region`: `endpoint` itself, except
/// that AWS's global endpoint becomes the region's own (`s3.us-west-2.amazonaws.com`)
/// for regions other than `us-east-1`, as AWS's SDKs do.
pub fn request_endpoint(endpoint: &str, region: &str) -> String {
    if endpoint.eq_ignore_ascii_case(AWS_GLOBAL_ENDPOINT)
        && region != "us-east-1"
        && !region.is_empty()
    {
        format!("s3.{region}.amazonaws.com")
    } else {
        endpoint.to_owned()
    }
}

fn transport(url: &str, source: reqwest::Error) -> ClientError {
    let kinds = io_kinds(&source);
    let has = |k: std::io::ErrorKind| kinds.contains(&k);
    let reason = if source.is_builder() {
        "invalid request"
    } else if source.is_timeout() {
        "timed out"
    } else if has(std::io::ErrorKind::ConnectionRefused) {
        "connection refused"
    } else if has(std::io::ErrorKind::ConnectionReset) {
        "connection reset"
    } else if source.is_connect() && has(std::io::ErrorKind::InvalidData) {
        // rustls reports handshake failures (an untrusted certificate, a name
        // mismatch, a protocol error) as `InvalidData` I/O errors.
        "TLS handshake failed"
    } else if source.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    ClientError::Transport {
        url: url.to_owned(),
        reason,
        source,
    }
}

/// The kinds of every I/O error in `e`'s source chain, including I/O errors
/// wrapped inside I/O errors (which `source()` skips over).
fn io_kinds(e: &(dyn std::error::Error + 'static)) -> Vec<std::io::ErrorKind> {
    let mut kinds = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let mut inner = err.downcast_ref::<std::io::Error>();
        while let Some(io) = inner {
            kinds.push(io.kind());
            inner = io
                .get_ref()
                .and_then(|r| r.downcast_ref::<std::io::Error>());
        }
        cur = err.source();
    }
    kinds
}

fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    let code = xml_text(body, "Code")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let message = xml_text(body, "Message").map(unescape).unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .chars()
            .take(MAX_ERROR_MESSAGE_CHARS)
            .collect()
    });
    ClientError::Status {
        status: status.as_u16(),
        code,
        message,
    }
}

/// The text of the first `<tag>…</tag>` in `body`, not unescaped. Enough for S3's
/// flat answers; not a general XML parser.
fn xml_text<'a>(body: &'a [u8], tag: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    Some(&text[start..end])
}

/// `content_type` if it can go in a header as it is (visible ASCII and spaces),
/// else `application/octet-stream`: a captured `Content-Type` is not to be trusted.
fn sanitize_content_type(content_type: &str) -> &str {
    let ok = !content_type.is_empty()
        && content_type
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if ok {
        content_type
    } else {
        "application/octet-stream"
    }
}

/// Undoes XML's five predefined entities.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// Escapes text for an XML element.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_yield_code_and_message() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><Resource>/b</Resource></Error>"#;
        let err = status_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.code(), "NoSuchBucket");
        assert_eq!(
            err.to_string(),
            "S3 answered 404 `NoSuchBucket`: The specified bucket does not exist"
        );
        assert!(!err.is_transient());
        assert!(
            err.is_setup(),
            "a missing bucket is the store's problem, not the object's"
        );
    }

    #[test]
    fn bodiless_errors_name_the_status() {
        let err = status_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(err.code(), "HTTP 503");
        assert!(err.is_transient());
        let err = status_error(
            StatusCode::FORBIDDEN,
            b"<Error><Code>SignatureDoesNotMatch</Code></Error>",
        );
        assert!(err.is_setup());
        assert!(!err.is_transient());
    }

    #[test]
    fn set_up_errors_are_told_from_object_errors() {
        let setup = [
            (
                StatusCode::FORBIDDEN,
                "<Error><Code>AccessDenied</Code></Error>",
            ),
            (
                StatusCode::BAD_REQUEST,
                "<Error><Code>AuthorizationHeaderMalformed</Code></Error>",
            ),
            (
                StatusCode::MOVED_PERMANENTLY,
                "<Error><Code>PermanentRedirect</Code></Error>",
            ),
            (StatusCode::NOT_FOUND, "<html>no such route</html>"),
            (StatusCode::UNAUTHORIZED, ""),
        ];
        for (status, body) in setup {
            let err = status_error(status, body.as_bytes());
            assert!(err.is_setup(), "{err}");
            assert!(!err.is_transient(), "{err}");
        }
        let object = [
            (
                StatusCode::BAD_REQUEST,
                "<Error><Code>InvalidArgument</Code></Error>",
            ),
            (
                StatusCode::BAD_REQUEST,
                "<Error><Code>EntityTooLarge</Code></Error>",
            ),
            (
                StatusCode::NOT_FOUND,
                "<Error><Code>NoSuchUpload</Code></Error>",
            ),
        ];
        for (status, body) in object {
            let err = status_error(status, body.as_bytes());
            assert!(!err.is_setup(), "{err}");
        }
    }

    #[test]
    fn the_signed_host_is_the_host_sent() {
        assert_eq!(
            host_as_sent("http", "Minio.Example.com:80"),
            "minio.example.com"
        );
        assert_eq!(
            host_as_sent("https", "s3.example.com:443"),
            "s3.example.com"
        );
        assert_eq!(
            host_as_sent("https", "s3.example.com:9000"),
            "s3.example.com:9000"
        );
        assert_eq!(host_as_sent("http", "[::1]:8333"), "[::1]:8333");
    }

    #[test]
    fn content_types_that_cannot_be_headers_are_replaced() {
        assert_eq!(
            sanitize_content_type("text/html; charset=utf-8"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            sanitize_content_type("text/\u{e9}"),
            "application/octet-stream"
        );
        assert_eq!(sanitize_content_type("a\r\nb"), "application/octet-stream");
        assert_eq!(sanitize_content_type(""), "application/octet-stream");
    }

    #[test]
    fn aws_global_endpoint_goes_regional_outside_us_east_1() {
        assert_eq!(
            request_endpoint("s3.amazonaws.com", "us-west-2"),
            "s3.us-west-2.amazonaws.com"
        );
        assert_eq!(
            request_endpoint("s3.amazonaws.com", "us-east-1"),
            "s3.amazonaws.com"
        );
        assert_eq!(
            request_endpoint("storage.googleapis.com", "us-central1"),
            "storage.googleapis.com"
        );
        assert_eq!(
            request_endpoint("minio.example.com:9000", "us-east-1"),
            "minio.example.com:9000"
        );
    }

    #[test]
    fn xml_helpers_round_trip() {
        assert_eq!(
            xml_text(b"<A><UploadId>x&amp;y</UploadId></A>", "UploadId"),
            Some("x&amp;y")
        );
        assert_eq!(unescape("&quot;abc&quot;"), "\"abc\"");
        assert_eq!(escape("\"abc\""), "&quot;abc&quot;");
        assert_eq!(xml_text(b"<A></A>", "Code"), None);
    }
}

//! AWS Signature Version 4 for requests signed in the `Authorization` header.
//!
//! Follows "Signature Version 4 signing process" step by step: canonical request →
//! string to sign → signing key → signature. S3 does not normalise paths, so the
//! canonical URI is the path with each segment URI-encoded once. Checked against
//! AWS's published test suite and the S3 documentation's examples (see the tests).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::calendar::civil_from_days;

/// The algorithm name in the string to sign and the `Authorization` header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// SHA-256 of the empty string, hex: the payload hash of a request without a body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id (sent in the clear in every request).
    pub access_key: String,
    /// Secret access key (never sent).
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"********")
            .finish()
    }
}

/// A signing time in the two forms SigV4 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmzDate {
    /// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` header.
    stamp: [u8; 16],
}

impl AmzDate {
    /// The time `t` (UTC).
    pub fn from_system_time(t: SystemTime) -> Self {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_unix(secs)
    }

    /// Now.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        let mut s = String::with_capacity(16);
        // Writing to a String cannot fail.
        let _ = write!(s, "{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z");
        let mut stamp = [b'0'; 16];
        stamp.copy_from_slice(&s.as_bytes()[..16]);
        Self { stamp }
    }

    /// `YYYYMMDDTHHMMSSZ`.
    pub fn stamp(&self) -> &str {
        // Only ASCII digits, `T` and `Z` are ever written.
        std::str::from_utf8(&self.stamp).unwrap_or("19700101T000000Z")
    }

    /// `YYYYMMDD`, the credential scope's date.
    pub fn date(&self) -> &str {
        &self.stamp()[..8]
    }
}

/// What is signed: one HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The path, not yet encoded (`/bucket/key`).
    pub path: &'a str,
    /// Query parameters, not yet encoded, in any order. A bare key (`?uploads`) has
    /// an empty value.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign, in any order and case. Must include `host` and
    /// `x-amz-date`; S3 also wants `x-amz-content-sha256`.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

/// The signing scope: who signs, where, when.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The key pair.
    pub credentials: &'a Credentials,
    /// Region (`us-east-1`).
    pub region: &'a str,
    /// Service (`s3`).
    pub service: &'a str,
    /// Signing time; must equal the `x-amz-date` header.
    pub date: AmzDate,
}

/// A computed signature and the `Authorization` header that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The `Authorization` header's value.
    pub authorization: String,
    /// The hex signature alone.
    pub signature: String,
}

/// Percent-encodes `s` as SigV4 wants: everything but `A-Za-z0-9-._~` becomes
/// `%XX` (upper case); `/` is kept when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The canonical query string: each key and value encoded, sorted by key then value,
/// joined with `&`. Also the query string to send, so the two always agree.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Lower-case names; values trimmed with inner runs of spaces collapsed; sorted by
/// name; repeated names joined with `,`. Returns (canonical headers, signed headers).
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    let mut signed = String::new();
    let mut i = 0;
    while i < hs.len() {
        let name = &hs[i].0;
        let mut value = hs[i].1.clone();
        let mut j = i + 1;
        while j < hs.len() && hs[j].0 == *name {
            value.push(',');
            value.push_str(&hs[j].1);
            j += 1;
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&value);
        canonical.push('\n');
        if !signed.is_empty() {
            signed.push(';');
        }
        signed.push_str(name);
        i = j;
    }
    (canonical, signed)
}

/// Step 1: the canonical request.
pub fn canonical_request(req: &SignableRequest<'_>) -> String {
    let (headers, signed) = canonical_headers(req.headers);
    let path = if req.path.is_empty() {
        "/".to_owned()
    } else {
        uri_encode(req.path, true)
    };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        path,
        canonical_query(req.query),
        headers,
        signed,
        req.payload_hash
    )
}

/// Step 2: the string to sign.
pub fn string_to_sign(canonical_request: &str, scope: &Scope<'_>) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}/{}/{}/aws4_request\n{}",
        scope.date.stamp(),
        scope.date.date(),
        scope.region,
        scope.service,
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Steps 1–4: signs `req` and builds the `Authorization` header.
pub fn sign(req: &SignableRequest<'_>, scope: &Scope<'_>) -> Signature {
    let creq = canonical_request(req);
    let sts = string_to_sign(&creq, scope);
    let key = signing_key(scope);
    let signature = hex::encode(hmac(&key, sts.as_bytes()));
    let (_, signed) = canonical_headers(req.headers);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
        scope.credentials.access_key,
        scope.date.date(),
        scope.region,
        scope.service,
        signed,
        signature
    );
    Signature {
        authorization,
        signature,
    }
}

/// Step 3: the signing key, derived from the secret and the scope.
fn signing_key(scope: &Scope<'_>) -> [u8; 32] {
    let secret = format!("AWS4{}", scope.credentials.secret_key);
    let k_date = hmac(secret.as_bytes(), scope.date.date().as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Hex SHA-256 of `data`: the `x-amz-content-sha256` of a body.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AWS SigV4 test suite's key pair, region and service.
    fn suite_credentials() -> Credentials {
        Credentials {
            access_key: "AKIDEXAMPLE".to_owned(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
        }
    }

    /// 2015-08-30T12:36:00Z, the suite's signing time.
    const SUITE_TIME: u64 = 1_440_938_160;
    /// 2013-05-24T00:00:00Z, the S3 documentation examples' signing time.
    const S3_DOC_TIME: u64 = 1_369_353_600;

    fn suite_scope(creds: &Credentials) -> Scope<'_> {
        Scope {
            credentials: creds,
            region: "us-east-1",
            service: "service",
            date: AmzDate::from_unix(SUITE_TIME),
        }
    }

    fn s3_doc_credentials() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".to_owned(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
        }
    }

    fn s3_doc_scope(creds: &Credentials) -> Scope<'_> {
        Scope {
            credentials: creds,
            region: "us-east-1",
            service: "s3",
            date: AmzDate::from_unix(S3_DOC_TIME),
        }
    }

    const SUITE_HEADERS: &[(&str, &str)] = &[
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
    ];

    #[test]
    fn dates_format_as_amz_date() {
        assert_eq!(AmzDate::from_unix(SUITE_TIME).stamp(), "20150830T123600Z");
        assert_eq!(AmzDate::from_unix(S3_DOC_TIME).stamp(), "20130524T000000Z");
        assert_eq!(AmzDate::from_unix(0).stamp(), "19700101T000000Z");
        // 2024-02-29T23:59:59Z: a leap day.
        assert_eq!(
            AmzDate::from_unix(1_709_251_199).stamp(),
            "20240229T235959Z"
        );
        assert_eq!(AmzDate::from_unix(SUITE_TIME).date(), "20150830");
    }

    #[test]
    fn suite_get_vanilla() {
        let creds = suite_credentials();
        let scope = suite_scope(&creds);
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: &[],
            headers: SUITE_HEADERS,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let creq = canonical_request(&req);
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(&creq, &scope),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            sign(&req, &scope).authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn suite_post_vanilla() {
        let creds = suite_credentials();
        let req = SignableRequest {
            method: "POST",
            path: "/",
            query: &[],
            headers: SUITE_HEADERS,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        assert_eq!(
            sign(&req, &suite_scope(&creds)).signature,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn suite_get_vanilla_query_order_key_case() {
        let creds = suite_credentials();
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: &[("Param2", "value2"), ("Param1", "value1")],
            headers: SUITE_HEADERS,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let creq = canonical_request(&req);
        assert_eq!(creq.lines().nth(2), Some("Param1=value1&Param2=value2"));
        assert_eq!(
            string_to_sign(&creq, &suite_scope(&creds)).lines().last(),
            Some("816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0")
        );
        assert_eq!(
            sign(&req, &suite_scope(&creds)).signature,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn s3_doc_get_object_with_range() {
        let creds = s3_doc_credentials();
        let req = SignableRequest {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let creq = canonical_request(&req);
        assert_eq!(
            creq,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(&creq, &s3_doc_scope(&creds)),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            sign(&req, &s3_doc_scope(&creds)).authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn s3_doc_put_object() {
        let creds = s3_doc_credentials();
        let body_hash = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(
            body_hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let req = SignableRequest {
            method: "PUT",
            path: "/test$file.text",
            query: &[],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &body_hash),
            ],
            payload_hash: &body_hash,
        };
        assert_eq!(
            canonical_request(&req).lines().nth(1),
            Some("/test%24file.text")
        );
        assert_eq!(
            sign(&req, &s3_doc_scope(&creds)).signature,
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn s3_doc_get_bucket_lifecycle() {
        let creds = s3_doc_credentials();
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: &[("lifecycle", "")],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ],
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        assert_eq!(canonical_request(&req).lines().nth(2), Some("lifecycle="));
        assert_eq!(
            sign(&req, &s3_doc_scope(&creds)).signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn s3_doc_list_objects() {
        let creds = s3_doc_credentials();
        let req = SignableRequest {
            method: "GET",
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ],
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        assert_eq!(
            canonical_request(&req).lines().nth(2),
            Some("max-keys=2&prefix=J")
        );
        assert_eq!(
            sign(&req, &s3_doc_scope(&creds)).signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(uri_encode("a b/c~d+e$é", true), "a%20b/c~d%2Be%24%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(
            canonical_query(&[("uploadId", "x/y=z"), ("partNumber", "2")]),
            "partNumber=2&uploadId=x%2Fy%3Dz"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_repeats_joined() {
        let (canonical, signed) = canonical_headers(&[
            ("My-Header1", "  a   b  "),
            ("host", "h"),
            ("my-header1", "c"),
        ]);
        assert_eq!(canonical, "host:h\nmy-header1:a b,c\n");
        assert_eq!(signed, "host;my-header1");
    }
}

//! The `access_url` template of an S3 store: how events address its
//! objects. Std-only (the fuzz targets compile it from this file).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Digest;

/// The `access_url` template with everything but the digest filled in, cut
/// at each `{{DIGEST}}` so that rendering a URL is one allocation and copies.
#[derive(Debug, Clone)]
pub struct AccessUrl {
    /// Which template this is: set when it is made, kept by its clones, so
    /// that a clone is known for one at once ([`AccessUrl::is_copy_of`]).
    id: u64,
    /// The template's text between the `{{DIGEST}}`s (one more than there are
    /// digests).
    pieces: Vec<String>,
    /// Bytes of every URL: the pieces and the digests between them.
    len: usize,
    /// Whether the pieces hold no control character, `"` or backslash: a
    /// URL is then written into a JSON string as it is (hex digits never
    /// need escaping), without checking its bytes.
    plain: bool,
}

/// Equal templates make equal URLs, whichever of them is a clone.
impl PartialEq for AccessUrl {
    fn eq(&self, other: &Self) -> bool {
        self.pieces == other.pieces
    }
}

impl Eq for AccessUrl {}

/// The placeholder filled per object.
const DIGEST: &str = "{{DIGEST}}";

impl AccessUrl {
    /// Fills `{{SCHEME}}`, `{{ENDPOINT}}` and `{{BUCKET}}` in `template` now;
    /// `{{DIGEST}}` is filled per object.
    pub fn new(template: &str, scheme: &str, endpoint: &str, bucket: &str) -> Self {
        let filled = template
            .replace("{{SCHEME}}", scheme)
            .replace("{{ENDPOINT}}", endpoint)
            .replace("{{BUCKET}}", bucket);
        let pieces: Vec<String> = filled.split(DIGEST).map(str::to_owned).collect();
        let len = pieces.iter().map(String::len).sum::<usize>()
            + crate::hex::DIGEST_HEX_LEN * (pieces.len() - 1);
        let plain = !filled.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            pieces,
            len,
            plain,
        }
    }

    /// Whether `self` is `other` or a clone of it: one comparison, where
    /// equality compares the text (a shard checks its copy of the store's
    /// template once per transaction).
    pub fn is_copy_of(&self, other: &AccessUrl) -> bool {
        self.id == other.id
    }

    /// Whether every URL of this template is plain text for a JSON string:
    /// no control character, `"` or backslash.
    pub fn is_json_plain(&self) -> bool {
        self.plain
    }

    /// The URL of the object with `digest`.
    pub fn render(&self, digest: &Digest) -> String {
        let mut url = Vec::new();
        self.write_to(digest, &mut url);
        String::from_utf8(url).expect("pieces and hex digits are text")
    }

    /// Appends the URL of `digest` to `out`: events write it straight into
    /// their buffer, with no string per object.
    pub fn write_to(&self, digest: &Digest, out: &mut Vec<u8>) {
        let hex = crate::hex::DigestHex::new(digest);
        out.reserve(self.len);
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(hex.as_bytes());
            }
            out.extend_from_slice(piece.as_bytes());
        }
    }
}

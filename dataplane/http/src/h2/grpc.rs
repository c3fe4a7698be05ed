//! Recognising gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2.md).

use crate::Headers;

/// Whether a `content-type` value is gRPC's: it starts with
/// `application/grpc` (`application/grpc`, `+proto`, `+json`, and gRPC-Web's
/// `application/grpc-web*`).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    value
        .get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Whether a header list announces gRPC (its `content-type`).
pub fn is_grpc(headers: &Headers<'_>) -> bool {
    headers
        .get("content-type")
        .is_some_and(is_grpc_content_type)
}

/// The `grpc-status` of a trailer list (or of a trailers-only response's
/// headers): 0 is OK.
pub fn grpc_status(headers: &Headers<'_>) -> Option<u32> {
    let v = headers.get("grpc-status")?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The `grpc-message` of a trailer list, still percent-encoded.
pub fn grpc_message<'a>(headers: &Headers<'a>) -> Option<&'a [u8]> {
    headers.get("grpc-message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"Application/GRPC;charset=utf-8"));
        assert!(is_grpc_content_type(b"application/grpc-web+proto"));
        assert!(!is_grpc_content_type(b"application/grp"));
        assert!(!is_grpc_content_type(b"application/json"));
    }
}

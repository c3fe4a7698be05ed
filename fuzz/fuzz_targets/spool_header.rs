//! Spool headers read back at start: any bytes either parse into a header
//! whose content type lies inside the input, or are refused — never a panic —
//! and every header the writer makes parses back to what it wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The header format is plain `std`; including it by path keeps the store's
// network stack out of the fuzz build.
#[path = "../../store/src/spool/header.rs"]
#[allow(dead_code, reason = "the target uses part of the module")]
mod header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = header::parse_header(data) {
        assert!(usize::from(h.offset) <= data.len());
        assert!(usize::from(h.offset) <= header::MAX_HEADER_BYTES);
        assert_eq!(
            usize::from(h.offset),
            header::header_len(h.content_type).into()
        );
    }
    if let Ok((ct, offset)) = header::parse_v1_header(data) {
        assert!(usize::from(offset) <= data.len());
        assert_eq!(usize::from(offset), header::MAGIC_V1.len() + 1 + ct.len());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let digest = mixed(data);
        let mut written = Vec::new();
        header::write_header(&mut written, &digest, data.len() as u64, text);
        let parsed = header::parse_header(&written).expect("a written header parses");
        assert_eq!(
            parsed.content_type,
            header::truncate(text, header::MAX_CONTENT_TYPE_BYTES)
        );
        assert_eq!(parsed.digest, digest);
        assert_eq!(parsed.len, data.len() as u64);
        assert_eq!(usize::from(parsed.offset), written.len());
        assert_eq!(header::header_len(text), parsed.offset);
    }
});

/// Any 32 bytes derived from the input: the header stores a digest, it does not
/// compute one.
fn mixed(data: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    for (i, b) in data.iter().enumerate() {
        d[i % 32] ^= b.rotate_left(i as u32 % 8);
    }
    d
}

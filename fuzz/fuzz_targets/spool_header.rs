//! Spool file headers read back at start: any bytes either parse into a header
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
        assert_eq!(
            usize::from(h.offset),
            header::MAGIC.len() + 1 + h.content_type.len()
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let written = header::header(text);
        let parsed = header::parse_header(&written).expect("a written header parses");
        assert_eq!(
            parsed.content_type,
            header::truncate(text, header::MAX_CONTENT_TYPE_BYTES)
        );
        assert_eq!(usize::from(parsed.offset), written.len());
        assert_eq!(header::header_len(text), parsed.offset);
    }
});

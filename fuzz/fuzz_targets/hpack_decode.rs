//! HPACK: the input as a sequence of header blocks (split at 0xFF 0xFE
//! markers) through one decoder, synced and unsynced; plus Huffman decoding
//! and an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::hpack::{Decoder, huffman};

fn blocks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = rest.windows(2).position(|w| w == [0xff, 0xfe]);
        let (block, next) = match at {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(block)
    })
}

fuzz_target!(|data: &[u8]| {
    for mut d in [
        Decoder::new(),
        Decoder::new_unsynced(),
        Decoder::with_max_size(256),
    ] {
        for block in blocks(data) {
            let mut total = 0usize;
            let _ = d.decode(block, |f| total += f.name.len() + f.value.len());
        }
    }

    let mut out = Vec::new();
    let _ = huffman::decode(data, &mut out);

    let mut enc = Vec::new();
    huffman::encode(data, &mut enc);
    assert_eq!(enc.len(), huffman::encoded_len(data));
    let mut dec = Vec::new();
    huffman::decode(&enc, &mut dec).expect("own encoding decodes");
    assert_eq!(dec, data);
});

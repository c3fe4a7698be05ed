//! Ring-buffer record decoding: any bytes either decode into a record whose
//! payload lies inside the input, or are refused — never a panic — and the
//! shard's view of the record is built without panicking either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_common::{Record, decode};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode(data) {
        if let Record::Data {
            data: fixed,
            payload,
            ..
        } = &record
        {
            assert_eq!(payload.len(), fixed.cap_len as usize);
            assert!(payload.len() <= tapwire_common::MAX_PAYLOAD);
        }
        let _ = record.header();
    }
});

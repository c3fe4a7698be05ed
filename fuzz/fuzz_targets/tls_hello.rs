//! The server name of a TLS ClientHello, as the probes copy it: a record or
//! the handshake message alone, possibly cut short.
//!
//! Besides "never panics", checks that a name found is within the input,
//! printable and at most `MAX_SERVER_NAME` bytes, and that every prefix
//! ending before the name's last byte does not name a different host.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::tls_hello::{Error, MAX_SERVER_NAME, server_name};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = server_name(data) else {
        return;
    };
    assert!(!name.is_empty() && name.len() <= MAX_SERVER_NAME);
    assert!(name.bytes().all(|b| b.is_ascii_graphic()));
    let start = name.as_ptr() as usize - data.as_ptr() as usize;
    let end = start + name.len();
    assert!(end <= data.len());
    // The input cut anywhere after the name still names it; cut inside or
    // before it, it names nothing (the copy ended early).
    assert_eq!(server_name(&data[..end]), Ok(name));
    for cut in [start, end - 1] {
        assert_eq!(
            server_name(&data[..cut]),
            Err(Error::Truncated),
            "cut {cut}"
        );
    }
});

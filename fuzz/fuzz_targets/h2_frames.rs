//! HTTP/2 frames and the per-direction decoder, from a known start (both
//! sides) and joined mid-way, fed in pieces sized by the first byte.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::Status;
use tapwire_http::h2::{Decoder, Event, PREFACE, Side, parse_frame};

fn drive(mut d: Decoder, input: &[u8], step: usize) -> usize {
    let mut n = 0usize;
    for piece in input.chunks(step) {
        let r = d.feed(piece, &mut |ev| {
            n += 1;
            if let Event::Headers(b) = ev {
                let _ = (b.is_trailers(), b.status(), b.is_grpc(), b.grpc_status());
                n += b.headers.iter().count();
            }
        });
        if r.is_err() {
            break;
        }
    }
    d.gap(3, &mut |_| {});
    let _ = d.feed(input, &mut |_| {});
    n
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Status::Complete((_, used))) = parse_frame(rest) {
        rest = &rest[used..];
    }

    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 32) + 1;
    drive(Decoder::new(Side::Server), input, step);
    drive(Decoder::new_mid_stream(), input, step);
    let mut client = PREFACE.to_vec();
    client.extend_from_slice(input);
    drive(Decoder::new(Side::Client), &client, step);
});

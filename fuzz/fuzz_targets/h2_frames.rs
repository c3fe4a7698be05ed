//! HTTP/2 frames and the per-direction decoder, from a known start (both
//! sides) and joined mid-way, fed in pieces sized by the first byte.
//!
//! Besides "never panics", checks that a decoder started at a known frame
//! boundary gives the same events and error fed whole or in pieces (a
//! mid-stream decoder may not: where records end is one of its clues).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::Status;
use tapwire_http::h2::{Decoder, Event, PREFACE, Side, parse_frame};

/// Events as text, with consecutive DATA pieces of one stream merged.
fn drive(mut d: Decoder, input: &[u8], step: usize) -> (Vec<String>, Option<String>) {
    let mut out: Vec<String> = Vec::new();
    let mut data: Option<(u32, Vec<u8>, bool)> = None;
    let mut err = None;
    for piece in input.chunks(step) {
        let r = d.feed(piece, &mut |ev| match ev {
            Event::Data {
                stream_id,
                data: bytes,
                end_stream,
            } => match &mut data {
                Some((s, buf, false)) if *s == stream_id => {
                    buf.extend_from_slice(bytes);
                    if end_stream {
                        data.as_mut().map(|d| d.2 = true);
                    }
                }
                _ => {
                    if let Some(prev) = data.take() {
                        out.push(format!("data {prev:?}"));
                    }
                    data = Some((stream_id, bytes.to_vec(), end_stream));
                }
            },
            other => {
                if let Some(prev) = data.take() {
                    out.push(format!("data {prev:?}"));
                }
                if let Event::Headers(b) = &other {
                    let _ = (b.is_trailers(), b.status(), b.is_grpc(), b.grpc_status());
                }
                out.push(format!("{other:?}"));
            }
        });
        if let Err(e) = r {
            err = Some(e.to_string());
            break;
        }
    }
    if let Some(prev) = data.take() {
        out.push(format!("data {prev:?}"));
    }
    d.gap(3, &mut |_| {});
    let _ = d.feed(input, &mut |_| {});
    (out, err)
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
    let whole = input.len().max(1);
    assert_eq!(
        drive(Decoder::new(Side::Server), input, whole),
        drive(Decoder::new(Side::Server), input, step),
        "step {step}"
    );
    drive(Decoder::new_mid_stream(), input, step);
    let mut client = PREFACE.to_vec();
    client.extend_from_slice(input);
    assert_eq!(
        drive(Decoder::new(Side::Client), &client, client.len()),
        drive(Decoder::new(Side::Client), &client, step),
        "client step {step}"
    );
});

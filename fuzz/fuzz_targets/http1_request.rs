//! HTTP/1 request heads and the request-side stream decoder.
//!
//! Besides "never panics", checks that feeding the input in pieces (sizes
//! taken from the first byte) gives the same events as feeding it whole.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::http1::{Decoder, EMPTY_HEADER, Event, Kind, Request};

fn events(input: &[u8], step: usize, mid_stream: bool) -> (Vec<String>, Option<String>) {
    let mut d = if mid_stream {
        Decoder::new_mid_stream(Kind::Request)
    } else {
        Decoder::request()
    };
    let mut out: Vec<String> = Vec::new();
    let mut body = Vec::new();
    let mut err = None;
    for piece in input.chunks(step) {
        let r = d.feed(piece, &mut |ev| match ev {
            Event::Body(b) | Event::Tunnel(b) => body.extend_from_slice(b),
            other => {
                if !body.is_empty() {
                    out.push(format!("body {:?}", std::mem::take(&mut body)));
                }
                out.push(format!("{other:?}"));
            }
        });
        if let Err(e) = r {
            err = Some(e.to_string());
            break;
        }
    }
    if err.is_none() {
        // Settle a pending upgrade either way, alternating on the input.
        let switched = input.len() % 2 == 0;
        if let Err(e) = d.resolve_upgrade(switched, &mut |_| {}) {
            err = Some(e.to_string());
        }
        let _ = d.eof(&mut |_| {});
    }
    if !body.is_empty() {
        out.push(format!("body {body:?}"));
    }
    (out, err)
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [EMPTY_HEADER; 32];
    let mut req = Request::new(&mut headers);
    let _ = req.parse(data);

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 16) + 1;
    for mid_stream in [false, true] {
        let whole = events(rest, rest.len().max(1), mid_stream);
        let split = events(rest, step, mid_stream);
        assert_eq!(whole, split, "step {step} mid-stream {mid_stream}");
    }
});

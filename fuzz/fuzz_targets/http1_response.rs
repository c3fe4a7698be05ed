//! HTTP/1 response heads, the response-side decoder (told a method from the
//! first byte) and a whole connection with both sides.
//!
//! Besides "never panics", checks that feeding the input in pieces gives
//! the same events as feeding it whole.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapwire_http::http1::{
    Connection, Decoder, Direction, EMPTY_HEADER, Event, Kind, Method, Response,
};

const METHODS: [Method; 4] = [Method::Get, Method::Head, Method::Connect, Method::Post];

fn events(
    input: &[u8],
    step: usize,
    method: Method,
    mid_stream: bool,
) -> (Vec<String>, Option<String>) {
    let mut d = if mid_stream {
        Decoder::new_mid_stream(Kind::Response)
    } else {
        Decoder::response()
    };
    d.expect_response_to(method);
    let mut out: Vec<String> = Vec::new();
    let mut body = Vec::new();
    let mut err = None;
    let mut on = |ev: Event<'_>| match ev {
        Event::Body(b) | Event::Tunnel(b) => body.extend_from_slice(b),
        other => {
            if !body.is_empty() {
                out.push(format!("body {:?}", std::mem::take(&mut body)));
            }
            out.push(format!("{other:?}"));
        }
    };
    for piece in input.chunks(step) {
        if let Err(e) = d.feed(piece, &mut on) {
            err = Some(e.to_string());
            break;
        }
    }
    if err.is_none()
        && let Err(e) = d.eof(&mut on)
    {
        err = Some(e.to_string());
    }
    if !body.is_empty() {
        out.push(format!("body {body:?}"));
    }
    (out, err)
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [EMPTY_HEADER; 32];
    let mut resp = Response::new(&mut headers);
    let _ = resp.parse(data);

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(first & 3)];
    let step = usize::from(first >> 4) + 1;
    for mid_stream in [false, true] {
        let whole = events(rest, rest.len().max(1), method, mid_stream);
        let split = events(rest, step, method, mid_stream);
        assert_eq!(whole, split, "step {step} mid-stream {mid_stream}");
    }

    // Both directions: the input split in two at a point from the first byte.
    let at = usize::from(first).min(rest.len());
    let (q, r) = rest.split_at(at);
    let mut c = if first & 1 == 0 {
        Connection::new()
    } else {
        Connection::new_mid_stream()
    };
    let _ = c.feed(Direction::Request, q, &mut |_, _| {});
    let _ = c.feed(Direction::Response, r, &mut |_, _| {});
    let _ = c.gap(Direction::Response, u64::from(first), &mut |_, _| {});
    let _ = c.eof(Direction::Response, &mut |_, _| {});
});

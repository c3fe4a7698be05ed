//! RFC 7541 Appendix C, every example, with the exact header lists and
//! dynamic tables the RFC prints, plus the mid-connection behaviour.

use super::decoder::integer;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn decode(
    d: &mut Decoder,
    block: &[u8],
) -> Result<(Vec<(String, String)>, BlockState), DecoderError> {
    let mut out = Vec::new();
    let state = d.decode(block, |f| {
        out.push((
            String::from_utf8_lossy(f.name).into_owned(),
            String::from_utf8_lossy(f.value).into_owned(),
        ))
    })?;
    Ok((out, state))
}

fn table(d: &Decoder) -> Vec<(String, String)> {
    (0..d.table().len())
        .map(|i| {
            let e = d.table().get(i).expect("in range");
            (
                String::from_utf8_lossy(e.name).into_owned(),
                String::from_utf8_lossy(e.value).into_owned(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// One step of an example: block, expected header list, expected table
/// (newest first) and table size.
type Step<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [(&'a str, &'a str)],
    usize,
);

fn check_sequence(mut d: Decoder, steps: &[Step<'_>]) {
    for (i, (block, headers, entries, size)) in steps.iter().enumerate() {
        let (got, state) = decode(&mut d, &hex(block)).unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(got, pairs(headers), "step {i} headers");
        assert_eq!(state, BlockState::Complete);
        assert_eq!(table(&d), pairs(entries), "step {i} table");
        assert_eq!(d.table().size(), *size, "step {i} size");
    }
}

#[test]
fn c1_integers() {
    // C.1.1: 10 with a 5-bit prefix.
    let mut pos = 0;
    assert_eq!(integer(&[0x0a], &mut pos, 5), Ok(10));
    assert_eq!(pos, 1);
    // C.1.2: 1337 with a 5-bit prefix.
    let mut pos = 0;
    assert_eq!(integer(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
    assert_eq!(pos, 3);
    // C.1.3: 42 at an octet boundary.
    let mut pos = 0;
    assert_eq!(integer(&[0x2a], &mut pos, 8), Ok(42));
    // Ended inside; too large.
    let mut pos = 0;
    assert_eq!(
        integer(&[0x1f, 0x9a], &mut pos, 5),
        Err(DecoderError::NeedMore(NeedMore::IntegerUnderflow))
    );
    let mut pos = 0;
    assert_eq!(
        integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5),
        Err(DecoderError::IntegerOverflow)
    );
}

#[test]
fn c2_1_literal_with_indexing() {
    check_sequence(
        Decoder::new(),
        &[(
            "400a637573746f6d2d6b65790d637573746f6d2d686561646572",
            &[("custom-key", "custom-header")],
            &[("custom-key", "custom-header")],
            55,
        )],
    );
}

#[test]
fn c2_2_literal_without_indexing() {
    check_sequence(
        Decoder::new(),
        &[(
            "040c2f73616d706c652f70617468",
            &[(":path", "/sample/path")],
            &[],
            0,
        )],
    );
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut d = Decoder::new();
    let mut never = false;
    d.decode(&hex("100870617373776f726406736563726574"), |f| {
        assert_eq!((f.name, f.value), (&b"password"[..], &b"secret"[..]));
        never = f.never_indexed;
    })
    .expect("valid");
    assert!(never);
    assert_eq!(d.table().len(), 0);
}

#[test]
fn c2_4_indexed() {
    check_sequence(Decoder::new(), &[("82", &[(":method", "GET")], &[], 0)]);
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_T1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const REQ_T2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const REQ_T3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn c3_requests_without_huffman() {
    check_sequence(
        Decoder::new(),
        &[
            ("828684410f7777772e6578616d706c652e636f6d", REQ1, REQ_T1, 57),
            ("828684be58086e6f2d6361636865", REQ2, REQ_T2, 110),
            (
                "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
    );
}

#[test]
fn c4_requests_with_huffman() {
    check_sequence(
        Decoder::new(),
        &[
            ("828684418cf1e3c2e5f23a6ba0ab90f4ff", REQ1, REQ_T1, 57),
            ("828684be5886a8eb10649cbf", REQ2, REQ_T2, 110),
            (
                "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
    );
}

const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", DATE1),
    ("location", LOC),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", DATE1),
    ("location", LOC),
];
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", DATE2),
    ("location", LOC),
    ("content-encoding", "gzip"),
    ("set-cookie", COOKIE),
];
const RESP_T1: &[(&str, &str)] = &[
    ("location", LOC),
    ("date", DATE1),
    ("cache-control", "private"),
    (":status", "302"),
];
const RESP_T2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", LOC),
    ("date", DATE1),
    ("cache-control", "private"),
];
const RESP_T3: &[(&str, &str)] = &[
    ("set-cookie", COOKIE),
    ("content-encoding", "gzip"),
    ("date", DATE2),
];

#[test]
fn c5_responses_without_huffman() {
    check_sequence(
        Decoder::with_max_size(256),
        &[
            (
                "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4803333037c1c0bf", RESP2, RESP_T2, 222),
            (
                "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
    );
}

#[test]
fn c6_responses_with_huffman() {
    check_sequence(
        Decoder::with_max_size(256),
        &[
            (
                "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4883640effc1c0bf", RESP2, RESP_T2, 222),
            (
                "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
    );
}

#[test]
fn need_more_is_not_invalid() {
    let block = hex("828684410f7777772e6578616d706c652e636f6d");
    for n in 1..block.len() {
        let r = decode(&mut Decoder::new(), &block[..n]);
        if n < 4 {
            // Cut between whole representations: fine.
            assert!(r.is_ok() || matches!(r, Err(DecoderError::NeedMore(_))));
        } else {
            assert!(
                matches!(r, Err(DecoderError::NeedMore(_))),
                "prefix {n}: {r:?}"
            );
        }
    }
    assert_eq!(
        decode(&mut Decoder::new(), &[0xbe]).map(|r| r.1),
        Err(DecoderError::InvalidTableIndex)
    );
    assert_eq!(
        decode(&mut Decoder::new(), &[0x80]).map(|r| r.1),
        Err(DecoderError::InvalidTableIndex)
    );
    assert_eq!(
        decode(&mut Decoder::new(), &[0x82, 0x20]).map(|r| r.1),
        Err(DecoderError::SizeUpdateNotAtStart)
    );
    assert_eq!(
        decode(&mut Decoder::new(), &[0x3f, 0xe1, 0xff, 0xff, 0x07]).map(|r| r.1),
        Err(DecoderError::InvalidMaxDynamicSize)
    );
    assert_eq!(
        decode(&mut Decoder::new(), &hex("0481ff80")).map(|r| r.1),
        Err(DecoderError::InvalidHuffmanCode)
    );
}

#[test]
fn size_update_at_start_evicts() {
    let mut d = Decoder::new();
    decode(
        &mut d,
        &hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572"),
    )
    .expect("valid");
    assert_eq!(d.table().len(), 1);
    // Size 0 then back to 4096, then an indexed field.
    let (got, _) = decode(&mut d, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).expect("valid");
    assert_eq!(got, pairs(&[(":method", "GET")]));
    assert_eq!(d.table().len(), 0);
    assert_eq!(d.table().max_size(), 4096);
}

#[test]
fn joined_mid_connection() {
    // The decoder missed C.3.1 and C.3.2 and sees C.3.3 first: 0xbf refers
    // to an entry it never saw.
    let mut d = Decoder::new_unsynced();
    let (got, state) = decode(
        &mut d,
        &hex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
    )
    .expect("valid");
    assert_eq!(state, BlockState::Partial { missing: 1 });
    assert_eq!(
        got,
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            ("custom-key", "custom-value"),
        ])
    );
    // The entry it saw inserted is the newest, so index 62 is right.
    let (got, state) = decode(&mut d, &[0xbe]).expect("valid");
    assert_eq!(state, BlockState::Unverified);
    assert_eq!(got, pairs(&[("custom-key", "custom-value")]));
    // An incrementally indexed literal with an unknown name keeps the
    // indices in step: index 62 is now that entry (name unknown), 63 the
    // custom-key one.
    let (got, state) = decode(&mut d, &[0x7f, 0x0a, 0x01, b'v', 0xbf]).expect("valid");
    assert_eq!(state, BlockState::Partial { missing: 1 });
    assert_eq!(got, pairs(&[("custom-key", "custom-value")]));
    let (got, state) = decode(&mut d, &[0xbe]).expect("valid");
    assert_eq!(state, BlockState::Partial { missing: 1 });
    assert!(got.is_empty());
    // After a gap, everything is forgotten.
    d.desync();
    assert!(matches!(
        decode(&mut d, &[0xbe]),
        Ok((_, BlockState::Partial { .. }))
    ));
}

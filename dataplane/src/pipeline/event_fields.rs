//! Event fields derived from a transaction without copying it: the request
//! target with credential-like query parameters masked, the full URL, the
//! wall-clock time, and the auth token's source, type and last characters. Each
//! is written straight into the event JSON (`collect_str`), no string built.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Display, Formatter, Write};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use serde::{Serialize, Serializer};

use super::txn::HeaderFields;

/// Query parameters whose values never reach an event (ASCII case-insensitive);
/// documented in `docs/stdout.md`.
pub const CREDENTIAL_PARAMS: [&str; 22] = [
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "auth_token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// What replaces a credential parameter's value.
pub const MASK: &str = "REDACTED";

fn is_credential(name: &str) -> bool {
    CREDENTIAL_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// A request target with the values of [`CREDENTIAL_PARAMS`] in its query
/// replaced by [`MASK`].
#[derive(Debug, Clone, Copy)]
pub struct MaskedTarget<'a>(pub &'a str);

impl Display for MaskedTarget<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let Some((path, rest)) = self.0.split_once('?') else {
            return f.write_str(self.0);
        };
        let (query, fragment) = match rest.split_once('#') {
            Some((q, frag)) => (q, Some(frag)),
            None => (rest, None),
        };
        f.write_str(path)?;
        f.write_char('?')?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_char('&')?;
            }
            match pair.split_once('=') {
                Some((name, _)) if is_credential(name) => {
                    f.write_str(name)?;
                    f.write_char('=')?;
                    f.write_str(MASK)?;
                }
                _ => f.write_str(pair)?,
            }
        }
        if let Some(frag) = fragment {
            f.write_char('#')?;
            f.write_str(frag)?;
        }
        Ok(())
    }
}

/// The request's full URL: scheme (`https` inside TLS), authority (the remote
/// address when the request named none) and the masked target. An
/// absolute-form target (proxy request) is the URL itself.
#[derive(Debug, Clone, Copy)]
pub struct Url<'a> {
    /// Captured inside TLS.
    pub tls: bool,
    /// `Host` or `:authority`.
    pub authority: Option<&'a str>,
    /// The TLS server name and the server's port, for requests without an
    /// authority.
    pub sni: Option<(&'a str, u16)>,
    /// The remote end, for requests without an authority or server name.
    pub remote: SocketAddr,
    /// Request target.
    pub target: &'a str,
}

impl Url<'_> {
    /// The URL's host part: the authority, else the TLS server name (with
    /// the server's port unless it is the scheme's), else the remote address.
    pub fn host(&self) -> UrlHost<'_> {
        UrlHost(self)
    }
}

/// [`Url::host`].
pub struct UrlHost<'a>(&'a Url<'a>);

impl Display for UrlHost<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let url = self.0;
        match (url.authority, url.sni) {
            (Some(a), _) => f.write_str(a),
            (None, Some((name, port))) => {
                f.write_str(name)?;
                if port != if url.tls { 443 } else { 80 } {
                    write!(f, ":{port}")?;
                }
                Ok(())
            }
            (None, None) => url.remote.fmt(f),
        }
    }
}

impl Display for Url<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let target = MaskedTarget(self.target);
        if self.target.contains("://") && !self.target.starts_with('/') {
            return target.fmt(f);
        }
        f.write_str(if self.tls { "https://" } else { "http://" })?;
        self.host().fmt(f)?;
        if self.target.starts_with('/') {
            target.fmt(f)?;
        }
        Ok(())
    }
}

/// The host part of a `Host`/`:authority` value (no port, no brackets).
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A wall-clock instant, nanoseconds since the Unix epoch, written as RFC 3339
/// UTC with microseconds (`2026-11-30T06:12:00.123456Z`).
#[derive(Debug, Clone, Copy)]
pub struct WallTime(pub u64);

impl WallTime {
    /// The wall-clock time of kernel monotonic instant `mono_ns` (the clock of
    /// `bpf_ktime_get_ns`), by the clocks' offset. The offset is read (two
    /// clock reads) at most once per [`CLOCK_OFFSET_KEPT_NS`] of event time
    /// per thread, not per event: it moves only when the wall clock is set or
    /// slewed, which NTP does by at most 500 ppm (5 µs per 10 ms).
    pub fn of_monotonic(mono_ns: u64) -> Self {
        thread_local! {
            /// (monotonic time the offset was read at, wall − monotonic then).
            static OFFSET: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
        }
        let offset = match OFFSET.get() {
            Some((at, offset)) if mono_ns.abs_diff(at) < CLOCK_OFFSET_KEPT_NS => offset,
            _ => {
                let (real, mono) = (
                    clock_ns(libc::CLOCK_REALTIME),
                    clock_ns(libc::CLOCK_MONOTONIC),
                );
                let offset = real.saturating_sub(mono);
                OFFSET.set(Some((mono_ns, offset)));
                offset
            }
        };
        WallTime(offset.saturating_add(mono_ns))
    }

    /// As text: `2026-11-30T06:12:00.123456Z`. The date and time to the
    /// second are kept from the thread's last timestamp when they are the
    /// same (events come in bursts within one second), so mostly only the
    /// microseconds are written.
    pub fn text(&self) -> [u8; WALL_TIME_LEN] {
        thread_local! {
            /// (second, its text up to the `.`), of the thread's last timestamp.
            static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
        }
        let secs = self.0 / 1_000_000_000;
        let micros = (self.0 % 1_000_000_000) / 1_000;
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        match SECOND.get() {
            (second, prefix) if second == secs => text[..19].copy_from_slice(&prefix),
            _ => {
                let (y, m, d) = tapwire_store::calendar::civil_from_days(secs / 86_400);
                let rem = secs % 86_400;
                put_digits(&mut text[0..4], y.min(9999));
                put_digits(&mut text[5..7], m);
                put_digits(&mut text[8..10], d);
                put_digits(&mut text[11..13], rem / 3600);
                put_digits(&mut text[14..16], rem % 3600 / 60);
                put_digits(&mut text[17..19], rem % 60);
                let mut prefix = [0; 19];
                prefix.copy_from_slice(&text[..19]);
                SECOND.set((secs, prefix));
            }
        }
        put_digits(&mut text[20..26], micros);
        text
    }
}

/// Bytes of a [`WallTime`] as text.
pub const WALL_TIME_LEN: usize = 27;

/// Event time over which a thread keeps the wall clock's offset.
const CLOCK_OFFSET_KEPT_NS: u64 = 10_000_000;

/// `clock`'s time now, in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Writes `value`'s last `digits.len()` decimal digits into `digits`.
fn put_digits(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl Display for WallTime {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // Only ASCII digits were written into ASCII text.
        f.write_str(std::str::from_utf8(&self.text()).unwrap_or_default())
    }
}

/// Headers that carry an API token, as Qtap names them; `authorization` first.
const TOKEN_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
];

/// Shortest token whose last characters an event may show.
pub const MIN_MASKED_TOKEN: usize = 16;

/// The request's auth token as an event may describe it: where it came from,
/// its type and at most its last 4 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthToken<'a> {
    /// Header name, lowercase.
    pub source: &'static str,
    /// `Authorization`'s scheme as sent (`Bearer`, `Basic`, ...; `token` when it
    /// has none), else `api_key`.
    pub kind: &'a str,
    /// The token's last 4 characters, for tokens of [`MIN_MASKED_TOKEN`]
    /// characters or more.
    pub last4: Option<&'a str>,
}

impl<'a> AuthToken<'a> {
    /// The first token header among `headers`.
    pub fn find(headers: &'a HeaderFields) -> Option<Self> {
        // One pass over the fields: the first of the earliest-listed name.
        let mut found: Option<(usize, &str)> = None;
        for (name, value) in headers.iter() {
            let rank = TOKEN_HEADERS
                .iter()
                .position(|h| tapwire_http::name_eq(h.as_bytes(), name.as_bytes()));
            if let Some(rank) = rank
                && found.is_none_or(|(best, _)| rank < best)
            {
                found = Some((rank, value));
            }
        }
        let (rank, value) = found?;
        let (source, value) = (TOKEN_HEADERS[rank], value.trim());
        let (kind, token) = match value.split_once(' ') {
            Some((scheme, token)) if source == "authorization" => (scheme, token.trim()),
            _ if source == "authorization" => ("token", value),
            _ => ("api_key", value),
        };
        let last4 = (token.chars().count() >= MIN_MASKED_TOKEN).then(|| {
            let start = token.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
            &token[start..]
        });
        Some(AuthToken {
            source,
            kind,
            last4,
        })
    }
}

/// Serializes a [`Display`] value as a JSON string, formatted first into a
/// buffer on the stack: the serializer then escapes it in one pass, not once
/// per fragment that `Display` writes (a timestamp or URL writes a dozen).
/// Values longer than the buffer are formatted into a `String` first.
pub fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    with_text(value, |text| s.serialize_str(text))
}

/// Calls `f` with `value` formatted on the stack, or (past
/// [`DISPLAY_BUFFER`], rarely) in a `String`.
fn with_text<R>(value: &impl Display, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = StackText::<DISPLAY_BUFFER>::new();
    match write!(buf, "{value}") {
        Ok(()) => f(buf.as_str()),
        Err(fmt::Error) => f(&value.to_string()),
    }
}

/// Bytes of a [`display`] value formatted on the stack; URLs and paths past it
/// go through a `String`.
const DISPLAY_BUFFER: usize = 512;

/// Text formatted into a fixed buffer; a write past its end fails.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes one JSON object field by field into a buffer, for the events that
/// are written for every transaction: keys are constants that need no
/// escaping, and a string value is checked for characters that need escaping
/// in one vectorised pass and copied whole when it has none (nearly always),
/// else escaped by `serde_json`. Tests hold each such event to what serde
/// writes for the same fields.
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    /// Starts an object at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Starts field `key` (a plain name: written as is): `,"key":` written
    /// straight into the buffer's spare room. Where this is inlined the key
    /// is a constant, so its copy is a few stores of fixed size; only the
    /// leading comma's presence is known at run time. (Putting the piece
    /// together on the stack first and copying it whole made each key a
    /// wide load of bytes just stored narrowly, which the CPU cannot forward:
    /// a stall per key, a tenth of the shard's time.)
    #[inline(always)]
    pub fn key(&mut self, key: &str) -> &mut Self {
        let comma = usize::from(!std::mem::take(&mut self.first));
        let len = key.len();
        self.out.reserve(len + 4);
        let at = self.out.len();
        let dst = self.out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: `len + 4` bytes of spare room were reserved above, and the
        // writes below stay within `comma + len + 3 <= len + 4` of them.
        unsafe {
            *dst = b',';
            *dst.add(comma) = b'"';
            std::ptr::copy_nonoverlapping(key.as_ptr(), dst.add(comma + 1), len);
            *dst.add(comma + 1 + len) = b'"';
            *dst.add(comma + 2 + len) = b':';
            self.out.set_len(at + comma + 3 + len);
        }
        self
    }

    /// A string value that is one of the program's own words (an event type,
    /// a protocol, a role): plain ASCII, copied without the escape check.
    #[inline(always)]
    pub fn word(&mut self, value: &'static str) {
        debug_assert!(!needs_escape(value.as_bytes()), "{value:?}");
        self.out.reserve(value.len() + 2);
        self.out.push(b'"');
        push_bytes(self.out, value.as_bytes());
        self.out.push(b'"');
    }

    /// A string value.
    #[inline(always)]
    pub fn str(&mut self, value: &str) {
        json_string(self.out, value);
    }

    /// A string value or null.
    pub fn opt_str(&mut self, value: Option<&str>) {
        match value {
            Some(v) => json_string(self.out, v),
            None => self.null(),
        }
    }

    /// A [`Display`] value as a string, formatted straight into the buffer
    /// and escaped afterwards in the rare case it needs it.
    pub fn display(&mut self, value: &impl Display) {
        // Writing into a `Vec` cannot fail; a `Display` that fails leaves
        // what it wrote.
        self.text_with(|out| {
            let _ = write!(VecText(out), "{value}");
        });
    }

    /// A string value that `write` appends as UTF-8 text straight into the
    /// buffer, escaped afterwards in the rare case it needs it.
    pub fn text_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.out.len();
        self.out.push(b'"');
        write(self.out);
        if needs_escape(&self.out[start + 1..]) {
            let text = self.out.split_off(start + 1);
            self.out.truncate(start);
            // `write` appends text (UTF-8).
            json_string(self.out, std::str::from_utf8(&text).unwrap_or_default());
        } else {
            self.out.push(b'"');
        }
    }

    /// The URL of `digest` by `url`'s template, as a string: copied as it is
    /// when the template is plain text (as it nearly always is), else
    /// checked and escaped like any text.
    pub fn access_url(
        &mut self,
        url: &tapwire_store::access_url::AccessUrl,
        digest: &blake3::Hash,
    ) {
        if url.is_json_plain() {
            self.out.push(b'"');
            url.write_to(digest, self.out);
            self.out.push(b'"');
        } else {
            self.text_with(|out| url.write_to(digest, out));
        }
    }

    /// A wall-clock time as a string ([`WallTime::text`]: needs no escaping).
    pub fn wall_time(&mut self, at: WallTime) {
        self.out.reserve(WALL_TIME_LEN + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(&at.text());
        self.out.push(b'"');
    }

    /// A socket address as a string, as its `Display` writes it; IPv4
    /// addresses digit by digit, without the formatting machinery.
    pub fn socket_addr(&mut self, addr: &SocketAddr) {
        let SocketAddr::V4(v4) = addr else {
            return self.display(addr);
        };
        self.out.push(b'"');
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            if i > 0 {
                self.out.push(b'.');
            }
            push_uint(self.out, octet.into());
        }
        self.out.push(b':');
        push_uint(self.out, v4.port().into());
        self.out.push(b'"');
    }

    /// A BLAKE3 digest as lowercase hex: hex digits need no escaping, so
    /// they are copied as they are.
    pub fn digest(&mut self, digest: &blake3::Hash) {
        self.out.push(b'"');
        self.out
            .extend_from_slice(tapwire_store::hex::DigestHex::new(digest).as_bytes());
        self.out.push(b'"');
    }

    /// An unsigned integer.
    #[inline(always)]
    pub fn uint(&mut self, value: impl Into<u64>) {
        push_uint(self.out, value.into());
    }

    /// An unsigned integer or null.
    pub fn opt_uint(&mut self, value: Option<impl Into<u64>>) {
        match value {
            Some(v) => self.uint(v),
            None => self.null(),
        }
    }

    /// A float, as `serde_json` writes it (null when not finite).
    pub fn float(&mut self, value: f64) {
        serde_json::to_writer(&mut *self.out, &value).expect("a float serializes");
    }

    /// `true` or `false`.
    #[inline(always)]
    pub fn bool(&mut self, value: bool) {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `null`.
    #[inline(always)]
    pub fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    /// The buffer, to write a nested value into.
    pub fn raw(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// Capacity past which a thread's event buffer is given back after use (an
/// event with a very long URL); events are about 1 KiB.
const EVENT_BUFFER_KEEP: usize = 64 * 1024;

/// The event `write` appends to an empty buffer, as `Bytes` of exactly its
/// length. The buffer is this thread's, reused from event to event, so an
/// event costs one allocation of its final size: no growth on the way, and
/// no second allocation to turn a part-used `Vec` into `Bytes`.
pub fn event_bytes_with(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            write(&mut buf);
            let event = Bytes::copy_from_slice(&buf);
            if buf.capacity() > EVENT_BUFFER_KEEP {
                *buf = Vec::new();
            }
            event
        }
        // An event written while writing another: a buffer of its own.
        Err(_) => {
            let mut buf = Vec::new();
            write(&mut buf);
            Bytes::from(buf)
        }
    })
}

/// Appends `value` in decimal, written digit pair by digit pair straight
/// into the buffer's spare room from its last digit back. (Formatting on the
/// stack and copying the digits over read back bytes just stored, a stall
/// per number; an event writes a dozen numbers.)
pub fn push_uint(out: &mut Vec<u8>, mut value: u64) {
    const PAIRS: &[u8; 200] = b"\
        0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let digits = value.checked_ilog10().map_or(1, |d| d as usize + 1);
    out.reserve(digits);
    let at = out.len();
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let mut end = digits;
    // SAFETY: `digits` bytes of spare room were reserved above; `end` counts
    // down from `digits` to 0 by as many bytes as are written below it.
    unsafe {
        while value >= 100 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            end -= 2;
            std::ptr::copy_nonoverlapping(PAIRS.as_ptr().add(pair), dst.add(end), 2);
        }
        if value >= 10 {
            let pair = value as usize * 2;
            std::ptr::copy_nonoverlapping(PAIRS.as_ptr().add(pair), dst, 2);
        } else {
            *dst = b'0' + value as u8;
        }
        out.set_len(at + digits);
    }
}

/// Appends `bytes`. Up to 32 bytes (most keys, words and field values of an
/// event) are copied as two overlapping copies of a fixed size, which the
/// compiler inlines as loads and stores, instead of a `memcpy` call.
#[inline(always)]
pub fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if len > 32 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(len);
    let at = out.len();
    let (src, dst) = (
        bytes.as_ptr(),
        out.spare_capacity_mut().as_mut_ptr().cast::<u8>(),
    );
    // SAFETY: `dst` has room for `len` bytes (reserved above) and `src`
    // holds `len`; each pair of copies covers exactly bytes 0..len, reading
    // and writing only inside them.
    unsafe {
        let two = |n: usize| {
            std::ptr::copy_nonoverlapping(src, dst, n);
            std::ptr::copy_nonoverlapping(src.add(len - n), dst.add(len - n), n);
        };
        if len >= 16 {
            two(16);
        } else if len >= 8 {
            two(8);
        } else if len >= 4 {
            two(4);
        } else {
            for i in 0..len {
                *dst.add(i) = *src.add(i);
            }
        }
        out.set_len(at + len);
    }
}

/// Formats into the end of a `Vec`.
struct VecText<'a>(&'a mut Vec<u8>);

impl Write for VecText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Whether `text` holds a byte that a JSON string must escape: 16 bytes at a
/// time with SSE2 (every x86-64 has it), else 8 at a time in a word. A fold
/// over the bytes compiled to a byte-by-byte loop, run over every string of
/// every event.
fn needs_escape(text: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return needs_escape_sse2(text);
    #[cfg(not(target_arch = "x86_64"))]
    return needs_escape_words(text);
}

#[cfg(target_arch = "x86_64")]
fn needs_escape_sse2(text: &[u8]) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    if text.len() < 16 {
        return needs_escape_short(text);
    }
    // SAFETY: SSE2 is part of x86-64; each load reads 16 bytes of `text`,
    // which holds at least 16 (unaligned loads allowed).
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let last_control = _mm_set1_epi8(0x1f);
        let flagged = |at: usize| {
            let v = _mm_loadu_si128(text.as_ptr().add(at).cast::<__m128i>());
            // A byte is a control character when min(b, 0x1f) == b.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);
            let special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
            _mm_movemask_epi8(_mm_or_si128(control, special)) != 0
        };
        let last = text.len() - 16;
        let mut at = 0;
        while at < last {
            if flagged(at) {
                return true;
            }
            at += 16;
        }
        // The last 16 bytes, overlapping the chunk before: no byte loop for
        // the tail.
        flagged(last)
    }
}

/// [`needs_escape`] for fewer than 16 bytes (most of an event's strings: a
/// method, a content type, a process name): two overlapping words from 8
/// bytes on, else byte by byte.
#[cfg(target_arch = "x86_64")]
fn needs_escape_short(text: &[u8]) -> bool {
    let len = text.len();
    if len < 8 {
        return text.iter().any(|&b| escapes(b));
    }
    let word = |at: usize| u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"));
    word_escapes(word(0)) || word_escapes(word(len - 8))
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn needs_escape_words(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        if word_escapes(u64::from_ne_bytes(chunk.try_into().expect("8 bytes"))) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| escapes(b))
}

/// Whether one of the 8 bytes of `w` is one JSON escapes: one subtraction
/// flags every byte below 0x20, an XOR-and-subtract each `"` and backslash.
/// A flag can be wrongly set only above a rightly set one (a borrow runs
/// towards higher bytes), so whether any is set is exact.
#[inline(always)]
fn word_escapes(w: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero when some byte of `w` is below `n` (n <= 0x80).
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    let hits = below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1);
    hits != 0
}

/// Whether JSON escapes byte `b` in a string.
fn escapes(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `value` as a JSON string: copied whole unless it holds a character JSON
/// escapes (a control character, `"` or a backslash).
pub fn json_string(out: &mut Vec<u8>, value: &str) {
    if needs_escape(value.as_bytes()) {
        serde_json::to_writer(&mut *out, value).expect("a string serializes");
    } else {
        out.reserve(value.len() + 2);
        out.push(b'"');
        push_bytes(out, value.as_bytes());
        out.push(b'"');
    }
}

/// `AuthToken` as three event fields.
#[derive(Serialize)]
pub struct AuthTokenFields<'a> {
    /// Header the token came from.
    pub auth_token_source: &'static str,
    /// Its type.
    pub auth_token_type: &'a str,
    /// `...` and its last 4 characters, or null.
    #[serde(serialize_with = "mask_last4")]
    pub auth_token_mask: Option<&'a str>,
}

fn mask_last4<S: Serializer>(last4: &Option<&str>, s: S) -> Result<S::Ok, S::Error> {
    match last4 {
        Some(l) => s.collect_str(&format_args!("...{l}")),
        None => s.serialize_none(),
    }
}

impl<'a> From<AuthToken<'a>> for AuthTokenFields<'a> {
    fn from(t: AuthToken<'a>) -> Self {
        AuthTokenFields {
            auth_token_source: t.source,
            auth_token_type: t.kind,
            auth_token_mask: t.last4,
        }
    }
}

/// True if `ip` is internal in `tap.direction`'s sense: loopback, RFC 1918,
/// link-local or CGNAT (IPv4); loopback, RFC 4193 or link-local (IPv6);
/// v4-mapped IPv6 addresses as IPv4. The probes apply the same test.
pub fn is_internal(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || (o[0] == 100 && o[1] & 0xc0 == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback() || s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfe80
        }
    }
}

/// A transaction's or connection's direction in Qtap's words: `ingress` for the
/// server side, `egress-internal` or `egress-external` (by the peer's address)
/// for the client side.
pub fn direction_word(client: bool, peer: IpAddr) -> &'static str {
    if !client {
        "ingress"
    } else if is_internal(peer) {
        "egress-internal"
    } else {
        "egress-external"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_fields_are_escaped_whole_at_any_length() {
        #[derive(Serialize)]
        struct Field<'a> {
            #[serde(serialize_with = "display")]
            path: MaskedTarget<'a>,
        }
        for len in [
            0,
            1,
            DISPLAY_BUFFER - 1,
            DISPLAY_BUFFER,
            DISPLAY_BUFFER + 1,
            4096,
        ] {
            let target = format!("/\"q\\é\n{}", "x".repeat(len));
            let json = serde_json::to_string(&Field {
                path: MaskedTarget(&target),
            })
            .unwrap();
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back["path"], target.as_str(), "length {len}");
        }
    }

    #[test]
    fn bytes_of_every_length_are_appended_exactly_after_what_is_there() {
        let source: Vec<u8> = (0..48u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..=source.len() {
            for before in [0, 1, 7, 31] {
                let mut out = vec![0xee; before];
                push_bytes(&mut out, &source[..len]);
                assert_eq!(out.len(), before + len, "{len} after {before}");
                assert!(
                    out[..before].iter().all(|&b| b == 0xee),
                    "{len} after {before}"
                );
                assert_eq!(&out[before..], &source[..len], "{len} after {before}");
            }
        }
    }

    #[test]
    fn access_urls_are_written_as_serde_writes_them_plain_or_not() {
        use tapwire_store::access_url::AccessUrl;
        let digest = blake3::hash(b"object");
        for template in [
            "https://{{ENDPOINT}}/{{BUCKET}}/{{DIGEST}}",
            "https://{{ENDPOINT}}/{{DIGEST}}?copy={{DIGEST}}",
            "https://{{ENDPOINT}}/\"q\"\\{{DIGEST}}\t",
        ] {
            let url = AccessUrl::new(template, "https", "s3.local:8333", "b");
            assert_eq!(url.is_json_plain(), !template.contains(['"', '\\', '\t']));
            let mut out = Vec::new();
            let mut e = JsonObject::new(&mut out);
            e.key("url").access_url(&url, &digest);
            e.end();
            let want = serde_json::json!({ "url": url.render(&digest) }).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn numbers_addresses_and_display_values_are_written_as_serde_writes_them() {
        let mut out = Vec::new();
        let mut e = JsonObject::new(&mut out);
        let numbers = [0, 7, 9, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX];
        for n in numbers {
            e.key("n").uint(n);
        }
        let addrs: [SocketAddr; 4] = [
            "0.0.0.0:0".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ];
        for a in &addrs {
            e.key("a").socket_addr(a);
        }
        let digests = [blake3::hash(b""), blake3::hash(b"x")];
        for d in &digests {
            e.key("d").digest(d);
        }
        let texts = ["plain", "", "q\"uote\\ and\nnew line é"];
        for t in texts {
            e.key("t").display(&t);
        }
        e.end();
        let mut want = String::from("{");
        for n in numbers {
            want += &format!("\"n\":{n},");
        }
        for a in &addrs {
            want += &format!("\"a\":{},", serde_json::to_string(&a.to_string()).unwrap());
        }
        for d in &digests {
            want += &format!("\"d\":\"{}\",", d.to_hex());
        }
        for t in texts {
            want += &format!("\"t\":{},", serde_json::to_string(t).unwrap());
        }
        want.pop();
        want.push('}');
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn credential_parameters_are_masked_case_insensitively_and_the_rest_kept() {
        let cases = [
            ("/a/b", "/a/b"),
            ("/a?q=1", "/a?q=1"),
            (
                "/a?token=s3cr3t&q=1&API_KEY=k&x=",
                "/a?token=REDACTED&q=1&API_KEY=REDACTED&x=",
            ),
            (
                "/o?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff&X-Amz-Security-Token=t&v=2",
                "/o?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED&v=2",
            ),
            ("/a?password=p#frag", "/a?password=REDACTED#frag"),
            ("/a?tokenish=1&token", "/a?tokenish=1&token"),
            ("/a?", "/a?"),
        ];
        for (target, want) in cases {
            assert_eq!(MaskedTarget(target).to_string(), want, "{target}");
        }
    }

    #[test]
    fn urls_join_scheme_authority_and_masked_target() {
        let remote: SocketAddr = "[::1]:8443".parse().unwrap();
        let url = |tls, authority, target| {
            Url {
                tls,
                authority,
                sni: None,
                remote,
                target,
            }
            .to_string()
        };
        assert_eq!(
            url(true, Some("api.example.com"), "/v1?sig=x&a=b"),
            "https://api.example.com/v1?sig=REDACTED&a=b"
        );
        assert_eq!(url(false, None, "/x"), "http://[::1]:8443/x");
        assert_eq!(
            url(false, Some("proxy"), "http://origin.test/p?key=k"),
            "http://origin.test/p?key=REDACTED"
        );
        assert_eq!(url(true, Some("h:443"), "h:443"), "https://h:443");
        let named = |authority, port| {
            Url {
                tls: true,
                authority,
                sni: Some(("api.test", port)),
                remote,
                target: "/v1",
            }
            .to_string()
        };
        assert_eq!(named(None, 443), "https://api.test/v1");
        assert_eq!(named(None, 8443), "https://api.test:8443/v1");
        assert_eq!(named(Some("other.test"), 8443), "https://other.test/v1");
    }

    #[test]
    fn wall_time_is_rfc3339_utc() {
        assert_eq!(
            WallTime(1_785_000_000_123_456_789).to_string(),
            "2026-07-25T17:20:00.123456Z"
        );
        assert_eq!(WallTime(0).to_string(), "1970-01-01T00:00:00.000000Z");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let wall = WallTime::of_monotonic(mono - 2_000_000_000).0;
        let off = now.abs_diff(wall + 2_000_000_000);
        assert!(off < 1_000_000_000, "{off} ns off");
        // Within the kept offset, instants keep their distance exactly.
        let later = WallTime::of_monotonic(mono - 2_000_000_000 + 4_000_000).0;
        assert_eq!(later - wall, 4_000_000);
    }

    #[test]
    fn keys_are_written_as_they_are_whatever_their_length() {
        let long = "a_key_longer_than_any_of_the_events_keys_by_far";
        let mut out = Vec::new();
        let mut e = JsonObject::new(&mut out);
        e.key("type").word("x");
        e.key(long).uint(1u64);
        e.end();
        assert_eq!(out, format!("{{\"type\":\"x\",\"{long}\":1}}").as_bytes());
    }

    #[test]
    fn an_escape_is_found_at_every_place_in_every_length() {
        for len in 0..48 {
            let plain = vec![b'a'; len];
            let needs = |text: &[u8]| {
                let (found, words) = (needs_escape(text), needs_escape_words(text));
                assert_eq!(found, words, "{text:?}");
                found
            };
            assert!(!needs(&plain), "{len}");
            assert!(!needs(&vec![0xff; len]), "{len} high bytes");
            assert!(!needs(&vec![0x7f; len]), "{len} DEL");
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut text = plain.clone();
                    text[at] = special;
                    assert!(needs(&text), "{len} {at} {special}");
                }
                let mut text = plain.clone();
                text[at] = 0x20;
                assert!(!needs(&text), "{len} {at} space");
                text[at] = 0x80;
                assert!(!needs(&text), "{len} {at} 0x80");
            }
        }
    }

    #[test]
    fn keys_of_every_length_and_numbers_of_every_width() {
        // Keys of every length up to past the longest of the events', first
        // in their object and not, each followed by a number of a different
        // width: every power of ten, one either side, and every pair of
        // final digits.
        let mut numbers = vec![0u64, u64::MAX, u64::MAX - 1];
        numbers.extend((0..20).map(|p| 10u64.pow(p)));
        numbers.extend((1..20).map(|p| 10u64.pow(p) - 1));
        numbers.extend((0..20).map(|p| 10u64.pow(p) + 1));
        numbers.extend((0..100).map(|n| 12_345_600 + n));
        for len in 0..=40 {
            let key = "k".repeat(len);
            for (i, n) in numbers.iter().enumerate() {
                let mut out = b"[".to_vec();
                let mut e = JsonObject::new(&mut out);
                e.key(&key).uint(*n);
                e.key(&key[..len / 2]).uint(numbers[numbers.len() - 1 - i]);
                e.end();
                let want = format!(
                    "[{{\"{key}\":{n},\"{}\":{}}}",
                    &key[..len / 2],
                    numbers[numbers.len() - 1 - i]
                );
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
    }

    #[test]
    fn timestamps_are_right_whichever_second_the_thread_wrote_last() {
        // Same second, the next, back to an earlier day, then a new year:
        // each must be written in full when its second differs.
        let cases = [
            (1_785_000_000_123_456_789, "2026-07-25T17:20:00.123456Z"),
            (1_785_000_000_999_999_999, "2026-07-25T17:20:00.999999Z"),
            (1_785_000_001_000_000_000, "2026-07-25T17:20:01.000000Z"),
            (1_784_913_600_000_001_000, "2026-07-24T17:20:00.000001Z"),
            (1_798_761_600_000_000_000, "2027-01-01T00:00:00.000000Z"),
            (1_785_000_000_000_000_000, "2026-07-25T17:20:00.000000Z"),
        ];
        std::thread::spawn(move || {
            for (ns, text) in cases {
                assert_eq!(WallTime(ns).to_string(), text);
                let mut out = Vec::new();
                JsonObject::new(&mut out).wall_time(WallTime(ns));
                assert_eq!(out, format!("{{\"{text}\"").as_bytes());
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn auth_tokens_show_source_type_and_at_most_4_characters_of_long_tokens() {
        let h = |n: &str, v: &str| HeaderFields::from_iter([(n, v)]);
        let bearer = h("Authorization", "Bearer abcdefghijklmnopWXYZ");
        assert_eq!(
            AuthToken::find(&bearer),
            Some(AuthToken {
                source: "authorization",
                kind: "Bearer",
                last4: Some("WXYZ")
            })
        );
        let short = h("X-API-Key", "short-key-123");
        assert_eq!(
            AuthToken::find(&short),
            Some(AuthToken {
                source: "x-api-key",
                kind: "api_key",
                last4: None
            })
        );
        assert_eq!(AuthToken::find(&h("accept", "*/*")), None);
        // `authorization` outranks a token header listed after it, wherever
        // it stands; of two of the same name the first is taken.
        let both = HeaderFields::from_iter([
            ("x-api-key", "key-abcdefghijklmnop"),
            ("AUTHORIZATION", "Basic first-abcdefghijklmnop"),
            ("authorization", "Bearer second-abcdefghijklmnop"),
        ]);
        assert_eq!(
            AuthToken::find(&both),
            Some(AuthToken {
                source: "authorization",
                kind: "Basic",
                last4: Some("mnop")
            })
        );
    }
}

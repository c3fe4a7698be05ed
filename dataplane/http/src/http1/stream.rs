//! A streaming decoder for one direction of an HTTP/1 connection.
//!
//! [`Decoder::feed`] takes the reassembled bytes of one direction in pieces of
//! any size and calls back with [`Event`]s. Only an incomplete head or trailer
//! section is buffered (at most [`MAX_HEADER_BYTES`]); body bytes come out as
//! slices of the input, so bodies of any size pass through without being held.
//! Feeding one byte at a time gives the same events (with bodies split
//! differently) as feeding everything at once.

use std::collections::VecDeque;

use super::body::{Chunked, ChunkedDecoder, Framing, FramingFields};
use super::head::{
    Error, FieldsAt, MAX_HEADER_BYTES, Method, Version, parse_request_line, parse_status_line,
    resume_field_spans,
};
use crate::{FieldSpan, Headers, Status};

/// Most request methods remembered for responses not yet seen (pipelining).
///
/// Browsers never pipeline and other clients rarely go past a few requests;
/// past this bound further methods are forgotten and their responses are
/// framed as responses to GET.
pub const MAX_PIPELINED_REQUESTS: usize = 1024;

/// Which direction a [`Decoder`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Client to server: requests.
    Request,
    /// Server to client: responses.
    Response,
}

/// A request head, borrowed from the input or the decoder's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method token, e.g. `GET`.
    pub method: &'a str,
    /// The request target, raw (usually origin-form: path and query).
    pub target: &'a [u8],
    /// The version.
    pub version: Version,
    /// The header fields.
    pub headers: Headers<'a>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Bytes of the head on the wire, including the empty line.
    pub head_len: usize,
}

impl RequestHead<'_> {
    /// The method as an enum.
    pub fn method_kind(&self) -> Method {
        Method::from_bytes(self.method.as_bytes())
    }
}

/// A response head, borrowed from the input or the decoder's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ResponseHead<'a> {
    /// The version.
    pub version: Version,
    /// The status code.
    pub status: u16,
    /// The reason phrase, raw (may be empty).
    pub reason: &'a [u8],
    /// The header fields.
    pub headers: Headers<'a>,
    /// How the body is delimited.
    pub framing: Framing,
    /// The method of the request this answers, as the decoder was told by
    /// [`Decoder::expect_response_to`] (GET if it was not told).
    pub request_method: Method,
    /// Bytes of the head on the wire, including the empty line.
    pub head_len: usize,
}

/// What the decoder found. Per message: a head, zero or more `Body` slices,
/// then `End`. Interim (1xx) responses come as `Informational` alone.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A request head.
    Request(RequestHead<'a>),
    /// An interim 1xx response other than 101 (e.g. 100 Continue, 103
    /// Early Hints); the final response to the same request follows.
    Informational(ResponseHead<'a>),
    /// A final response head (or 101 Switching Protocols).
    Response(ResponseHead<'a>),
    /// A piece of the message body (transfer coding removed), borrowed from
    /// the input.
    Body(&'a [u8]),
    /// The message ended; `trailers` is empty unless a chunked body had some.
    End {
        /// Trailer fields of a chunked body.
        trailers: Headers<'a>,
    },
    /// The connection stopped speaking HTTP/1 after the last message (101
    /// Switching Protocols, or a 2xx answer to CONNECT). All later bytes
    /// come as `Tunnel`.
    Upgraded,
    /// Bytes after `Upgraded`, passed through unparsed.
    Tunnel(&'a [u8]),
}

#[derive(Clone, Debug)]
enum State {
    /// Between messages or inside a head.
    Head,
    /// In a Content-Length body; bytes left (never 0).
    Length(u64),
    /// In a chunked body.
    Chunked(ChunkedDecoder),
    /// In the trailer section of a chunked body.
    Trailers,
    /// In a body that ends when the connection closes.
    Close,
    /// After a request that may switch protocols (Upgrade, CONNECT), until
    /// told whether it did; bytes are held meanwhile.
    AwaitUpgrade,
    /// Not HTTP/1 any more.
    Upgraded,
    /// A previous call failed; the stream cannot be followed.
    Failed(Error),
    /// Joined mid-way or after an error: looking for a line that starts a
    /// message. `line_start`: the next input byte starts a line. A
    /// candidate cut short by the end of the input waits in `buf`.
    Resync { line_start: bool },
}

/// Streaming decoder for one direction of an HTTP/1 connection.
#[derive(Debug)]
pub struct Decoder {
    kind: Kind,
    state: State,
    /// An incomplete head or trailer section, or bytes held in
    /// `AwaitUpgrade`; never longer than `MAX_HEADER_BYTES`.
    buf: Vec<u8>,
    /// Fields of the current head or trailer section, reused.
    spans: Vec<FieldSpan>,
    /// While a head or trailer section is incomplete: where in `buf` its
    /// fields resume (`spans` holds the lines before), so the next record
    /// does not rescan the fields already checked.
    fields_at: Option<FieldsAt>,
    /// Response side: methods of requests whose responses are due.
    methods: VecDeque<Method>,
    /// Heads seen (final ones on the response side).
    messages: u64,
    /// Request side: the current message may switch protocols.
    upgrade_pending: bool,
    /// Bytes passed over while resynchronising.
    skipped: u64,
}

impl Decoder {
    /// A decoder for the client-to-server direction.
    pub fn request() -> Self {
        Self::new(Kind::Request)
    }

    /// A decoder for the server-to-client direction.
    pub fn response() -> Self {
        Self::new(Kind::Response)
    }

    /// A decoder for the direction `kind`.
    pub fn new(kind: Kind) -> Self {
        Decoder {
            kind,
            state: State::Head,
            buf: Vec::new(),
            spans: Vec::new(),
            fields_at: None,
            methods: VecDeque::new(),
            messages: 0,
            upgrade_pending: false,
            skipped: 0,
        }
    }

    /// A decoder for a connection joined mid-way: bytes are passed over
    /// until a line that starts a message (`HTTP/1.x ` for responses, a
    /// common method and a space for requests), the first input byte
    /// counting as a line start. Message bodies that contain such a line can
    /// fool it; the caller should flag the first transaction after a join.
    pub fn new_mid_stream(kind: Kind) -> Self {
        Decoder {
            state: State::Resync { line_start: true },
            ..Self::new(kind)
        }
    }

    /// Gives up on the current message (after an error or a gap) and looks
    /// for the next one as [`Self::new_mid_stream`] does. Methods queued by
    /// [`Self::expect_response_to`] are forgotten: their order is lost.
    pub fn resync(&mut self) {
        self.state = State::Resync { line_start: false };
        self.buf.clear();
        self.fields_at = None;
        self.methods.clear();
        self.upgrade_pending = false;
    }

    /// The next bytes begin one write of the peer (a captured record). While
    /// resynchronising they are probed as a message start even if the bytes
    /// before did not end a line: writes usually begin messages, and the
    /// probe accepts only a whole start line.
    pub fn record_start(&mut self) {
        if let State::Resync { line_start } = &mut self.state
            && self.buf.is_empty()
        {
            *line_start = true;
        }
    }

    /// Bytes passed over while resynchronising.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Which direction this decoder reads.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Response side: the next response not yet matched answers a request
    /// with `method`. Call once per request head, in order; this is how
    /// HEAD and CONNECT responses are framed right.
    pub fn expect_response_to(&mut self, method: Method) {
        if self.methods.len() < MAX_PIPELINED_REQUESTS {
            self.methods.push_back(method);
        }
    }

    /// Heads seen so far (final responses only, on the response side).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Request side: if the decoder is holding bytes after a request that
    /// may switch protocols, the 0-based index of that request.
    pub fn awaiting_upgrade(&self) -> Option<u64> {
        match self.state {
            State::AwaitUpgrade => self.messages.checked_sub(1),
            _ => None,
        }
    }

    /// Whether the stream stopped being HTTP/1 (after [`Event::Upgraded`]).
    pub fn is_upgraded(&self) -> bool {
        matches!(self.state, State::Upgraded)
    }

    /// Whether the decoder is inside a message body whose end the framing
    /// gives (Content-Length, chunked, or close-delimited), where
    /// [`Self::gap`] skips lost bytes and stays in step.
    pub fn in_body(&self) -> bool {
        matches!(
            self.state,
            State::Length(_) | State::Chunked(_) | State::Close
        )
    }

    /// Whether the decoder is between messages with nothing buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// Capacity of the internal buffer, to check that bodies pass through.
    #[cfg(test)]
    pub(crate) fn buf_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Feeds the next bytes of the stream. Events borrow `data` or the
    /// decoder's buffer and are valid only during the callback.
    ///
    /// After an error the stream cannot be followed: every later call
    /// returns the same error.
    pub fn feed<F: FnMut(Event<'_>)>(&mut self, data: &[u8], on: &mut F) -> Result<(), Error> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        let r = self.feed_inner(data, on);
        if let Err(e) = r {
            self.state = State::Failed(e);
        }
        r
    }

    /// The connection closed in this direction: ends a close-delimited body.
    /// An error if a message was cut short.
    pub fn eof<F: FnMut(Event<'_>)>(&mut self, on: &mut F) -> Result<(), Error> {
        let r = match &self.state {
            State::Failed(e) => Err(*e),
            State::Head => {
                if self.buf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    Ok(())
                } else {
                    Err(Error::UnexpectedEof)
                }
            }
            State::Close => {
                on(Event::End {
                    trailers: Headers::EMPTY,
                });
                self.messages_done();
                Ok(())
            }
            State::Length(_) | State::Chunked(_) | State::Trailers => Err(Error::UnexpectedEof),
            State::AwaitUpgrade | State::Upgraded | State::Resync { .. } => Ok(()),
        };
        self.buf.clear();
        self.fields_at = None;
        self.state = match r {
            Ok(()) => State::Head,
            Err(e) => State::Failed(e),
        };
        r
    }

    /// `len` bytes of the stream were lost. Inside a body whose length the
    /// framing knows (Content-Length, the current chunk, close-delimited,
    /// or a tunnel), the decoder stays in step and the caller marks the
    /// message as having a gap; anywhere else this fails with
    /// [`Error::Gap`].
    pub fn gap<F: FnMut(Event<'_>)>(&mut self, len: u64, on: &mut F) -> Result<(), Error> {
        let ok = match &mut self.state {
            State::Length(left) if len <= *left => {
                *left -= len;
                if *left == 0 {
                    self.message_end(on);
                }
                true
            }
            State::Chunked(c) => c.skip_data(len),
            State::Close | State::Upgraded | State::Resync { .. } => true,
            _ => len == 0,
        };
        if ok {
            Ok(())
        } else {
            self.state = State::Failed(Error::Gap);
            Err(Error::Gap)
        }
    }

    /// Request side: settles a request that may have switched protocols.
    /// `switched` is true when its response was 101 or a 2xx to CONNECT;
    /// the held bytes then come out as `Tunnel`. Otherwise they are parsed
    /// as the next requests. Does nothing unless [`Self::awaiting_upgrade`].
    pub fn resolve_upgrade<F: FnMut(Event<'_>)>(
        &mut self,
        switched: bool,
        on: &mut F,
    ) -> Result<(), Error> {
        if !matches!(self.state, State::AwaitUpgrade) {
            return Ok(());
        }
        let held = std::mem::take(&mut self.buf);
        let r = if switched {
            self.state = State::Upgraded;
            on(Event::Upgraded);
            if !held.is_empty() {
                on(Event::Tunnel(&held));
            }
            Ok(())
        } else {
            self.state = State::Head;
            self.feed(&held, on)
        };
        if self.buf.capacity() == 0 {
            self.buf = held;
            self.buf.clear();
        }
        r
    }

    fn feed_inner<F: FnMut(Event<'_>)>(
        &mut self,
        mut data: &[u8],
        on: &mut F,
    ) -> Result<(), Error> {
        while !data.is_empty() {
            match &mut self.state {
                State::Head | State::Trailers => self.section(&mut data, on)?,
                State::Length(left) => {
                    let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                    *left -= take as u64;
                    let done = *left == 0;
                    on(Event::Body(&data[..take]));
                    data = &data[take..];
                    if done {
                        self.message_end(on);
                    }
                }
                State::Chunked(dec) => {
                    let (used, out) = dec.decode(data)?;
                    data = &data[used..];
                    match out {
                        Chunked::Data(d) => {
                            if !d.is_empty() {
                                on(Event::Body(d));
                            }
                        }
                        Chunked::NeedMore => {}
                        Chunked::Last => {
                            self.state = State::Trailers;
                        }
                    }
                }
                State::Close => {
                    on(Event::Body(data));
                    data = &[];
                }
                State::AwaitUpgrade => {
                    if self.buf.len() + data.len() > MAX_HEADER_BYTES {
                        return Err(Error::UpgradeBufferFull);
                    }
                    self.buf.extend_from_slice(data);
                    data = &[];
                }
                State::Upgraded => {
                    on(Event::Tunnel(data));
                    data = &[];
                }
                State::Failed(e) => return Err(*e),
                State::Resync { line_start } => {
                    let line_start = *line_start;
                    data = self.resync_feed(data, line_start, on)?;
                }
            }
        }
        Ok(())
    }

    /// Looks for a message start in `data`; returns what is left to parse
    /// normally (empty if still looking).
    fn resync_feed<'d, F: FnMut(Event<'_>)>(
        &mut self,
        data: &'d [u8],
        line_start: bool,
        on: &mut F,
    ) -> Result<&'d [u8], Error> {
        let mut from = 0;
        if !self.buf.is_empty() {
            // A candidate from the last call: complete it.
            let need = MAX_START_PROBE.saturating_sub(self.buf.len());
            let n = need.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            match start_line_probe(self.kind, &self.buf) {
                Some(true) => {
                    self.state = State::Head;
                    let held = std::mem::take(&mut self.buf);
                    self.feed_inner(&held[..held.len() - n], on)?;
                    return Ok(data);
                }
                None => return Ok(&[]),
                Some(false) => {
                    self.skipped += (self.buf.len() - n) as u64;
                    self.buf.clear();
                }
            }
        } else if line_start {
            match start_line_probe(self.kind, data) {
                Some(true) => {
                    self.state = State::Head;
                    return Ok(data);
                }
                None => {
                    self.buf.extend_from_slice(data);
                    return Ok(&[]);
                }
                Some(false) => {}
            }
        }
        while let Some(i) = data[from..].iter().position(|&b| b == b'\n') {
            let at = from + i + 1;
            match start_line_probe(self.kind, &data[at..]) {
                Some(true) => {
                    self.skipped += at as u64;
                    self.state = State::Head;
                    return Ok(&data[at..]);
                }
                None if at == data.len() => {
                    self.skipped += at as u64;
                    self.state = State::Resync { line_start: true };
                    return Ok(&[]);
                }
                None => {
                    self.skipped += at as u64;
                    self.buf.extend_from_slice(&data[at..]);
                    self.state = State::Resync { line_start: false };
                    return Ok(&[]);
                }
                Some(false) => from = at,
            }
        }
        self.skipped += data.len() as u64;
        self.state = State::Resync { line_start: false };
        Ok(&[])
    }

    /// Consumes from `data` towards a complete head or trailer section,
    /// parsing it in place when it is whole in `data` and buffering it
    /// otherwise.
    fn section<F: FnMut(Event<'_>)>(&mut self, data: &mut &[u8], on: &mut F) -> Result<(), Error> {
        if self.buf.is_empty() {
            self.fields_at = None;
            match self.on_section(data, on)? {
                Status::Complete(n) => *data = &data[n..],
                Status::Partial => {
                    if data.len() >= MAX_HEADER_BYTES {
                        return Err(Error::HeadTooLarge);
                    }
                    self.buf.extend_from_slice(data);
                    *data = &[];
                }
            }
            return Ok(());
        }
        // Parse the buffered section again, from the start line and the
        // field line cut short last time: an invalid byte is found as soon
        // as it is buffered, so errors do not depend on how the stream was
        // split, and a head spread over many records costs time linear in
        // its length (a single line is rescanned from its start).
        let old = self.buf.len();
        let room = MAX_HEADER_BYTES.saturating_sub(old);
        if room == 0 {
            return Err(Error::HeadTooLarge);
        }
        let take = data.len().min(room);
        self.buf.extend_from_slice(&data[..take]);
        let buf = std::mem::take(&mut self.buf);
        let r = self.on_section(&buf, on);
        self.buf = buf;
        match r? {
            Status::Complete(n) => {
                let used = n.checked_sub(old).ok_or(Error::HeadTooLarge)?;
                crate::recycle(&mut self.buf);
                *data = &data[used..];
            }
            Status::Partial => {
                if self.buf.len() >= MAX_HEADER_BYTES {
                    return Err(Error::HeadTooLarge);
                }
                *data = &data[take..];
            }
        }
        Ok(())
    }

    /// Parses a head or trailer section at the start of `buf` and emits it.
    fn on_section<F: FnMut(Event<'_>)>(
        &mut self,
        buf: &[u8],
        on: &mut F,
    ) -> Result<Status<usize>, Error> {
        let r = self.on_section_inner(buf, on);
        if !matches!(r, Ok(Status::Partial)) {
            self.fields_at = None;
        }
        r
    }

    /// Parses the field lines of the section in `buf` that begin at
    /// `start`, resuming after the lines parsed by the last call if it
    /// returned `Partial` on the same (then shorter) section.
    fn fields(&mut self, buf: &[u8], start: usize) -> Result<Status<usize>, Error> {
        let mut at = match self.fields_at {
            Some(at) => at,
            None => {
                self.spans.clear();
                FieldsAt::new(start)
            }
        };
        let r = resume_field_spans(buf, &mut at, &mut self.spans);
        self.fields_at = Some(at);
        r
    }

    fn on_section_inner<F: FnMut(Event<'_>)>(
        &mut self,
        buf: &[u8],
        on: &mut F,
    ) -> Result<Status<usize>, Error> {
        match (&self.state, self.kind) {
            (State::Trailers, _) => {
                let end = match self.fields(buf, 0)? {
                    Status::Complete(end) => end,
                    Status::Partial => return Ok(Status::Partial),
                };
                on(Event::End {
                    trailers: Headers::new(buf, &self.spans),
                });
                self.messages_done();
                Ok(Status::Complete(end))
            }
            (_, Kind::Request) => self.request_head(buf, on),
            (_, Kind::Response) => self.response_head(buf, on),
        }
    }

    fn request_head<F: FnMut(Event<'_>)>(
        &mut self,
        buf: &[u8],
        on: &mut F,
    ) -> Result<Status<usize>, Error> {
        let line = match parse_request_line(buf)? {
            Status::Complete(l) => l,
            Status::Partial => return Ok(Status::Partial),
        };
        let end = match self.fields(buf, line.end)? {
            Status::Complete(end) => end,
            Status::Partial => return Ok(Status::Partial),
        };
        let headers = Headers::new(buf, &self.spans);
        let fields = FramingFields::read(headers)?;
        let framing = fields.request()?;
        let method_bytes = &buf[line.method.0..line.method.1];
        let method = Method::from_bytes(method_bytes);
        on(Event::Request(RequestHead {
            method: std::str::from_utf8(method_bytes).unwrap_or_default(),
            target: &buf[line.target.0..line.target.1],
            version: line.version,
            headers,
            framing,
            head_len: end,
        }));
        self.messages += 1;
        self.upgrade_pending = method == Method::Connect || fields.upgrade;
        self.start_body(framing, on);
        Ok(Status::Complete(end))
    }

    fn response_head<F: FnMut(Event<'_>)>(
        &mut self,
        buf: &[u8],
        on: &mut F,
    ) -> Result<Status<usize>, Error> {
        let line = match parse_status_line(buf)? {
            Status::Complete(l) => l,
            Status::Partial => return Ok(Status::Partial),
        };
        let end = match self.fields(buf, line.end)? {
            Status::Complete(end) => end,
            Status::Partial => return Ok(Status::Partial),
        };
        let headers = Headers::new(buf, &self.spans);
        let status = line.code;
        let interim = (100..200).contains(&status) && status != 101;
        let request_method = if interim {
            self.methods.front().copied().unwrap_or_default()
        } else {
            self.methods.pop_front().unwrap_or_default()
        };
        let fields = FramingFields::read(headers)?;
        let framing = fields.response(status, request_method);
        let head = ResponseHead {
            version: line.version,
            status,
            reason: &buf[line.reason.0..line.reason.1],
            headers,
            framing,
            request_method,
            head_len: end,
        };
        if interim {
            on(Event::Informational(head));
            return Ok(Status::Complete(end));
        }
        on(Event::Response(head));
        self.messages += 1;
        let switched =
            status == 101 || (request_method == Method::Connect && (200..300).contains(&status));
        if switched {
            on(Event::End {
                trailers: Headers::EMPTY,
            });
            on(Event::Upgraded);
            self.state = State::Upgraded;
        } else {
            self.start_body(framing, on);
        }
        Ok(Status::Complete(end))
    }

    fn start_body<F: FnMut(Event<'_>)>(&mut self, framing: Framing, on: &mut F) {
        match framing {
            Framing::None | Framing::Length(0) => self.message_end(on),
            Framing::Length(n) => self.state = State::Length(n),
            Framing::Chunked => self.state = State::Chunked(ChunkedDecoder::new()),
            Framing::CloseDelimited => self.state = State::Close,
        }
    }

    /// Emits `End` without trailers and moves to the next message.
    fn message_end<F: FnMut(Event<'_>)>(&mut self, on: &mut F) {
        on(Event::End {
            trailers: Headers::EMPTY,
        });
        self.messages_done();
    }

    /// State after a message's `End` was emitted.
    fn messages_done(&mut self) {
        self.state = if self.kind == Kind::Request && self.upgrade_pending {
            self.upgrade_pending = false;
            State::AwaitUpgrade
        } else {
            State::Head
        };
    }
}

/// Longest prefix [`start_line_probe`] looks at (`OPTIONS ` and
/// `HTTP/1.1 ` are the longest it matches).
const MAX_START_PROBE: usize = 9;

/// Methods a resynchronising request decoder accepts as a message start:
/// the RFC 9110 ones and PATCH. Extension methods are not guessed at.
const RESYNC_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Whether `bytes` start like a message of `kind`: `Some(true)` yes,
/// `Some(false)` no, `None` too few bytes to tell.
fn start_line_probe(kind: Kind, bytes: &[u8]) -> Option<bool> {
    let candidates: &[&[u8]] = match kind {
        Kind::Request => &RESYNC_METHODS,
        Kind::Response => &[b"HTTP/1.1 ", b"HTTP/1.0 "],
    };
    let mut undecided = false;
    for c in candidates {
        let n = c.len().min(bytes.len());
        if bytes[..n] == c[..n] {
            if n == c.len() {
                return Some(true);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

//! A per-direction HTTP/2 decoder: bytes in, per-stream events out.
//!
//! [`Decoder::feed`] takes one direction's reassembled bytes in pieces of any
//! size. It checks the preface (client side), splits frames, assembles
//! HEADERS/PUSH_PROMISE + CONTINUATION into header blocks, HPACK-decodes
//! them, and streams DATA payloads out as slices of the input. Only
//! non-DATA frame payloads and header blocks are buffered, each under a
//! named bound.
//!
//! Joining mid-way ([`Decoder::new_mid_stream`]) the decoder does not know
//! where frames start nor what the HPACK table holds. It looks for a frame
//! boundary — a plausible frame header followed, `len` bytes later, by
//! another — and from there decodes header blocks against the entries it
//! has seen inserted, flagging every block ([`BlockState::Unverified`],
//! `Partial`, `Lost`); it never reports a block as complete, because it
//! cannot know what it missed. A frame that makes no sense after a
//! heuristic resync sends it back to looking for a boundary; from a known
//! start (the preface, or [`Decoder::new`]) it is an error.

use super::frame::{
    DEFAULT_MAX_FRAME_SIZE, Error, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED,
    FRAME_HEADER_LEN, Frame, FrameHeader, FrameType, PREFACE, Settings, parse_payload,
};
use super::grpc;
use crate::hpack::{self, BlockState};
use crate::{FieldSpan, Headers};

/// Largest non-DATA frame payload buffered, in bytes. Larger ones are
/// skipped (a header block in one is reported `Lost`).
///
/// Four times the default SETTINGS_MAX_FRAME_SIZE (16 KiB), which almost
/// every peer keeps for HEADERS.
pub const MAX_BUFFERED_FRAME_BYTES: usize = 4 * DEFAULT_MAX_FRAME_SIZE as usize;

/// Largest header block assembled from HEADERS + CONTINUATION, compressed.
///
/// nginx refuses header lists over 32 KiB by default and Go's server over
/// 1 MiB; compressed blocks are smaller still. 256 KiB is generous.
pub const MAX_HEADER_BLOCK_BYTES: usize = 256 * 1024;

/// Most decoded name and value bytes kept for one block. HPACK lets a small
/// block expand a lot (one byte per reference to a large entry); fields
/// past this are counted as missing ([`BlockState::Partial`]).
pub const MAX_HEADER_LIST_BYTES: usize = 256 * 1024;

/// Bytes searched for a frame boundary when joining mid-way before giving up
/// on the oldest of them: enough to hold a maximum-size default frame and
/// the next header several times over.
pub const RESYNC_WINDOW_BYTES: usize = 64 * 1024;

/// Which side of the connection sends the bytes a [`Decoder`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client: the stream starts with the connection preface.
    Client,
    /// The server: the stream starts with a SETTINGS frame.
    Server,
}

/// A decoded header block (HEADERS or PUSH_PROMISE with its CONTINUATIONs).
#[derive(Clone, Copy, Debug)]
pub struct HeaderBlock<'a> {
    /// The stream the block was sent on.
    pub stream_id: u32,
    /// The fields, pseudo-headers first as sent.
    pub headers: Headers<'a>,
    /// END_STREAM was set on the HEADERS frame.
    pub end_stream: bool,
    /// How far the fields can be trusted.
    pub state: BlockState,
}

impl<'a> HeaderBlock<'a> {
    /// Whether this is a trailer section: it ends the stream and carries no
    /// pseudo-header (RFC 9113 §8.1). Decided from the block alone, so it
    /// works for streams whose first HEADERS was not seen.
    pub fn is_trailers(&self) -> bool {
        self.end_stream
            && !self.headers.is_empty()
            && self.headers.iter().all(|(n, _)| !n.starts_with(b":"))
    }

    /// The `:status` pseudo-header as a number.
    pub fn status(&self) -> Option<u16> {
        std::str::from_utf8(self.headers.get(":status")?)
            .ok()?
            .parse()
            .ok()
    }

    /// A pseudo-header or field value by name (`:method`, `:path`,
    /// `:authority`, `:scheme`, …).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name)
    }

    /// Whether the block's content-type is gRPC's.
    pub fn is_grpc(&self) -> bool {
        grpc::is_grpc(&self.headers)
    }

    /// `grpc-status` (in trailers, or a trailers-only response).
    pub fn grpc_status(&self) -> Option<u32> {
        grpc::grpc_status(&self.headers)
    }
}

/// What the decoder found.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A header block: request or response headers, an interim 1xx
    /// response, or trailers ([`HeaderBlock::is_trailers`]).
    Headers(HeaderBlock<'a>),
    /// A PUSH_PROMISE: the request the server will answer on
    /// `promised_stream_id`.
    PushPromise {
        /// The reserved stream.
        promised_stream_id: u32,
        /// The promised request's headers (on the stream it was sent on).
        block: HeaderBlock<'a>,
    },
    /// Part of a DATA frame's payload (padding removed). `end_stream` is set
    /// on the last piece of a frame with END_STREAM (which may be empty).
    Data {
        /// Stream.
        stream_id: u32,
        /// The bytes, borrowed from the input.
        data: &'a [u8],
        /// The stream ends with this piece.
        end_stream: bool,
    },
    /// RST_STREAM: the stream was cancelled.
    Reset {
        /// Stream.
        stream_id: u32,
        /// Error code (RFC 9113 §7).
        error_code: u32,
    },
    /// SETTINGS. SETTINGS_HEADER_TABLE_SIZE here bounds the *other*
    /// direction's encoder: pass it to that direction's decoder with
    /// [`Decoder::set_header_table_size_limit`] if wanted.
    Settings {
        /// ACK.
        ack: bool,
        /// Parameters.
        settings: Settings<'a>,
    },
    /// GOAWAY: the sender is closing the connection.
    GoAway {
        /// Last stream the sender may have processed.
        last_stream_id: u32,
        /// Error code.
        error_code: u32,
    },
}

/// Counters, for the shard's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames seen.
    pub frames: u64,
    /// Bytes passed over while looking for a frame boundary.
    pub skipped_bytes: u64,
    /// Header blocks that could not be decoded.
    pub lost_blocks: u64,
    /// Times the decoder had to look for a frame boundary.
    pub resyncs: u64,
}

#[derive(Clone, Copy, Debug)]
struct DataState {
    stream_id: u32,
    /// Data bytes left in the frame.
    left: u32,
    /// Padding bytes left after the data.
    pad: u32,
    /// The pad-length octet is still to come.
    need_pad_len: bool,
    end_stream: bool,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Matching the client preface; bytes matched so far.
    Preface(usize),
    /// Looking for a frame boundary.
    Resync,
    /// At a frame boundary; `hdr_len` header bytes gathered.
    Header,
    /// Gathering a non-DATA payload into `buf`.
    Payload(FrameHeader),
    /// In a DATA payload.
    Data(DataState),
    /// Passing over an oversized payload; bytes left.
    Skip(u32),
    Failed(Error),
}

/// A header block being assembled.
#[derive(Clone, Copy, Debug)]
struct Pending {
    stream_id: u32,
    end_stream: bool,
    promised: Option<u32>,
    /// Too large, or interrupted: it will be reported `Lost`.
    lost: bool,
}

/// Decoder for one direction of an HTTP/2 connection.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    hdr: [u8; FRAME_HEADER_LEN],
    hdr_len: usize,
    /// A payload being gathered, or bytes being searched in `Resync`.
    buf: Vec<u8>,
    hpack: hpack::Decoder,
    /// The header block being assembled.
    block: Vec<u8>,
    pending: Option<Pending>,
    /// Decoded names and values of the last block, reused.
    fields: Vec<u8>,
    spans: Vec<FieldSpan>,
    /// Frame boundaries are known (not found by heuristic): a malformed
    /// frame is an error rather than a reason to resync.
    trusted: bool,
    /// No byte has been consumed yet (a mid-stream decoder may still see
    /// the preface).
    at_start: bool,
    /// The bytes being searched began with a write of the peer (see
    /// [`Decoder::record_start`]).
    searching_from_record: bool,
    stats: Stats,
}

impl Decoder {
    /// A decoder for a connection seen from its first byte.
    pub fn new(side: Side) -> Self {
        Decoder {
            state: match side {
                Side::Client => State::Preface(0),
                Side::Server => State::Header,
            },
            hdr: [0; FRAME_HEADER_LEN],
            hdr_len: 0,
            buf: Vec::new(),
            hpack: hpack::Decoder::new(),
            block: Vec::new(),
            pending: None,
            fields: Vec::new(),
            spans: Vec::new(),
            trusted: true,
            at_start: true,
            searching_from_record: false,
            stats: Stats::default(),
        }
    }

    /// A decoder for a connection joined mid-way, in either direction: it
    /// looks for a frame boundary and flags every header block (see the
    /// module doc). If the bytes turn out to start with the preface, it
    /// decodes as from the start.
    pub fn new_mid_stream() -> Self {
        Decoder {
            state: State::Resync,
            hpack: hpack::Decoder::new_unsynced(),
            trusted: false,
            ..Self::new(Side::Server)
        }
    }

    /// The next bytes begin one write of the peer (a captured record). While
    /// looking for a frame boundary, bytes that begin a write and split
    /// exactly into plausible frames are taken as frames at once: writers
    /// send whole frames, so one frame alone is enough evidence there.
    pub fn record_start(&mut self) {
        if matches!(self.state, State::Resync) && self.buf.is_empty() {
            self.searching_from_record = true;
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The stream whose DATA payload the decoder is inside, if any (where
    /// [`Self::gap`] skips lost bytes and stays in step).
    pub fn data_stream(&self) -> Option<u32> {
        match self.state {
            State::Data(d) => Some(d.stream_id),
            _ => None,
        }
    }

    /// Whether header blocks can currently be decoded exactly.
    pub fn is_synced(&self) -> bool {
        self.hpack.is_synced()
    }

    /// Caps HPACK table size updates at the SETTINGS_HEADER_TABLE_SIZE the
    /// other direction advertised.
    pub fn set_header_table_size_limit(&mut self, limit: u32) {
        self.hpack
            .set_max_size_limit(usize::try_from(limit).unwrap_or(usize::MAX));
    }

    /// Feeds the next bytes of this direction. Events borrow `data` or the
    /// decoder's buffers and are valid during the callback. After an error
    /// every later call returns it.
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

    /// `len` bytes of this direction were lost. Inside a DATA payload that
    /// holds them the decoder stays in step; anywhere else it forgets the
    /// HPACK table and looks for the next frame boundary.
    pub fn gap<F: FnMut(Event<'_>)>(&mut self, len: u64, on: &mut F) {
        match &mut self.state {
            State::Data(d) if !d.need_pad_len && len <= u64::from(d.left) + u64::from(d.pad) => {
                let from_data = len.min(u64::from(d.left)) as u32;
                d.left -= from_data;
                d.pad -= (len - u64::from(from_data)) as u32;
                let d = *d;
                if from_data > 0 && d.left == 0 && d.end_stream {
                    on(Event::Data {
                        stream_id: d.stream_id,
                        data: &[],
                        end_stream: true,
                    });
                }
                if d.left == 0 && d.pad == 0 {
                    self.state = State::Header;
                }
            }
            State::Skip(left) if len <= u64::from(*left) => {
                *left -= len as u32;
                if *left == 0 {
                    self.state = State::Header;
                }
            }
            State::Failed(_) => {}
            _ if len == 0 => {}
            _ => self.resync(on),
        }
    }

    /// Forgets frame boundaries and the HPACK table; reports a block being
    /// assembled as lost.
    fn resync<F: FnMut(Event<'_>)>(&mut self, on: &mut F) {
        if let Some(mut p) = self.pending {
            p.lost = true;
            self.pending = Some(p);
            self.finish_block(on);
        }
        self.hpack.desync();
        self.trusted = false;
        self.buf.clear();
        self.hdr_len = 0;
        self.state = State::Resync;
        self.stats.resyncs += 1;
    }

    /// A malformed frame: an error from a known boundary, else a resync.
    fn frame_error<F: FnMut(Event<'_>)>(&mut self, e: Error, on: &mut F) -> Result<(), Error> {
        if self.trusted {
            Err(e)
        } else {
            self.resync(on);
            Ok(())
        }
    }

    fn feed_inner<F: FnMut(Event<'_>)>(
        &mut self,
        mut data: &[u8],
        on: &mut F,
    ) -> Result<(), Error> {
        while !data.is_empty() {
            if !matches!(self.state, State::Resync) {
                self.at_start = false;
            }
            match self.state {
                State::Failed(e) => return Err(e),
                State::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(data.len());
                    if data[..n] != PREFACE[matched..matched + n] {
                        return Err(Error::Preface);
                    }
                    data = &data[n..];
                    self.state = if matched + n == PREFACE.len() {
                        State::Header
                    } else {
                        State::Preface(matched + n)
                    };
                }
                State::Resync => data = self.resync_feed(data, on)?,
                State::Header => {
                    let h = if self.hdr_len == 0 && data.len() >= FRAME_HEADER_LEN {
                        let h = FrameHeader::parse(data);
                        data = &data[FRAME_HEADER_LEN..];
                        h
                    } else {
                        let n = (FRAME_HEADER_LEN - self.hdr_len).min(data.len());
                        self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                        self.hdr_len += n;
                        data = &data[n..];
                        if self.hdr_len < FRAME_HEADER_LEN {
                            continue;
                        }
                        self.hdr_len = 0;
                        FrameHeader::parse(&self.hdr)
                    };
                    if let Some(h) = h {
                        self.on_header(h, on)?;
                    }
                }
                State::Payload(h) => {
                    let len = h.len as usize;
                    if self.buf.is_empty() && data.len() >= len {
                        self.state = State::Header;
                        self.on_frame(&h, &data[..len], on)?;
                        data = &data[len..];
                    } else {
                        let n = (len - self.buf.len()).min(data.len());
                        self.buf.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        if self.buf.len() == len {
                            self.state = State::Header;
                            let payload = std::mem::take(&mut self.buf);
                            let r = self.on_frame(&h, &payload, on);
                            if self.buf.capacity() == 0 {
                                self.buf = payload;
                                crate::recycle(&mut self.buf);
                            }
                            r?;
                        }
                    }
                }
                State::Data(mut d) => {
                    if d.need_pad_len {
                        let pad = u32::from(data[0]);
                        data = &data[1..];
                        d.need_pad_len = false;
                        if pad > d.left {
                            self.state = State::Data(d);
                            return self.frame_error(Error::Padding, on).and_then(|()| {
                                // Resynced: the rest is searched afresh.
                                self.feed_inner(data, on)
                            });
                        }
                        d.left -= pad;
                        d.pad = pad;
                        if d.left == 0 && d.end_stream {
                            on(Event::Data {
                                stream_id: d.stream_id,
                                data: &[],
                                end_stream: true,
                            });
                        }
                    } else if d.left > 0 {
                        let n = (d.left as usize).min(data.len());
                        d.left -= n as u32;
                        on(Event::Data {
                            stream_id: d.stream_id,
                            data: &data[..n],
                            end_stream: d.end_stream && d.left == 0,
                        });
                        data = &data[n..];
                    } else {
                        let n = (d.pad as usize).min(data.len());
                        d.pad -= n as u32;
                        data = &data[n..];
                    }
                    self.state = if !d.need_pad_len && d.left == 0 && d.pad == 0 {
                        State::Header
                    } else {
                        State::Data(d)
                    };
                }
                State::Skip(left) => {
                    let n = (left as usize).min(data.len());
                    data = &data[n..];
                    let left = left - n as u32;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Skip(left)
                    };
                }
            }
        }
        Ok(())
    }

    /// A frame header arrived: decide how its payload is read.
    fn on_header<F: FnMut(Event<'_>)>(&mut self, h: FrameHeader, on: &mut F) -> Result<(), Error> {
        self.stats.frames += 1;
        if let Some(p) = self.pending
            && (h.kind != FrameType::Continuation || h.stream_id != p.stream_id)
        {
            // A header block must be followed by its CONTINUATIONs alone
            // (RFC 9113 §6.10).
            self.pending = Some(Pending { lost: true, ..p });
            self.finish_block(on);
        }
        match h.kind {
            FrameType::Data => {
                if h.stream_id == 0 {
                    return self.frame_error(Error::StreamId, on);
                }
                let padded = h.flags & FLAG_PADDED != 0;
                let left = if padded {
                    match h.len.checked_sub(1) {
                        Some(l) => l,
                        None => return self.frame_error(Error::FrameSize, on),
                    }
                } else {
                    h.len
                };
                let d = DataState {
                    stream_id: h.stream_id,
                    left,
                    pad: 0,
                    need_pad_len: padded,
                    end_stream: h.flags & FLAG_END_STREAM != 0,
                };
                if !padded && left == 0 {
                    if d.end_stream {
                        on(Event::Data {
                            stream_id: d.stream_id,
                            data: &[],
                            end_stream: true,
                        });
                    }
                    self.state = State::Header;
                } else {
                    self.state = State::Data(d);
                }
            }
            _ if h.len as usize > MAX_BUFFERED_FRAME_BYTES => {
                self.state = State::Skip(h.len);
                let end_headers = h.flags & FLAG_END_HEADERS != 0;
                match h.kind {
                    FrameType::Headers | FrameType::PushPromise => {
                        self.pending = Some(Pending {
                            stream_id: h.stream_id,
                            end_stream: h.flags & FLAG_END_STREAM != 0
                                && h.kind == FrameType::Headers,
                            promised: None,
                            lost: true,
                        });
                    }
                    FrameType::Continuation => {
                        if let Some(p) = &mut self.pending {
                            p.lost = true;
                        }
                    }
                    _ => return Ok(()),
                }
                if end_headers {
                    self.finish_block(on);
                }
            }
            _ if h.len == 0 => {
                self.state = State::Header;
                self.on_frame(&h, &[], on)?;
            }
            _ => {
                self.buf.clear();
                self.state = State::Payload(h);
            }
        }
        Ok(())
    }

    /// A whole non-DATA frame.
    fn on_frame<F: FnMut(Event<'_>)>(
        &mut self,
        h: &FrameHeader,
        payload: &[u8],
        on: &mut F,
    ) -> Result<(), Error> {
        let frame = match parse_payload(h, payload) {
            Ok(f) => f,
            Err(e) => return self.frame_error(e, on),
        };
        match frame {
            Frame::Headers {
                stream_id,
                fragment,
                end_stream,
                end_headers,
                ..
            } => self.start_block(stream_id, end_stream, None, fragment, end_headers, on),
            Frame::PushPromise {
                stream_id,
                promised_stream_id,
                fragment,
                end_headers,
            } => self.start_block(
                stream_id,
                false,
                Some(promised_stream_id),
                fragment,
                end_headers,
                on,
            ),
            Frame::Continuation {
                stream_id,
                fragment,
                end_headers,
            } => {
                // A CONTINUATION with no block open: the HEADERS was before
                // this decoder joined. Nothing to do with it.
                if self.pending.is_some_and(|p| p.stream_id == stream_id) {
                    self.append_fragment(fragment);
                    if end_headers {
                        self.finish_block(on);
                    }
                }
            }
            Frame::RstStream {
                stream_id,
                error_code,
            } => on(Event::Reset {
                stream_id,
                error_code,
            }),
            Frame::Settings { ack, settings } => on(Event::Settings { ack, settings }),
            Frame::GoAway {
                last_stream_id,
                error_code,
                ..
            } => on(Event::GoAway {
                last_stream_id,
                error_code,
            }),
            Frame::Data { .. }
            | Frame::Priority { .. }
            | Frame::Ping { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    fn start_block<F: FnMut(Event<'_>)>(
        &mut self,
        stream_id: u32,
        end_stream: bool,
        promised: Option<u32>,
        fragment: &[u8],
        end_headers: bool,
        on: &mut F,
    ) {
        self.block.clear();
        self.pending = Some(Pending {
            stream_id,
            end_stream,
            promised,
            lost: false,
        });
        self.append_fragment(fragment);
        if end_headers {
            self.finish_block(on);
        }
    }

    fn append_fragment(&mut self, fragment: &[u8]) {
        let Some(p) = &mut self.pending else {
            return;
        };
        if p.lost || self.block.len() + fragment.len() > MAX_HEADER_BLOCK_BYTES {
            p.lost = true;
            self.block.clear();
        } else {
            self.block.extend_from_slice(fragment);
        }
    }

    /// Decodes the assembled block and emits it.
    fn finish_block<F: FnMut(Event<'_>)>(&mut self, on: &mut F) {
        let Some(p) = self.pending.take() else {
            return;
        };
        self.fields.clear();
        self.spans.clear();
        let state = if p.lost {
            self.hpack.desync();
            self.stats.lost_blocks += 1;
            BlockState::Lost
        } else {
            let fields = &mut self.fields;
            let spans = &mut self.spans;
            let mut dropped: u32 = 0;
            let r = self.hpack.decode(&self.block, |f| {
                let n = f.name.len();
                let v = f.value.len();
                if fields.len() + n + v > MAX_HEADER_LIST_BYTES {
                    dropped = dropped.saturating_add(1);
                    return;
                }
                let at = fields.len();
                fields.extend_from_slice(f.name);
                fields.extend_from_slice(f.value);
                match FieldSpan::new((at, n), (at + n, v)) {
                    Some(s) => spans.push(s),
                    None => dropped = dropped.saturating_add(1),
                }
            });
            match r {
                Ok(_) if dropped > 0 => BlockState::Partial { missing: dropped },
                Ok(BlockState::Partial { missing }) => BlockState::Partial {
                    missing: missing.saturating_add(dropped),
                },
                Ok(s) => s,
                Err(_) => {
                    self.hpack.desync();
                    self.stats.lost_blocks += 1;
                    BlockState::Lost
                }
            }
        };
        let block = HeaderBlock {
            stream_id: p.stream_id,
            headers: Headers::new(&self.fields, &self.spans),
            end_stream: p.end_stream,
            state,
        };
        match p.promised {
            Some(promised_stream_id) => on(Event::PushPromise {
                promised_stream_id,
                block,
            }),
            None => on(Event::Headers(block)),
        }
        crate::recycle(&mut self.block);
        crate::recycle(&mut self.fields);
        crate::recycle(&mut self.spans);
    }

    /// Searches for a frame boundary; returns the input not yet used.
    fn resync_feed<'d, F: FnMut(Event<'_>)>(
        &mut self,
        data: &'d [u8],
        on: &mut F,
    ) -> Result<&'d [u8], Error> {
        let room = RESYNC_WINDOW_BYTES.saturating_sub(self.buf.len());
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        let rest = &data[n..];
        if self.at_start {
            if self.buf.starts_with(PREFACE) {
                // The connection's start after all.
                self.hpack = hpack::Decoder::new();
                self.trusted = true;
                self.at_start = false;
                self.state = State::Header;
                return self.replay(PREFACE.len(), rest, on);
            }
            if PREFACE.starts_with(&self.buf) {
                return Ok(rest);
            }
            self.at_start = false;
        }
        let from_record = std::mem::take(&mut self.searching_from_record);
        let boundary = if from_record && rest.is_empty() && tiles(&self.buf) {
            Boundary::At(0)
        } else {
            find_boundary(&self.buf)
        };
        match boundary {
            Boundary::At(p) => {
                self.state = State::Header;
                self.stats.skipped_bytes += p as u64;
                self.replay(p, rest, on)
            }
            Boundary::Undecided(keep_from) => {
                self.stats.skipped_bytes += keep_from as u64;
                self.buf.drain(..keep_from);
                if self.buf.len() >= RESYNC_WINDOW_BYTES {
                    // Cannot happen (see `find_boundary`), but never spin.
                    self.stats.skipped_bytes += 1;
                    self.buf.remove(0);
                }
                Ok(rest)
            }
        }
    }

    /// Feeds the searched bytes from `from` on, then hands back `rest`.
    fn replay<'d, F: FnMut(Event<'_>)>(
        &mut self,
        from: usize,
        rest: &'d [u8],
        on: &mut F,
    ) -> Result<&'d [u8], Error> {
        self.at_start = false;
        let held = std::mem::take(&mut self.buf);
        let r = self.feed_inner(&held[from..], on);
        if self.buf.capacity() == 0 {
            self.buf = held;
            self.buf.clear();
        }
        r.map(|()| rest)
    }
}

enum Boundary {
    /// A frame starts here (see [`find_boundary`]).
    At(usize),
    /// Nothing before this offset can start a frame; wait for more bytes.
    Undecided(usize),
}

/// Plausible headers in a row that confirm a boundary.
const RESYNC_CHAIN: usize = 3;

/// Looks for a frame boundary in `buf`: an offset where [`RESYNC_CHAIN`]
/// plausible frame headers follow one another, each `len` bytes after the
/// last, or where at least two plausible frames end exactly at the end of
/// the bytes so far (writers send whole frames, so records tend to end on
/// frame boundaries).
fn find_boundary(buf: &[u8]) -> Boundary {
    // The first candidate that may still be confirmed; a later confirmed
    // one wins over it, so one false candidate with a long length does not
    // hold the search up.
    let mut undecided = None;
    let mut p = 0;
    while p + FRAME_HEADER_LEN <= buf.len() {
        match chain(buf, p) {
            Chain::Confirmed => return Boundary::At(p),
            Chain::NeedMore if buf.len() - p < RESYNC_WINDOW_BYTES => {
                undecided.get_or_insert(p);
            }
            Chain::NeedMore | Chain::Broken => {}
        }
        p += 1;
    }
    Boundary::Undecided(undecided.unwrap_or(p))
}

/// Whether `buf` is a whole number of plausible frames.
fn tiles(buf: &[u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        let Some(h) = buf.get(at..).and_then(FrameHeader::parse_plausible) else {
            return false;
        };
        at += FRAME_HEADER_LEN + h.len as usize;
    }
    at == buf.len() && !buf.is_empty()
}

enum Chain {
    Confirmed,
    NeedMore,
    Broken,
}

fn chain(buf: &[u8], start: usize) -> Chain {
    let mut at = start;
    let mut frames = 0;
    while frames < RESYNC_CHAIN {
        if at == buf.len() && frames >= 2 {
            return Chain::Confirmed;
        }
        let Some(rest) = buf.get(at..).filter(|r| r.len() >= FRAME_HEADER_LEN) else {
            return Chain::NeedMore;
        };
        let Some(h) = FrameHeader::parse_plausible(rest) else {
            return Chain::Broken;
        };
        frames += 1;
        at += FRAME_HEADER_LEN + h.len as usize;
        if at > buf.len() && frames < RESYNC_CHAIN {
            return Chain::NeedMore;
        }
    }
    Chain::Confirmed
}

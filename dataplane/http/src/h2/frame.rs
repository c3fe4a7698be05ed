//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header and every frame type's
//! payload, parsed from byte slices without copying.

use std::fmt;

use crate::Status;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header (RFC 9113 §4.1).
pub const FRAME_HEADER_LEN: usize = 9;

/// Initial SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2): the largest payload a
/// peer sends unless the receiver raised it.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// `END_STREAM` flag (DATA, HEADERS).
pub const FLAG_END_STREAM: u8 = 0x1;
/// `ACK` flag (SETTINGS, PING).
pub const FLAG_ACK: u8 = 0x1;
/// `END_HEADERS` flag (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const FLAG_END_HEADERS: u8 = 0x4;
/// `PADDED` flag (DATA, HEADERS, PUSH_PROMISE).
pub const FLAG_PADDED: u8 = 0x8;
/// `PRIORITY` flag (HEADERS).
pub const FLAG_PRIORITY: u8 = 0x20;

/// Frame types (RFC 9113 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// `DATA` (0x0)
    Data,
    /// `HEADERS` (0x1)
    Headers,
    /// `PRIORITY` (0x2)
    Priority,
    /// `RST_STREAM` (0x3)
    RstStream,
    /// `SETTINGS` (0x4)
    Settings,
    /// `PUSH_PROMISE` (0x5)
    PushPromise,
    /// `PING` (0x6)
    Ping,
    /// `GOAWAY` (0x7)
    GoAway,
    /// `WINDOW_UPDATE` (0x8)
    WindowUpdate,
    /// `CONTINUATION` (0x9)
    Continuation,
    /// An extension type, ignored (RFC 9113 §5.5).
    Unknown(u8),
}

impl From<u8> for FrameType {
    fn from(b: u8) -> Self {
        match b {
            0 => FrameType::Data,
            1 => FrameType::Headers,
            2 => FrameType::Priority,
            3 => FrameType::RstStream,
            4 => FrameType::Settings,
            5 => FrameType::PushPromise,
            6 => FrameType::Ping,
            7 => FrameType::GoAway,
            8 => FrameType::WindowUpdate,
            9 => FrameType::Continuation,
            n => FrameType::Unknown(n),
        }
    }
}

impl From<FrameType> for u8 {
    fn from(t: FrameType) -> u8 {
        match t {
            FrameType::Data => 0,
            FrameType::Headers => 1,
            FrameType::Priority => 2,
            FrameType::RstStream => 3,
            FrameType::Settings => 4,
            FrameType::PushPromise => 5,
            FrameType::Ping => 6,
            FrameType::GoAway => 7,
            FrameType::WindowUpdate => 8,
            FrameType::Continuation => 9,
            FrameType::Unknown(n) => n,
        }
    }
}

/// Why a frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The client stream does not start with the connection preface.
    Preface,
    /// A payload length is wrong for the frame type (RFC 9113
    /// FRAME_SIZE_ERROR), or larger than the decoder accepts.
    FrameSize,
    /// The padding is as long as or longer than the payload.
    Padding,
    /// Stream 0 where a stream is required, or a stream where 0 is.
    StreamId,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Preface => "no HTTP/2 connection preface",
            Error::FrameSize => "invalid frame length",
            Error::Padding => "padding longer than the payload",
            Error::StreamId => "invalid stream identifier for the frame type",
        })
    }
}

impl std::error::Error for Error {}

/// A frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    /// Frame type.
    pub kind: FrameType,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits; the reserved bit is dropped).
    pub stream_id: u32,
}

impl FrameHeader {
    /// Parses the first 9 bytes of `buf`; `None` if there are fewer.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: FrameType::from(h[3]),
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// The header as 9 bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let s = self.stream_id.to_be_bytes();
        [
            l[1],
            l[2],
            l[3],
            u8::from(self.kind),
            self.flags,
            s[0],
            s[1],
            s[2],
            s[3],
        ]
    }

    /// Parses a header at the start of `buf` only if it could start a real
    /// frame: reserved bit clear, a known type, only the flags that type
    /// defines, a stream identifier of the right kind, a length the type
    /// allows and at most [`DEFAULT_MAX_FRAME_SIZE`]. Used to find frame
    /// boundaries when joining a connection mid-way.
    pub fn parse_plausible(buf: &[u8]) -> Option<FrameHeader> {
        let h = FrameHeader::parse(buf)?;
        (buf[5] & 0x80 == 0 && h.is_plausible()).then_some(h)
    }

    fn is_plausible(&self) -> bool {
        if self.len > DEFAULT_MAX_FRAME_SIZE {
            return false;
        }
        let s = self.stream_id;
        let f = self.flags;
        let n = self.len;
        match self.kind {
            // Empty frames are legal but rare, except an empty DATA that
            // ends a stream; runs of zero bytes look like them.
            FrameType::Data => {
                s != 0
                    && f & !(FLAG_END_STREAM | FLAG_PADDED) == 0
                    && (n > 0 || f == FLAG_END_STREAM)
            }
            FrameType::Headers => {
                s != 0
                    && n > 0
                    && f & !(FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY) == 0
            }
            FrameType::Priority => s != 0 && f == 0 && n == 5,
            FrameType::RstStream => s != 0 && f == 0 && n == 4,
            FrameType::Settings => {
                s == 0 && f & !FLAG_ACK == 0 && n.is_multiple_of(6) && (f == 0 || n == 0)
            }
            FrameType::PushPromise => {
                s != 0 && f & !(FLAG_END_HEADERS | FLAG_PADDED) == 0 && n >= 4
            }
            FrameType::Ping => s == 0 && f & !FLAG_ACK == 0 && n == 8,
            FrameType::GoAway => s == 0 && f == 0 && n >= 8,
            FrameType::WindowUpdate => f == 0 && n == 4,
            FrameType::Continuation => s != 0 && n > 0 && f & !FLAG_END_HEADERS == 0,
            FrameType::Unknown(_) => false,
        }
    }
}

/// Stream priority fields (RFC 9113 §5.3.2, deprecated but still sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    /// Exclusive dependency.
    pub exclusive: bool,
    /// Stream this one depends on.
    pub dependency: u32,
    /// Weight minus one, as on the wire.
    pub weight: u8,
}

impl Priority {
    fn parse(b: &[u8]) -> Option<Priority> {
        let b: &[u8; 5] = b.get(..5)?.try_into().ok()?;
        let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Some(Priority {
            exclusive: dep & 0x8000_0000 != 0,
            dependency: dep & 0x7fff_ffff,
            weight: b[4],
        })
    }
}

/// Setting identifiers (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// The parameters of a SETTINGS frame, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings<'a> {
    raw: &'a [u8],
}

impl<'a> Settings<'a> {
    /// `(identifier, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + 'a {
        self.raw.chunks_exact(6).map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
    }

    /// The last value of a setting, if present.
    pub fn get(&self, id: u16) -> Option<u32> {
        self.iter().filter(|&(i, _)| i == id).map(|(_, v)| v).last()
    }

    /// SETTINGS_HEADER_TABLE_SIZE, if present.
    pub fn header_table_size(&self) -> Option<u32> {
        self.get(setting::HEADER_TABLE_SIZE)
    }
}

/// A parsed frame, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `DATA`, padding removed.
    Data {
        /// Stream.
        stream_id: u32,
        /// The data.
        data: &'a [u8],
        /// `END_STREAM`.
        end_stream: bool,
    },
    /// `HEADERS`, padding and priority removed.
    Headers {
        /// Stream.
        stream_id: u32,
        /// Priority fields, if the flag was set.
        priority: Option<Priority>,
        /// Header block fragment.
        fragment: &'a [u8],
        /// `END_STREAM`.
        end_stream: bool,
        /// `END_HEADERS`: no CONTINUATION follows.
        end_headers: bool,
    },
    /// `PRIORITY`.
    Priority {
        /// Stream.
        stream_id: u32,
        /// Priority fields.
        priority: Priority,
    },
    /// `RST_STREAM`.
    RstStream {
        /// Stream.
        stream_id: u32,
        /// Error code (RFC 9113 §7).
        error_code: u32,
    },
    /// `SETTINGS`.
    Settings {
        /// `ACK` (no parameters).
        ack: bool,
        /// Parameters.
        settings: Settings<'a>,
    },
    /// `PUSH_PROMISE`, padding removed.
    PushPromise {
        /// Stream the promise is made on.
        stream_id: u32,
        /// The reserved stream.
        promised_stream_id: u32,
        /// Header block fragment.
        fragment: &'a [u8],
        /// `END_HEADERS`.
        end_headers: bool,
    },
    /// `PING`.
    Ping {
        /// `ACK`.
        ack: bool,
        /// Opaque data.
        payload: [u8; 8],
    },
    /// `GOAWAY`.
    GoAway {
        /// Last stream the sender may have processed.
        last_stream_id: u32,
        /// Error code.
        error_code: u32,
        /// Additional debug data.
        debug_data: &'a [u8],
    },
    /// `WINDOW_UPDATE`.
    WindowUpdate {
        /// Stream (0 for the connection).
        stream_id: u32,
        /// Window size increment.
        increment: u32,
    },
    /// `CONTINUATION`.
    Continuation {
        /// Stream.
        stream_id: u32,
        /// Header block fragment.
        fragment: &'a [u8],
        /// `END_HEADERS`.
        end_headers: bool,
    },
    /// An extension frame type, ignored.
    Unknown {
        /// The header.
        header: FrameHeader,
        /// The payload.
        payload: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let b: &[u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(*b))
}

/// Removes padding (RFC 9113 §6.1) when `PADDED` is set.
fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], Error> {
    if flags & FLAG_PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(Error::FrameSize)?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(Error::Padding)?;
    Ok(&rest[..keep])
}

fn need_stream(h: &FrameHeader) -> Result<(), Error> {
    if h.stream_id == 0 {
        Err(Error::StreamId)
    } else {
        Ok(())
    }
}

fn need_zero(h: &FrameHeader) -> Result<(), Error> {
    if h.stream_id != 0 {
        Err(Error::StreamId)
    } else {
        Ok(())
    }
}

/// Parses a frame's payload given its header; `payload.len()` must equal
/// `header.len`.
pub fn parse_payload<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<Frame<'a>, Error> {
    if payload.len() as u64 != u64::from(h.len) {
        return Err(Error::FrameSize);
    }
    let flags = h.flags;
    Ok(match h.kind {
        FrameType::Data => {
            need_stream(h)?;
            Frame::Data {
                stream_id: h.stream_id,
                data: unpad(flags, payload)?,
                end_stream: flags & FLAG_END_STREAM != 0,
            }
        }
        FrameType::Headers => {
            need_stream(h)?;
            let mut rest = unpad(flags, payload)?;
            let priority = if flags & FLAG_PRIORITY != 0 {
                let p = Priority::parse(rest).ok_or(Error::FrameSize)?;
                rest = &rest[5..];
                Some(p)
            } else {
                None
            };
            Frame::Headers {
                stream_id: h.stream_id,
                priority,
                fragment: rest,
                end_stream: flags & FLAG_END_STREAM != 0,
                end_headers: flags & FLAG_END_HEADERS != 0,
            }
        }
        FrameType::Priority => {
            need_stream(h)?;
            if payload.len() != 5 {
                return Err(Error::FrameSize);
            }
            Frame::Priority {
                stream_id: h.stream_id,
                priority: Priority::parse(payload).ok_or(Error::FrameSize)?,
            }
        }
        FrameType::RstStream => {
            need_stream(h)?;
            if payload.len() != 4 {
                return Err(Error::FrameSize);
            }
            Frame::RstStream {
                stream_id: h.stream_id,
                error_code: u32_at(payload, 0).ok_or(Error::FrameSize)?,
            }
        }
        FrameType::Settings => {
            need_zero(h)?;
            let ack = flags & FLAG_ACK != 0;
            if !payload.len().is_multiple_of(6) || (ack && !payload.is_empty()) {
                return Err(Error::FrameSize);
            }
            Frame::Settings {
                ack,
                settings: Settings { raw: payload },
            }
        }
        FrameType::PushPromise => {
            need_stream(h)?;
            let rest = unpad(flags, payload)?;
            let promised = u32_at(rest, 0).ok_or(Error::FrameSize)? & 0x7fff_ffff;
            Frame::PushPromise {
                stream_id: h.stream_id,
                promised_stream_id: promised,
                fragment: &rest[4..],
                end_headers: flags & FLAG_END_HEADERS != 0,
            }
        }
        FrameType::Ping => {
            need_zero(h)?;
            let p: [u8; 8] = payload.try_into().map_err(|_| Error::FrameSize)?;
            Frame::Ping {
                ack: flags & FLAG_ACK != 0,
                payload: p,
            }
        }
        FrameType::GoAway => {
            need_zero(h)?;
            Frame::GoAway {
                last_stream_id: u32_at(payload, 0).ok_or(Error::FrameSize)? & 0x7fff_ffff,
                error_code: u32_at(payload, 4).ok_or(Error::FrameSize)?,
                debug_data: &payload[8..],
            }
        }
        FrameType::WindowUpdate => {
            if payload.len() != 4 {
                return Err(Error::FrameSize);
            }
            Frame::WindowUpdate {
                stream_id: h.stream_id,
                increment: u32_at(payload, 0).ok_or(Error::FrameSize)? & 0x7fff_ffff,
            }
        }
        FrameType::Continuation => {
            need_stream(h)?;
            Frame::Continuation {
                stream_id: h.stream_id,
                fragment: payload,
                end_headers: flags & FLAG_END_HEADERS != 0,
            }
        }
        FrameType::Unknown(_) => Frame::Unknown {
            header: *h,
            payload,
        },
    })
}

/// Parses one whole frame from the start of `buf`: `Complete((frame,
/// len))` with the bytes it took, `Partial` if `buf` ends first.
pub fn parse_frame(buf: &[u8]) -> Result<Status<(Frame<'_>, usize)>, Error> {
    let Some(h) = FrameHeader::parse(buf) else {
        return Ok(Status::Partial);
    };
    let end = FRAME_HEADER_LEN + h.len as usize;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..end) else {
        return Ok(Status::Partial);
    };
    Ok(Status::Complete((parse_payload(&h, payload)?, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            len: payload.len() as u32,
            kind: FrameType::from(kind),
            flags,
            stream_id: stream,
        };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_every_type() {
        let f = frame(0, FLAG_PADDED | FLAG_END_STREAM, 1, b"\x02abcXX");
        assert_eq!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::Data {
                    stream_id: 1,
                    data: b"abc",
                    end_stream: true
                },
                f.len()
            )))
        );
        let f = frame(
            1,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS,
            3,
            b"\x01\x80\x00\x00\x01\x0f\x82P",
        );
        let Ok(Status::Complete((
            Frame::Headers {
                priority,
                fragment,
                end_headers,
                ..
            },
            _,
        ))) = parse_frame(&f)
        else {
            panic!("headers");
        };
        assert_eq!(
            priority,
            Some(Priority {
                exclusive: true,
                dependency: 1,
                weight: 15
            })
        );
        assert_eq!(fragment, b"\x82");
        assert!(end_headers);
        let f = frame(4, 0, 0, b"\x00\x01\x00\x00\x10\x00\x00\x05\x00\x00\x40\x00");
        let Ok(Status::Complete((
            Frame::Settings {
                ack: false,
                settings,
            },
            _,
        ))) = parse_frame(&f)
        else {
            panic!("settings");
        };
        assert_eq!(settings.header_table_size(), Some(4096));
        assert_eq!(settings.get(setting::MAX_FRAME_SIZE), Some(16384));
        let f = frame(3, 0, 5, &8u32.to_be_bytes());
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::RstStream {
                    stream_id: 5,
                    error_code: 8
                },
                13
            )))
        ));
        let f = frame(7, 0, 0, b"\x00\x00\x00\x07\x00\x00\x00\x00debug");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::GoAway {
                    last_stream_id: 7,
                    error_code: 0,
                    debug_data: b"debug"
                },
                _
            )))
        ));
        let f = frame(6, FLAG_ACK, 0, b"12345678");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((Frame::Ping { ack: true, .. }, _)))
        ));
        let f = frame(8, 0, 0, &1000u32.to_be_bytes());
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::WindowUpdate {
                    stream_id: 0,
                    increment: 1000
                },
                _
            )))
        ));
        let f = frame(2, 0, 3, b"\x00\x00\x00\x01\x10");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((Frame::Priority { .. }, _)))
        ));
        let f = frame(5, FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02\x82");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::PushPromise {
                    promised_stream_id: 2,
                    fragment: b"\x82",
                    ..
                },
                _
            )))
        ));
        let f = frame(9, FLAG_END_HEADERS, 1, b"\x84");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((
                Frame::Continuation {
                    end_headers: true,
                    ..
                },
                _
            )))
        ));
        let f = frame(0xbb, 0, 0, b"x");
        assert!(matches!(
            parse_frame(&f),
            Ok(Status::Complete((Frame::Unknown { .. }, _)))
        ));
    }

    #[test]
    fn refuses_malformed_frames() {
        assert_eq!(
            parse_frame(&frame(0, FLAG_PADDED, 1, b"\x05ab")),
            Err(Error::Padding)
        );
        assert_eq!(parse_frame(&frame(0, 0, 0, b"ab")), Err(Error::StreamId));
        assert_eq!(parse_frame(&frame(4, 0, 1, b"")), Err(Error::StreamId));
        assert_eq!(
            parse_frame(&frame(4, 0, 0, b"12345")),
            Err(Error::FrameSize)
        );
        assert_eq!(parse_frame(&frame(3, 0, 1, b"123")), Err(Error::FrameSize));
        assert_eq!(parse_frame(&frame(6, 0, 0, b"123")), Err(Error::FrameSize));
        assert_eq!(
            parse_frame(&frame(0, FLAG_PADDED, 1, b"")),
            Err(Error::FrameSize)
        );
        let f = frame(0, 0, 1, b"abc");
        for n in 0..f.len() {
            assert_eq!(parse_frame(&f[..n]), Ok(Status::Partial));
        }
    }
}

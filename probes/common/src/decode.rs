//! Safe decoding of records from ring-buffer bytes: checked slicing and
//! field-by-field little-endian reads, no `transmute`, no alignment assumptions.

use crate::{
    COMM_LEN, ConnClose, ConnOpen, Data, Direction, ExecMap, FILENAME_LEN, FileSend, Header, Kind,
    MAX_PAYLOAD, ProcExec, ProcExit, Role, Source,
};

/// Why ring bytes did not decode into a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record's fixed part (or than `cap_len` says follow).
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The header's kind number is not a known [`Kind`].
    UnknownKind(u32),
    /// A field holds a number outside its enum.
    BadField {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// `cap_len` is larger than [`MAX_PAYLOAD`].
    PayloadTooLong(u32),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { need, have } => {
                write!(f, "record too short: need {need} bytes, have {have}")
            }
            Self::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Self::BadField { field, value } => {
                write!(f, "field `{field}` has invalid value {value}")
            }
            Self::PayloadTooLong(n) => write!(f, "payload length {n} exceeds maximum"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A decoded record. `Data` borrows its payload from the ring bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A connection seen for the first time.
    ConnOpen(ConnOpen),
    /// Payload bytes; `payload.len() == data.cap_len`.
    Data {
        /// The fixed part.
        data: Data,
        /// Typed direction.
        direction: Direction,
        /// Typed source.
        source: Source,
        /// The captured bytes.
        payload: &'a [u8],
    },
    /// A connection's fd was closed.
    ConnClose(ConnClose),
    /// A selected process called exec.
    ProcExec(ProcExec),
    /// A selected process exited.
    ProcExit(ProcExit),
    /// A selected process mapped a file executable.
    ExecMap(ExecMap),
    /// A connection sent bytes straight from a file.
    FileSend(FileSend),
}

impl Record<'_> {
    /// The common header.
    pub fn header(&self) -> &Header {
        match self {
            Self::ConnOpen(r) => &r.header,
            Self::Data { data, .. } => &data.header,
            Self::ConnClose(r) => &r.header,
            Self::ProcExec(r) => &r.header,
            Self::ProcExit(r) => &r.header,
            Self::ExecMap(r) => &r.header,
            Self::FileSend(r) => &r.header,
        }
    }
}

/// Little-endian field reader over a slice whose length was checked up front.
struct Reader<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.off..self.off.saturating_add(N)) {
            out.copy_from_slice(src);
        }
        self.off = self.off.saturating_add(N);
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn header(&mut self) -> Header {
        Header {
            kind: self.u32(),
            cpu: self.u32(),
            ts_ns: self.u64(),
            pid: self.u32(),
            tid: self.u32(),
        }
    }
}

fn need(bytes: &[u8], n: usize) -> Result<(), DecodeError> {
    if bytes.len() < n {
        Err(DecodeError::Short {
            need: n,
            have: bytes.len(),
        })
    } else {
        Ok(())
    }
}

/// Decodes one record from the bytes of one ring-buffer entry. Trailing bytes
/// after the record (ring padding) are ignored.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    need(bytes, size_of::<Header>())?;
    let mut r = Reader { buf: bytes, off: 0 };
    let header = r.header();
    let kind = Kind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    match kind {
        Kind::ConnOpen => {
            need(bytes, size_of::<ConnOpen>())?;
            let rec = ConnOpen {
                header,
                conn_id: r.u64(),
                seq: r.u64(),
                cgroup_id: r.u64(),
                comm: r.take::<COMM_LEN>(),
                local_addr: r.take::<16>(),
                remote_addr: r.take::<16>(),
                local_port: r.u16(),
                remote_port: r.u16(),
                family: r.u16(),
                _pad0: r.u16(),
                role: r.u32(),
                fd: r.i32(),
            };
            Role::try_from(rec.role).map_err(|value| DecodeError::BadField {
                field: "role",
                value,
            })?;
            Ok(Record::ConnOpen(rec))
        }
        Kind::Data => {
            need(bytes, size_of::<Data>())?;
            let data = Data {
                header,
                conn_id: r.u64(),
                seq: r.u64(),
                call_len: r.u64(),
                offset: r.u64(),
                cap_len: r.u32(),
                direction: r.u32(),
                source: r.u32(),
                fd: r.i32(),
                shed_len: r.u64(),
            };
            let direction =
                Direction::try_from(data.direction).map_err(|value| DecodeError::BadField {
                    field: "direction",
                    value,
                })?;
            let source = Source::try_from(data.source).map_err(|value| DecodeError::BadField {
                field: "source",
                value,
            })?;
            if data.cap_len as usize > MAX_PAYLOAD {
                return Err(DecodeError::PayloadTooLong(data.cap_len));
            }
            let start = size_of::<Data>();
            let end = start + data.cap_len as usize;
            let payload = bytes.get(start..end).ok_or(DecodeError::Short {
                need: end,
                have: bytes.len(),
            })?;
            Ok(Record::Data {
                data,
                direction,
                source,
                payload,
            })
        }
        Kind::ConnClose => {
            need(bytes, size_of::<ConnClose>())?;
            Ok(Record::ConnClose(ConnClose {
                header,
                conn_id: r.u64(),
                seq: r.u64(),
                fd: r.i32(),
                _pad0: r.u32(),
                skipped_out: r.u64(),
                skipped_in: r.u64(),
            }))
        }
        Kind::ProcExec => {
            need(bytes, size_of::<ProcExec>())?;
            Ok(Record::ProcExec(ProcExec {
                header,
                cgroup_id: r.u64(),
                comm: r.take::<COMM_LEN>(),
                filename: r.take::<FILENAME_LEN>(),
            }))
        }
        Kind::ProcExit => {
            need(bytes, size_of::<ProcExit>())?;
            Ok(Record::ProcExit(ProcExit {
                header,
                cgroup_id: r.u64(),
            }))
        }
        Kind::ExecMap => {
            need(bytes, size_of::<ExecMap>())?;
            Ok(Record::ExecMap(ExecMap {
                header,
                dev: r.u64(),
                ino: r.u64(),
                addr: r.u64(),
                fd: r.i32(),
                _pad0: r.u32(),
            }))
        }
        Kind::FileSend => {
            need(bytes, size_of::<FileSend>())?;
            Ok(Record::FileSend(FileSend {
                header,
                conn_id: r.u64(),
                seq: r.u64(),
                offset: r.u64(),
                len: r.u64(),
                file_size: r.u64(),
                mtime_sec: r.u64(),
                dev: r.u64(),
                ino: r.u64(),
                chunks: r.u32(),
                fd: r.i32(),
                in_fd: r.i32(),
                _pad0: r.u32(),
                path: r.take::<FILENAME_LEN>(),
            }))
        }
    }
}

/// The bytes of a NUL-padded C string field, up to the first NUL.
pub fn cstr(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

//! The server name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).
//!
//! A TLS connection's first record crosses the socket in clear; the probes
//! copy it (at most 2 KiB, once per connection) and this parser reads the
//! `server_name` extension's host name from it. Every read is bounds-checked;
//! a truncated copy yields the name if the name lies inside it.
//!
//! Input is either a whole record (`16 03 0x LL LL`, then the handshake
//! message) or the handshake message alone (type 1, a 3-byte length, then
//! the body), as a server that reads the record header first delivers it.

/// Why no server name came out of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a TLS handshake record or a ClientHello message.
    NotClientHello,
    /// The bytes end before the `server_name` extension (a record header
    /// alone, or a copy cut short).
    Truncated,
    /// A length field points past its enclosing structure.
    Malformed,
    /// The ClientHello has no `server_name` extension with a host name.
    NoServerName,
    /// The host name is empty, too long, or not printable ASCII.
    BadName,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotClientHello => "not a tls client hello",
            Self::Truncated => "client hello ends before its server name",
            Self::Malformed => "client hello length field out of bounds",
            Self::NoServerName => "client hello has no server name",
            Self::BadName => "server name is not a printable host name",
        })
    }
}

impl core::error::Error for Error {}

/// Longest host name in a `server_name` entry (RFC 1035: 253 characters in
/// text form; RFC 6066 allows up to 2^16 - 1 bytes, which no client sends).
pub const MAX_SERVER_NAME: usize = 253;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// A cursor that never reads past its slice.
struct Cursor<'a> {
    buf: &'a [u8],
    /// The input ended early (a truncated copy), as opposed to a length
    /// field pointing past a complete enclosing structure.
    cut: bool,
}

impl<'a> Cursor<'a> {
    fn fail(&self) -> Error {
        if self.cut {
            Error::Truncated
        } else {
            Error::Malformed
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(self.fail());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, Error> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A sub-cursor over the next `n` bytes (a length-prefixed vector); if
    /// the input ends inside them, the rest of the input, marked cut.
    fn vector(&mut self, n: usize) -> Result<Cursor<'a>, Error> {
        if n > self.buf.len() {
            if !self.cut {
                return Err(Error::Malformed);
            }
            let all = Cursor {
                buf: self.buf,
                cut: true,
            };
            self.buf = &[];
            return Ok(all);
        }
        let buf = self.take(n)?;
        Ok(Cursor { buf, cut: false })
    }
}

/// The host name of the `server_name` extension of the ClientHello in
/// `bytes` (a record or the handshake message alone), as sent (callers
/// compare it ASCII case-insensitively).
pub fn server_name(bytes: &[u8]) -> Result<&str, Error> {
    let mut c = Cursor {
        buf: bytes,
        cut: true,
    };
    match bytes.first() {
        Some(&CONTENT_HANDSHAKE) => {
            let _version = c.take(3)?;
            let len = usize::from(c.u16()?);
            c = c.vector(len)?;
        }
        Some(&HANDSHAKE_CLIENT_HELLO) => {}
        Some(_) => return Err(Error::NotClientHello),
        None => return Err(Error::Truncated),
    }
    if c.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Error::NotClientHello);
    }
    let len = c.u24()?;
    let mut hello = c.vector(len)?;
    // legacy_version, random
    hello.take(2 + 32)?;
    let session = usize::from(hello.u8()?);
    hello.take(session)?;
    let suites = usize::from(hello.u16()?);
    hello.take(suites)?;
    let compression = usize::from(hello.u8()?);
    hello.take(compression)?;
    if hello.buf.is_empty() && !hello.cut {
        // A ClientHello without extensions (SSL 3.0 style).
        return Err(Error::NoServerName);
    }
    let ext_len = usize::from(hello.u16()?);
    let mut exts = hello.vector(ext_len)?;
    while !exts.buf.is_empty() || exts.cut {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let mut body = exts.vector(len)?;
        if kind != EXT_SERVER_NAME {
            if body.cut {
                return Err(Error::Truncated);
            }
            continue;
        }
        let list_len = usize::from(body.u16()?);
        let mut list = body.vector(list_len)?;
        while !list.buf.is_empty() || list.cut {
            let name_type = list.u8()?;
            let name_len = usize::from(list.u16()?);
            let name = list.take(name_len)?;
            if name_type == NAME_TYPE_HOST {
                return host_name(name);
            }
        }
        return Err(Error::NoServerName);
    }
    Err(Error::NoServerName)
}

/// `name` as text, if it is a plausible DNS host name: 1 to
/// [`MAX_SERVER_NAME`] bytes of printable ASCII without spaces.
fn host_name(name: &[u8]) -> Result<&str, Error> {
    if name.is_empty() || name.len() > MAX_SERVER_NAME || !name.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::BadName);
    }
    core::str::from_utf8(name).map_err(|_| Error::BadName)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with `exts` as its extensions.
    fn hello_with(exts: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[3, 3]);
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut rec = vec![CONTENT_HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn sni(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (t, n) in names {
            list.push(*t);
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        ext(EXT_SERVER_NAME, &data)
    }

    fn typical() -> Vec<u8> {
        let mut exts = ext(0xff01, &[0]);
        exts.extend(sni(&[(0, b"api.example.com")]));
        exts.extend(ext(10, &[0, 2, 0, 0x1d]));
        exts.extend(ext(51, &[0; 40]));
        hello_with(&exts)
    }

    #[test]
    fn reads_the_name_of_a_record() {
        assert_eq!(server_name(&typical()), Ok("api.example.com"));
    }

    #[test]
    fn reads_the_name_of_a_bare_message() {
        assert_eq!(server_name(&typical()[5..]), Ok("api.example.com"));
    }

    #[test]
    fn a_copy_cut_after_the_name_still_names_it() {
        let rec = typical();
        let end = rec
            .windows(15)
            .position(|w| w == b"api.example.com")
            .unwrap()
            + 15;
        assert_eq!(server_name(&rec[..end]), Ok("api.example.com"));
        for cut in 0..end {
            assert!(
                matches!(
                    server_name(&rec[..cut]),
                    Err(Error::Truncated | Error::BadName)
                ),
                "cut at {cut}: {:?}",
                server_name(&rec[..cut])
            );
        }
    }

    #[test]
    fn header_alone_is_truncated() {
        assert_eq!(server_name(&typical()[..5]), Err(Error::Truncated));
        assert_eq!(server_name(&[]), Err(Error::Truncated));
    }

    #[test]
    fn skips_non_host_names() {
        let exts = sni(&[(7, b"opaque"), (0, b"h.test")]);
        assert_eq!(server_name(&hello_with(&exts)), Ok("h.test"));
    }

    #[test]
    fn refuses_what_is_not_a_client_hello() {
        let mut server_hello = typical();
        server_hello[5] = 2;
        assert_eq!(server_name(&server_hello), Err(Error::NotClientHello));
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n"),
            Err(Error::NotClientHello)
        );
        assert_eq!(
            server_name(&[0x17, 3, 3, 0, 1, 0]),
            Err(Error::NotClientHello)
        );
    }

    #[test]
    fn without_server_name() {
        assert_eq!(
            server_name(&hello_with(&ext(10, &[0, 2, 0, 0x1d]))),
            Err(Error::NoServerName)
        );
        assert_eq!(server_name(&hello_with(&[])), Err(Error::NoServerName));
        assert_eq!(
            server_name(&hello_with(&sni(&[(7, b"x")]))),
            Err(Error::NoServerName)
        );
    }

    #[test]
    fn refuses_bad_names() {
        for name in [&b""[..], b"a b", b"caf\xc3\xa9", b"x\0y", &[b'a'; 254]] {
            assert_eq!(
                server_name(&hello_with(&sni(&[(0, name)]))),
                Err(Error::BadName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn length_fields_past_their_structure_are_malformed() {
        // Extension length larger than the extensions block (complete record).
        let mut exts = sni(&[(0, b"h.test")]);
        exts[3] += 10;
        assert_eq!(server_name(&hello_with(&exts)), Err(Error::Malformed));
        // Name length larger than its list.
        let mut exts = sni(&[(0, b"h.test")]);
        exts[8] += 1;
        assert_eq!(server_name(&hello_with(&exts)), Err(Error::Malformed));
        // Session id longer than the hello.
        let mut rec = typical();
        rec[5 + 4 + 34] = 255;
        assert!(server_name(&rec).is_err());
    }
}

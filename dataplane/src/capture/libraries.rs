//! The TLS libraries tapwire reads, one entry each: how a file carrying the
//! library is recognised, and how its probe points are planned (symbols,
//! calling conventions, how the session's socket is found). Adding a library
//! is one entry here plus its probe programs.
//!
//! | kind | files | read / write | session → socket |
//! | --- | --- | --- | --- |
//! | OpenSSL/BoringSSL | `libssl.so*`, `libboringssl*`, executables with `SSL_read` (node) | `SSL_read(_ex)` / `SSL_write(_ex)` (+ret) | socket syscall inside the call, per `SSL *` |
//! | GnuTLS | `libgnutls.so*` | `gnutls_record_recv` / `gnutls_record_send2` (what `gnutls_record_send` tail-calls) (+ret) | as OpenSSL, per `gnutls_session_t` |
//! | Go `crypto/tls` | Go executables (symbol table or `.gopclntab`) | `(*Conn).Read` / `(*Conn).Write`, no uretprobe | `tls.Conn.conn` → `*net.TCPConn` → `netFD.pfd.Sysfd` |
//! | NSS | `libnspr4.so`, `libssl3.so` | NSPR's `PR_Read`/`PR_Recv` / `PR_Write`/`PR_Send` (+ret) on descriptors with NSS's SSL layer | bottom NSPR layer's `md.osfd` |

use std::sync::atomic::{AtomicU64, Ordering};

use tapwire_common::tls_fn;

use super::{
    golang, nss,
    placement::{CLibrary, Elf, PlacementError, ProbePoint, plan_c},
};

/// A kind of TLS library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LibraryKind {
    /// OpenSSL or BoringSSL, shared or linked into an executable.
    OpenSsl = 0,
    /// GnuTLS (`libgnutls.so.30`).
    GnuTls = 1,
    /// Go's `crypto/tls`, linked into every Go program.
    GoTls = 2,
    /// NSS (`libssl3.so`) over NSPR (`libnspr4.so`).
    Nss = 3,
}

impl LibraryKind {
    /// Number of kinds.
    pub const COUNT: usize = 4;
    /// Every kind, in index order.
    pub const ALL: [Self; Self::COUNT] = [Self::OpenSsl, Self::GnuTls, Self::GoTls, Self::Nss];

    /// Name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSsl => "openssl",
            Self::GnuTls => "gnutls",
            Self::GoTls => "go",
            Self::Nss => "nss",
        }
    }
}

/// How a library's probe points are planned.
pub enum Planner {
    /// C calling conventions, uprobe + uretprobe pairs.
    C(CLibrary),
    /// Go's register ABI: see [`golang`].
    Go,
    /// NSPR's I/O functions on NSS descriptors: see [`nss`].
    Nss,
}

/// One TLS library.
pub struct TlsLibrary {
    /// Its kind.
    pub kind: LibraryKind,
    /// File-name prefixes of its shared libraries, looked for in process maps
    /// and the usual library directories (empty: executables only).
    pub file_prefixes: &'static [&'static str],
    /// Symbols whose definition marks a file (library or executable) as
    /// carrying this library.
    pub markers: &'static [&'static str],
    /// How its points are planned.
    pub planner: Planner,
}

/// Every TLS library tapwire reads.
pub static LIBRARIES: &[TlsLibrary] = &[
    TlsLibrary {
        kind: LibraryKind::OpenSsl,
        file_prefixes: &["libssl.so", "libboringssl"],
        markers: &["SSL_read", "SSL_write", "SSL_read_ex"],
        planner: Planner::C(CLibrary {
            families: &[
                &[("SSL_read", tls_fn::READ), ("SSL_read_ex", tls_fn::READ_EX)],
                &[
                    ("SSL_write", tls_fn::WRITE),
                    ("SSL_write_ex", tls_fn::WRITE_EX),
                ],
            ],
            // `ssl_read_internal`/`ssl_write_internal` have the `_ex` shape.
            internal_shapes: Some(&[tls_fn::READ_EX, tls_fn::WRITE_EX]),
            session_ends: &["SSL_free", "SSL_shutdown"],
        }),
    },
    TlsLibrary {
        kind: LibraryKind::GnuTls,
        file_prefixes: &["libgnutls.so"],
        markers: &["gnutls_record_recv"],
        planner: Planner::C(CLibrary {
            // `ssize_t gnutls_record_recv(gnutls_session_t, void *, size_t)`
            // and `gnutls_record_send2(session, const void *, size_t, size_t
            // pad, unsigned flags)` have `SSL_read`'s shape (bytes returned);
            // `gnutls_record_send` is a tail call into `gnutls_record_send2`
            // (GnuTLS ≥ 3.6.3), whose entry is a `push`. Older GnuTLS has no
            // `send2`: then `gnutls_record_send` itself.
            families: &[
                &[("gnutls_record_recv", tls_fn::READ)],
                &[("gnutls_record_send2", tls_fn::WRITE)],
            ],
            internal_shapes: None,
            session_ends: &["gnutls_deinit", "gnutls_bye"],
        }),
    },
    TlsLibrary {
        kind: LibraryKind::GoTls,
        file_prefixes: &[],
        markers: &[],
        planner: Planner::Go,
    },
    TlsLibrary {
        kind: LibraryKind::Nss,
        file_prefixes: &["libnspr4.so", "libssl3.so"],
        markers: nss::MARKERS,
        planner: Planner::Nss,
    },
];

/// GnuTLS before 3.6.3 has no `gnutls_record_send2`: its writes are planned
/// on `gnutls_record_send`.
const GNUTLS_OLD_WRITE: CLibrary = CLibrary {
    families: &[
        &[("gnutls_record_recv", tls_fn::READ)],
        &[("gnutls_record_send", tls_fn::WRITE)],
    ],
    internal_shapes: None,
    session_ends: &["gnutls_deinit", "gnutls_bye"],
};

/// The library kind whose shared-library files are named like `file_name`.
pub fn kind_of_file_name(file_name: &str) -> Option<LibraryKind> {
    LIBRARIES
        .iter()
        .find(|l| l.file_prefixes.iter().any(|p| file_name.starts_with(p)))
        .map(|l| l.kind)
}

/// The TLS libraries an ELF file carries and their probe points: the first
/// library found decides the kind (one file, one library in practice).
pub fn plan(data: &[u8]) -> Result<(LibraryKind, Vec<ProbePoint>), PlacementError> {
    let elf = Elf::parse(data)?;
    for lib in LIBRARIES {
        let points = match &lib.planner {
            Planner::C(c) => {
                if !elf.defines_any(lib.markers) {
                    continue;
                }
                if lib.kind == LibraryKind::GnuTls && elf.symbol("gnutls_record_send2").is_none() {
                    plan_c(&elf, &GNUTLS_OLD_WRITE)?
                } else {
                    plan_c(&elf, c)?
                }
            }
            Planner::Go => {
                if !golang::is_go(&elf) {
                    continue;
                }
                golang::plan(&elf)?
            }
            Planner::Nss => {
                if !elf.defines_any(lib.markers) {
                    continue;
                }
                nss::plan(&elf)?
            }
        };
        return Ok((lib.kind, points));
    }
    Err(PlacementError::NoSymbols)
}

/// Files with attached TLS probes so far, per library kind (shared libraries
/// and executables alike), and their probe points: for logs and metrics.
#[derive(Debug, Default)]
pub struct ProbedCounts {
    files: [AtomicU64; LibraryKind::COUNT],
    points: [AtomicU64; LibraryKind::COUNT],
}

impl ProbedCounts {
    /// Counts one more probed file of `kind` with `points` probe points.
    pub fn add(&self, kind: LibraryKind, points: u64) {
        self.files[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.points[kind as usize].fetch_add(points, Ordering::Relaxed);
    }

    /// Files of `kind` probed.
    pub fn files(&self, kind: LibraryKind) -> u64 {
        self.files[kind as usize].load(Ordering::Relaxed)
    }

    /// Probe points in files of `kind`.
    pub fn points(&self, kind: LibraryKind) -> u64 {
        self.points[kind as usize].load(Ordering::Relaxed)
    }
}

//! TLS probes as BPF links (Linux 6.13+): `uprobe_multi` links, and uprobe
//! sessions for the TLS calls.
//!
//! A uprobe with a uretprobe costs every process that calls the function two
//! traps per call, selected or not: the kernel arms the return probe at entry
//! before any program runs. A session probe (a `uprobe_multi` link of attach
//! type `BPF_TRACE_UPROBE_SESSION`) runs one program at entry and, only when
//! that program returns 0, again at return. The TLS call program
//! (`ssl_session` in the probes) returns 1 for a process outside the
//! selection, which then pays one emulated probe hit per call.
//!
//! The other TLS probes (session ends, Go's, NSS's) are `uprobe_multi` links
//! too: one `bpf(BPF_LINK_CREATE)` per program and file instead of a perf
//! event per point, and no trace event, so attaching and detaching never take
//! the kernel's global trace-event mutex (a perf uprobe's destruction holds it
//! through an RCU grace period, which stalled every attach behind a detach).
//!
//! aya 0.14 loads every program with the attach type its section names and has
//! no multi or session attach, so these programs are loaded here from the
//! same object: the object is parsed again with `aya_obj`, its map references
//! resolved to the maps aya created (so both loads share every map), and each
//! program loaded with its attach type and the object's BTF as aya loaded it.
//! The programs use no CO-RE relocations (kernel struct offsets come from
//! [`super::btf`] through the config map), so none are applied. A kernel
//! without sessions refuses the load, and the TLS probes are perf events
//! attached through aya, a uprobe and a uretprobe per call, as before.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya::{Ebpf, maps::Map};

/// The program run at entry and return of each TLS call point.
pub const SESSION: &str = "ssl_session";

/// Every program loaded for links: name, and whether it runs at return.
/// Names are at most 15 bytes (the kernel's program name).
pub const PROGRAMS: &[(&str, Attach)] = &[
    (SESSION, Attach::Session),
    ("ssl_return", Attach::Return),
    ("ssl_free", Attach::Entry),
    ("go_tls_enter", Attach::Entry),
    ("go_tls_read_copy", Attach::Entry),
    ("go_tls_return", Attach::Entry),
    ("nss_enter", Attach::Entry),
    ("nss_import_return", Attach::Return),
];

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// At the probed address.
    Entry,
    /// At the return of the function at the probed address.
    Return,
    /// At entry and, when the entry returned 0, at return.
    Session,
}

impl Attach {
    fn attach_type(self) -> u32 {
        match self {
            Self::Entry | Self::Return => BPF_TRACE_UPROBE_MULTI,
            Self::Session => BPF_TRACE_UPROBE_SESSION,
        }
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_TRACE_UPROBE_SESSION: u32 = 57;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// Why the link programs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The object could not be parsed or relocated.
    #[error("preparing the link programs: {0}")]
    Object(String),
    /// A map the programs use is not among the loaded maps.
    #[error("map `{0}` not loaded")]
    Map(String),
    /// The kernel refused a program (no uprobe sessions before 6.13).
    #[error("loading `{name}` as {attach:?}: {error}{log}")]
    Load {
        /// The program.
        name: &'static str,
        /// How it was to be attached.
        attach: Attach,
        /// The `bpf(BPF_PROG_LOAD)` error.
        error: io::Error,
        /// The verifier's last lines, when it ran.
        log: String,
    },
}

/// One loaded program.
struct Loaded {
    name: &'static str,
    attach: Attach,
    fd: OwnedFd,
}

/// The programs of [`PROGRAMS`], loaded for links.
pub struct LinkPrograms {
    programs: Vec<Loaded>,
}

/// `bpf_attr` for `BPF_PROG_LOAD`, as far as it is used (the rest zero).
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    rest: [u32; 9],
}

/// `bpf_attr` for `BPF_BTF_GET_FD_BY_ID`.
#[repr(C)]
struct BtfById {
    btf_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf_attr` for `BPF_LINK_CREATE` of a `uprobe_multi` link.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, fully initialised `bpf_attr` prefix of the
    // size passed; every pointer in it outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// The descriptor of a loaded map, whatever its kind.
fn map_fd(map: &Map) -> RawFd {
    let data = match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    };
    data.fd().as_fd().as_raw_fd()
}

impl LinkPrograms {
    /// Loads [`PROGRAMS`] from `object` with the maps of `ebpf` (loaded from
    /// the same object, before any map is taken out of it) and the object's
    /// BTF as aya loaded it (`btf_id`, from one of its programs): the verifier
    /// needs the functions' BTF to check calls between them.
    pub fn load(object: &[u8], ebpf: &Ebpf, btf_id: u32) -> Result<Self, LinkError> {
        let btf = bpf(
            BPF_BTF_GET_FD_BY_ID,
            &mut BtfById {
                btf_id,
                next_id: 0,
                open_flags: 0,
            },
        )
        .map_err(|e| LinkError::Object(format!("object btf {btf_id}: {e}")))?;
        let object_err = |e: &dyn std::fmt::Display| LinkError::Object(e.to_string());
        let mut obj = aya_obj::Object::parse(object).map_err(|e| object_err(&e))?;
        let mut maps = Vec::with_capacity(obj.maps.len());
        for (name, map) in &obj.maps {
            let loaded = ebpf.map(name).ok_or_else(|| LinkError::Map(name.clone()))?;
            maps.push((name.clone(), map_fd(loaded), map.clone()));
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(
            maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
            &text_sections,
        )
        .map_err(|e| object_err(&e))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| object_err(&e))?;
        let mut programs = Vec::with_capacity(PROGRAMS.len());
        for &(name, attach) in PROGRAMS {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| LinkError::Object(format!("`{name}` not in the object")))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| LinkError::Object(format!("`{name}`: no function")))?;
            let fd = load_program(name, attach, &program.license, function, &btf)?;
            programs.push(Loaded { name, attach, fd });
        }
        Ok(Self { programs })
    }

    /// Attaches program `name` at `offsets` of the file at `path` (each with
    /// its cookie), in every process that maps it or in `pid` only. The
    /// returned link detaches them all when closed.
    pub fn attach(
        &self,
        name: &str,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: Option<u32>,
    ) -> io::Result<OwnedFd> {
        debug_assert_eq!(offsets.len(), cookies.len());
        let program = self
            .programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "program not loaded"))?;
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut attr = LinkCreate {
            prog_fd: program.fd.as_raw_fd() as u32,
            target_fd: 0,
            attach_type: program.attach.attach_type(),
            flags: 0,
            path: path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            ref_ctr_offsets: 0,
            cookies: cookies.as_ptr() as u64,
            cnt: offsets.len() as u32,
            multi_flags: if program.attach == Attach::Return {
                BPF_F_UPROBE_MULTI_RETURN
            } else {
                0
            },
            pid: pid.unwrap_or(0),
            pad: 0,
        };
        bpf(BPF_LINK_CREATE, &mut attr)
    }
}

/// Loads one relocated program with `attach`'s attach type.
fn load_program(
    name: &'static str,
    attach: Attach,
    license: &std::ffi::CStr,
    function: &aya_obj::Function,
    btf: &OwnedFd,
) -> Result<OwnedFd, LinkError> {
    let insns = &function.instructions;
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let load = |log_level: u32, log: &mut [u8]| {
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_KPROBE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type: attach.attach_type(),
            prog_btf_fd: btf.as_raw_fd() as u32,
            func_info_rec_size: function.func_info_rec_size as u32,
            func_info: func_info.as_ptr() as u64,
            func_info_cnt: function.func_info.len() as u32,
            line_info_rec_size: function.line_info_rec_size as u32,
            line_info: line_info.as_ptr() as u64,
            line_info_cnt: function.line_info.len() as u32,
            rest: [0; 9],
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match load(0, &mut []) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            // Again with the verifier's log, for the error.
            let mut log = vec![0u8; 1 << 20];
            let _ = load(1, &mut log);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim_end();
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            let log = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    " (verifier: {})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            };
            Err(LinkError::Load {
                name,
                attach,
                error,
                log,
            })
        }
    }
}

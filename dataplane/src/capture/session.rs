//! TLS call probes as uprobe sessions (Linux 6.13+).
//!
//! A uprobe with a uretprobe costs every process that calls the function two
//! traps per call, selected or not: the kernel arms the return probe at entry
//! before any program runs. A session probe (a `uprobe_multi` link of attach
//! type `BPF_TRACE_UPROBE_SESSION`) runs one program at entry and, only when
//! that program returns 0, again at return. The TLS call program
//! (`ssl_session` in the probes) returns 1 for a process outside the
//! selection, which then pays one emulated probe hit per call.
//!
//! aya 0.14 loads every program with the attach type its section names and has
//! no session attach, so this program is loaded here from the same object: the
//! object is parsed again with `aya_obj`, its map references resolved to the
//! maps aya created (so both loads share every map), and the result loaded with
//! the session attach type. The programs use no CO-RE relocations (kernel
//! struct offsets come from [`super::btf`] through the config map), so none
//! are applied. A kernel without sessions refuses the load, and the TLS calls
//! are probed with a uprobe and a uretprobe as before.
//!
//! One link carries every call point of a file (offsets and cookies in one
//! `bpf(BPF_LINK_CREATE)`); closing it detaches them all.

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
pub const PROGRAM: &str = "ssl_session";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_SESSION: u32 = 57;

/// Why the session program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The object could not be parsed or relocated.
    #[error("preparing `{PROGRAM}`: {0}")]
    Object(String),
    /// A map the program uses is not among the loaded maps.
    #[error("map `{0}` of `{PROGRAM}` not loaded")]
    Map(String),
    /// The kernel refused the program (no session support before 6.13).
    #[error("loading `{PROGRAM}` with attach type uprobe session: {error}{log}")]
    Load {
        /// The `bpf(BPF_PROG_LOAD)` error.
        error: io::Error,
        /// The verifier's last lines, when it ran.
        log: String,
    },
}

/// The loaded session program.
pub struct SessionProgram {
    fd: OwnedFd,
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

impl SessionProgram {
    /// Loads [`PROGRAM`] from `object` with the maps of `ebpf` (loaded from
    /// the same object, before any map is taken out of it) and the object's
    /// BTF as aya loaded it (`btf_id`, from one of its programs): the verifier
    /// needs the functions' BTF to check calls between them.
    pub fn load(object: &[u8], ebpf: &Ebpf, btf_id: u32) -> Result<Self, SessionError> {
        let btf = bpf(
            BPF_BTF_GET_FD_BY_ID,
            &mut BtfById {
                btf_id,
                next_id: 0,
                open_flags: 0,
            },
        )
        .map_err(|e| SessionError::Object(format!("object btf {btf_id}: {e}")))?;
        let object_err = |e: &dyn std::fmt::Display| SessionError::Object(e.to_string());
        let mut obj = aya_obj::Object::parse(object).map_err(|e| object_err(&e))?;
        let mut fds = Vec::with_capacity(obj.maps.len());
        for name in obj.maps.keys() {
            let map = ebpf
                .map(name)
                .ok_or_else(|| SessionError::Map(name.clone()))?;
            fds.push((name.clone(), map_fd(map)));
        }
        let maps: Vec<(String, RawFd, aya_obj::Map)> = fds
            .into_iter()
            .map(|(name, fd)| {
                let map = obj.maps[&name].clone();
                (name, fd, map)
            })
            .collect();
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(
            maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
            &text_sections,
        )
        .map_err(|e| object_err(&e))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| object_err(&e))?;
        let program = obj
            .programs
            .get(PROGRAM)
            .ok_or_else(|| SessionError::Object("not in the object".into()))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| SessionError::Object("function not in the object".into()))?;
        let license = &program.license;
        let insns = &function.instructions;
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();

        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"ssl_session");
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
                prog_name: name,
                prog_ifindex: 0,
                expected_attach_type: BPF_TRACE_UPROBE_SESSION,
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
            Ok(fd) => Ok(Self { fd }),
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
                Err(SessionError::Load { error, log })
            }
        }
    }

    /// Attaches the program at `offsets` of the file at `path` (each with its
    /// cookie), in every process that maps it or in `pid` only. The returned
    /// link detaches them all when closed.
    pub fn attach(
        &self,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: Option<u32>,
    ) -> io::Result<OwnedFd> {
        debug_assert_eq!(offsets.len(), cookies.len());
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut attr = LinkCreate {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_fd: 0,
            attach_type: BPF_TRACE_UPROBE_SESSION,
            flags: 0,
            path: path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            ref_ctr_offsets: 0,
            cookies: cookies.as_ptr() as u64,
            cnt: offsets.len() as u32,
            multi_flags: 0,
            pid: pid.unwrap_or(0),
            pad: 0,
        };
        bpf(BPF_LINK_CREATE, &mut attr)
    }
}

//! Kernel struct field offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the probes' fd → socket walk.
//!
//! aya-obj parses BTF but keeps struct members private, so this is a small
//! reader of the documented format (`Documentation/bpf/btf.rst`): a header,
//! then type records, then the string table. Only struct/union members are
//! kept; anonymous members are searched through, so `skc_daddr` is found inside
//! `struct sock`'s `__sk_common` unions.

use std::path::Path;

use tapwire_common::config::KernelOffsets;

/// Errors reading kernel BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel btf at `{path}`")]
    Read {
        /// The path tried.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not BTF this reader understands.
    #[error("malformed btf: {0}")]
    Malformed(&'static str),
    /// A struct or field the probes need is missing.
    #[error("kernel btf has no `{0}`")]
    Missing(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// `type` for typedef/const/volatile/…, else size.
    ty: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: types (index = type id) and strings.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    let s = b
        .get(off..off + 4)
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl KernelBtf {
    /// Reads `/sys/kernel/btf/vmlinux` (or another BTF file).
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses little-endian BTF bytes.
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if b.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_start = hdr_len + type_off;
        let tb = b
            .get(types_start..types_start + type_len)
            .ok_or(BtfError::Malformed("types"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("strings"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut off = 0;
        while off < tb.len() {
            let name = u32_at(tb, off)?;
            let info = u32_at(tb, off + 4)?;
            let ty = u32_at(tb, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let raw = u32_at(tb, off + 8)?;
                        members.push(Member {
                            name: u32_at(tb, off)?,
                            ty: u32_at(tb, off + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                        off += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => off += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => off += 12 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                _ => return Err(BtfError::Malformed("unknown kind")),
            }
            types.push(Type {
                name,
                kind,
                ty,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| {
                (t.kind == KIND_STRUCT || t.kind == KIND_UNION)
                    && !t.members.is_empty()
                    && self.name(t.name) == name.as_bytes()
            })
            .map(|i| i as u32)
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.ty
                }
                _ => break,
            }
        }
        id
    }

    fn member_bits(&self, id: u32, field: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if self.name(m.name) == field.as_bytes() {
                return Some(m.bit_offset);
            }
        }
        if depth > 4 {
            return None;
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.resolve(m.ty);
            if let Some(bits) = self.member_bits(inner, field, depth + 1) {
                return Some(m.bit_offset + bits);
            }
        }
        None
    }

    /// Byte offset of `field` in `struct name` (searching anonymous members).
    pub fn offset(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        let id = self
            .struct_id(name)
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        let bits = self
            .member_bits(id, field, 0)
            .ok_or_else(|| BtfError::Missing(format!("{name}.{field}")))?;
        Ok(bits / 8)
    }

    /// Every offset the probes need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        // `struct sock` starts with `struct sock_common __sk_common`.
        let sk_common = self.offset("sock", "__sk_common")?;
        let skc = |f: &str| self.offset("sock_common", f).map(|o| o + sk_common);
        Ok(KernelOffsets {
            task_files: self.offset("task_struct", "files")?,
            task_mm: self.offset("task_struct", "mm")?,
            files_fdt: self.offset("files_struct", "fdt")?,
            fdt_max_fds: self.offset("fdtable", "max_fds")?,
            fdt_fd: self.offset("fdtable", "fd")?,
            file_private_data: self.offset("file", "private_data")?,
            file_inode: self.offset("file", "f_inode")?,
            inode_mode: self.offset("inode", "i_mode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            mm_exe_file: self.offset("mm_struct", "exe_file")?,
            socket_type: self.offset("socket", "type")?,
            socket_sk: self.offset("socket", "sk")?,
            sk_family: skc("skc_family")?,
            sk_daddr: skc("skc_daddr")?,
            sk_rcv_saddr: skc("skc_rcv_saddr")?,
            sk_dport: skc("skc_dport")?,
            sk_num: skc("skc_num")?,
            sk_v6_daddr: skc("skc_v6_daddr")?,
            sk_v6_rcv_saddr: skc("skc_v6_rcv_saddr")?,
            inode_sb: self.offset("inode", "i_sb")?,
            sb_dev: self.offset("super_block", "s_dev")?,
            file_pos: self.offset("file", "f_pos")?,
            inode_size: self.offset("inode", "i_size")?,
            // Renamed twice: `i_mtime` (timespec64), `__i_mtime` (6.6),
            // `i_mtime_sec` (6.11); each starts with the seconds.
            inode_mtime: self
                .offset("inode", "i_mtime_sec")
                .or_else(|_| self.offset("inode", "__i_mtime"))
                .or_else(|_| self.offset("inode", "i_mtime"))?,
            _pad0: 0,
        })
    }
}

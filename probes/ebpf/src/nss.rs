//! NSS plaintext: uprobes on NSPR's I/O entry points in `libnspr4.so`
//! (`PR_Read`, `PR_Write`, `PR_Recv`, `PR_Send`), through which an NSS
//! program reads and writes its TLS connections, and a uretprobe on
//! `SSL_ImportFD` in `libssl3.so`, which says which NSPR layer is NSS's SSL
//! layer in this process.
//!
//! Why here: NSS's own read and write functions are private (reached only
//! through a function table), while every application call goes through
//! these four exported NSPR functions, each a two-instruction dispatch
//! (`mov rax,[rdi]; jmp [rax+…]`) to the top layer of the descriptor.
//!
//! An NSPR descriptor is a stack of `PRFileDesc` layers (public layout,
//! `prio.h`): `methods`, `secret` (the layer's private data), `lower`,
//! `higher`, `dtor`, `identity`. `SSL_ImportFD` pushes the SSL layer, whose
//! identity NSS obtains once per process from `PR_GetUniqueIdentity("SSL")`;
//! its uretprobe ([`nss_import_return`]) reads that identity from the
//! descriptor it returns and keeps it per process (`NSS_SSL_LAYERS`). The
//! same four functions also carry a program's file, pipe and plain socket
//! I/O (`tstclnt` reads its request from stdin with `PR_Read`): a call is
//! taken only when its descriptor has a layer with that identity. The OS
//! descriptor is in the bottom layer (`lower` is null), in its private data
//! (`PRFilePrivate.md.osfd`, an offset NSPR's headers do not publish: user
//! space reads it from the library's code and passes it in the cookie).
//!
//! Pairing: [`nss_enter`] saves `(descriptor, buf, fd)` in `TLS_CALLS` keyed
//! by `pid_tgid`; the uretprobe on the same function is [`crate::tls::ssl_return`],
//! which emits the bytes the call returned.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tapwire_common::{DropReason, nss};

use crate::{
    emit::count,
    maps::{NSS_SSL_LAYERS, TlsCall},
    select::selected,
    tls::begin_call,
};

/// Layers walked from the top to the bottom of a descriptor (NSS stacks the
/// SSL layer over the socket; a program may add a few of its own).
const MAX_LAYERS: usize = 8;

/// `struct PRFileDesc` (`nspr/prio.h`), 64-bit.
#[repr(C)]
struct PrFileDesc {
    methods: u64,
    secret: u64,
    lower: u64,
    higher: u64,
    dtor: u64,
    identity: i32,
    _pad: u32,
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper reads user memory safely, failing on bad addresses.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The OS descriptor under the NSPR descriptor `top`, if one of its layers is
/// the SSL layer `ssl_layer`.
#[inline(always)]
fn ssl_socket(top: u64, ssl_layer: i32, osfd_off: u64) -> Option<i64> {
    let mut at = top;
    let mut ssl = false;
    for _ in 0..MAX_LAYERS {
        let layer = read_user::<PrFileDesc>(at)?;
        ssl |= layer.identity == ssl_layer;
        if layer.lower == 0 {
            if !ssl {
                return None;
            }
            let fd = read_user::<i32>(layer.secret.checked_add(osfd_off)?)?;
            return (fd >= 0).then_some(i64::from(fd));
        }
        at = layer.lower;
    }
    None
}

/// hook: libnspr4 `PRInt32 PR_Read(PRFileDesc *fd, void *buf, PRInt32
/// amount)`, `PR_Write(PRFileDesc *, const void *, PRInt32)`, `PR_Recv(fd,
/// buf, amount, PRIntn flags, PRIntervalTime)`, `PR_Send(…)` entry; cookie =
/// `tapwire_common::nss` (shape `tls_fn::READ`/`WRITE`, `osfd` offset).
#[uprobe]
pub fn nss_enter(ctx: ProbeContext) -> u32 {
    if !selected() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain integer value, copied out.
    let Some(ssl_layer) = (unsafe { NSS_SSL_LAYERS.get(&tgid) }).copied() else {
        // No SSL descriptor imported since the agent started: not TLS here.
        return 0;
    };
    // SAFETY: valid context pointer of this uprobe.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let top = ctx.arg::<u64>(0).unwrap_or(0);
    let Some(fd) = ssl_socket(top, ssl_layer, nss::osfd_offset(cookie)) else {
        return 0;
    };
    let call = TlsCall {
        ssl: top,
        buf: ctx.arg::<u64>(1).unwrap_or(0),
        out: 0,
        fd,
        known_fd: -1,
        sp: 0,
        func: nss::shape(cookie) as u32,
        live: 1,
    };
    begin_call(pid_tgid, call);
    0
}

/// hook: libssl3 `PRFileDesc *SSL_ImportFD(PRFileDesc *model, PRFileDesc
/// *fd)` return: the descriptor returned has the SSL layer on top; its
/// identity is the process's SSL layer identity.
#[uretprobe]
pub fn nss_import_return(ctx: RetProbeContext) -> u32 {
    let top: u64 = ctx.ret::<u64>();
    if top == 0 {
        return 0;
    }
    let Some(layer) = read_user::<PrFileDesc>(top) else {
        return 0;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if NSS_SSL_LAYERS.insert(tgid, layer.identity, 0).is_err() {
        count(DropReason::MapInsert, 1);
    }
    0
}

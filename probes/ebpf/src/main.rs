//! tapwire's eBPF programs (built for `bpfel-unknown-none` by `dataplane/build.rs`).
//!
//! - [`tls`]: uprobes inside C TLS libraries (OpenSSL, GnuTLS), plaintext
//!   of `SSL_read`/`SSL_write` and their equivalents.
//! - [`gotls`]: uprobes inside Go programs, plaintext of `crypto/tls`.
//! - [`nss`]: uprobes on NSPR's I/O functions, plaintext of NSS's SSL layer.
//! - [`sockets`]: syscall tracepoints, plaintext socket data, connection
//!   open/close, and the fd that names a TLS session's socket.
//! - [`process`]: `sched_process_*` tracepoints: selection by pid with
//!   descendants and by executable, exec/exit records.
//! - [`sendfile`]: bytes sent straight from a file, named by file and range.
//! - [`splice`]: bytes moved through a pipe: a file's sent as `sendfile`'s,
//!   others counted and left as a gap.
//! - [`images`]: files mapped executable, so user space probes a TLS library
//!   as soon as a process loads it.
//!
//! Shared pieces: [`maps`] (every map, and what user space sets), [`emit`]
//! (records into the current CPU's ring, drop counters), [`conn`] (fd → TCP
//! socket through kernel pointers), [`select`] (is this process captured?).
#![no_std]
#![no_main]

mod conn;
mod emit;
mod files;
mod gotls;
mod images;
mod maps;
mod nss;
mod process;
mod select;
mod sendfile;
mod sockets;
mod splice;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No code path panics (no indexing, no unwrap); the verifier would reject a
    // reachable infinite loop anyway.
    loop {}
}

/// License section read by the loader: GPL, needed for `bpf_probe_read_user`
/// and friends.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

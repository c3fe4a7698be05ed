//! tapwire's eBPF programs (built for `bpfel-unknown-none` by `dataplane/build.rs`).
#![no_std]
#![no_main]

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

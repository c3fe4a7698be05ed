//! Wire types shared by the eBPF probes and the user-space agent.
//!
//! Every type here is `#[repr(C)]` with fixed-width integers and explicit padding;
//! sizes are pinned by `const` asserts so both sides agree byte for byte.
#![no_std]

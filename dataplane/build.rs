//! Builds the eBPF programs (`probes/ebpf`) for `bpfel-unknown-none` with the
//! nightly toolchain and `bpf-linker`; the object lands in `OUT_DIR` and is
//! embedded by `capture::loader`. `AYA_BUILD_SKIP=1` skips it (clippy/docs on a
//! machine without the BPF toolchain; the loader then fails at start-up).

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../probes/ebpf");
    let root = root.canonicalize().unwrap_or(root);
    let root = root.to_str().expect("utf-8 path");
    let package = aya_build::Package {
        name: "tapwire-ebpf",
        root_dir: root,
        ..Default::default()
    };
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../probes/common").display()
    );
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        panic!("building the eBPF programs failed: {e:#}");
    }
    // With AYA_BUILD_SKIP the object is missing; leave an empty file so
    // `include_bytes!` compiles and the loader reports it at run time.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("tapwire-ebpf");
    if !out.exists() {
        std::fs::write(&out, b"").expect("write placeholder eBPF object");
    }
}

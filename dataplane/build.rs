//! Builds the eBPF programs (`probes/ebpf`) for `bpfel-unknown-none` with the
//! nightly toolchain and `bpf-linker`; the object lands in `OUT_DIR` and is
//! embedded by `capture::loader`. `AYA_BUILD_SKIP=1` skips it (clippy/docs on a
//! machine without the BPF toolchain; the loader then fails at start-up).
//!
//! It also records the git commit the binary is built from, for `tapwire
//! --version`: `TAPWIRE_GIT_COMMIT` from the environment (builds without a `.git`,
//! like the container image's), else `git rev-parse`, else `unknown`.

use std::path::PathBuf;

fn main() {
    git_commit();
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

/// Sets `TAPWIRE_GIT_COMMIT` for the crate and reruns when HEAD moves.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=TAPWIRE_GIT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let commit = match std::env::var("TAPWIRE_GIT_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => {
            // HEAD, the branch it names and packed refs are what moves on a commit or
            // checkout; `--git-path` finds them in a worktree too.
            // A path that does not exist would make every build rerun this script.
            let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
            watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for path in watch {
                if let Some(p) = git(&["rev-parse", "--git-path", &path])
                    && std::path::Path::new(&p).exists()
                {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=TAPWIRE_GIT_COMMIT={commit}");
}

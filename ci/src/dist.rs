//! `cargo xtask dist`: the release tarball and its SHA-256, and the check that
//! the binary in it starts from an empty directory.
//!
//! ```text
//! target/dist/tapwire-VERSION-ARCH-linux.tar.gz          (+ .sha256)
//!   tapwire-VERSION-ARCH-linux/
//!     bin/tapwire
//!     etc/tapwire/qpoint.yaml                 events to stdout, no payloads
//!     lib/systemd/system/tapwire.service
//!     share/tapwire/examples/*.yaml           stdout and S3 examples
//!     share/doc/tapwire/tapwire.txt           `tapwire --help`
//!     share/doc/tapwire/*.md                  README and docs/
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::sh;

/// The built tarball and its checksum file.
pub struct Tarball {
    /// `target/dist/tapwire-….tar.gz`.
    pub path: PathBuf,
    /// `….tar.gz.sha256`, in `sha256sum` format.
    pub sha256: PathBuf,
}

/// Builds the release binary and packs the tarball.
pub fn build(root: &Path) -> Result<Tarball> {
    sh::cargo(&["build", "--release", "--locked", "--package", "tapwire"])?;
    let bin = root.join("target/release/tapwire");
    let version = version_of(&bin)?;
    let arch = std::env::consts::ARCH;
    let name = format!("tapwire-{version}-{arch}-linux");
    let dist = root.join("target/dist");
    let stage = dist.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clear {}", stage.display()))?;
    }
    let files: &[(&Path, &str, u32)] = &[
        (&bin, "bin/tapwire", 0o755),
        (
            Path::new("deploy/config/qpoint.yaml"),
            "etc/tapwire/qpoint.yaml",
            0o644,
        ),
        (
            Path::new("deploy/systemd/tapwire.service"),
            "lib/systemd/system/tapwire.service",
            0o644,
        ),
        (
            Path::new("deploy/config/qpoint-s3.yaml"),
            "share/tapwire/examples/qpoint-s3.yaml",
            0o644,
        ),
        (
            Path::new("dataplane/src/config/default.yaml"),
            "share/tapwire/examples/qpoint-stdout.yaml",
            0o644,
        ),
        (Path::new("README.md"), "share/doc/tapwire/README.md", 0o644),
    ];
    for (from, to, mode) in files {
        install(&root.join(from), &stage.join(to), *mode)?;
    }
    for doc in std::fs::read_dir(root.join("docs")).context("read docs/")? {
        let doc = doc?.path();
        if doc.extension().is_some_and(|e| e == "md") {
            let to = stage
                .join("share/doc/tapwire")
                .join(doc.file_name().context("doc name")?);
            install(&doc, &to, 0o644)?;
        }
    }
    let help = Command::new(&bin)
        .arg("--help")
        .env_clear()
        .output()
        .context("run `tapwire --help`")?;
    ensure!(help.status.success(), "`tapwire --help` failed");
    std::fs::write(stage.join("share/doc/tapwire/tapwire.txt"), &help.stdout)?;

    let tarball = dist.join(format!("{name}.tar.gz"));
    // Sorted names, fixed owner and times: the same inputs give the same bytes.
    sh::run_cmd(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-czf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(&dist)
            .arg(&name)
            .env("GZIP", "-n"),
    )?;
    let sum = sh::output_in(&dist, "sha256sum", &[&format!("{name}.tar.gz")])
        .context("sha256sum of the tarball")?;
    let sha256 = dist.join(format!("{name}.tar.gz.sha256"));
    std::fs::write(&sha256, &sum)?;
    eprintln!("xtask: {}", tarball.display());
    eprint!("xtask: sha256 {sum}");
    Ok(Tarball {
        path: tarball,
        sha256,
    })
}

/// Checks the tarball as a user would: the checksum matches, and the binary,
/// unpacked into an empty directory and run from another with an empty
/// environment, prints its version and accepts the example configs; the unit
/// passes `systemd-analyze verify` where systemd is installed.
pub fn check(tarball: &Tarball) -> Result<()> {
    let dist = tarball.path.parent().context("tarball directory")?;
    sh::run_in(
        dist,
        "sha256sum",
        &["--check", "--strict", &file_name(&tarball.sha256)?],
    )?;
    let unpack = scratch_dir("unpack")?;
    let cwd = scratch_dir("cwd")?;
    sh::run_cmd(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball.path)
            .arg("-C")
            .arg(&unpack),
    )?;
    let name = file_name(&tarball.path)?;
    let top = unpack.join(name.trim_end_matches(".tar.gz"));
    let bin = top.join("bin/tapwire");
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new(&bin)
            .args(args)
            .current_dir(&cwd)
            .env_clear()
            .output()
            .with_context(|| format!("run the packed tapwire {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "packed `tapwire {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = run(&["--version"])?;
    let expected = format!("tapwire {} (commit ", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.starts_with(&expected) && !version.contains("commit unknown"),
        "packed `tapwire --version` printed {version:?}, expected {expected}<commit>)"
    );
    for config in [
        "etc/tapwire/qpoint.yaml",
        "share/tapwire/examples/qpoint-s3.yaml",
        "share/tapwire/examples/qpoint-stdout.yaml",
    ] {
        let path = top.join(config);
        let summary = run(&["check-config", path.to_str().context("utf-8 path")?])?;
        ensure!(
            summary.starts_with(&format!("{}: ok", path.display())),
            "check-config {config}: {summary}"
        );
    }
    let help = std::fs::read_to_string(top.join("share/doc/tapwire/tapwire.txt"))?;
    ensure!(
        help.contains("check-config") && help.contains("Examples:"),
        "the packed help text lacks its subcommands or examples"
    );
    if sh::succeeds("systemd-analyze", &["--version"]) {
        verify_unit(
            &top.join("lib/systemd/system/tapwire.service"),
            &bin,
            &unpack,
        )?;
    } else {
        eprintln!("xtask: systemd-analyze not installed; the unit is not verified");
    }
    std::fs::remove_dir_all(&unpack)?;
    std::fs::remove_dir_all(&cwd)?;
    eprintln!("xtask: the packed binary starts from an empty directory");
    Ok(())
}

/// `systemd-analyze verify` of `unit` with its `ExecStart` pointed at `bin`
/// (the unit names the installed path, which does not exist here). Any message
/// fails: systemd only warns about unknown keys.
pub fn verify_unit(unit: &Path, bin: &Path, scratch: &Path) -> Result<()> {
    let text = std::fs::read_to_string(unit)?;
    ensure!(
        text.contains("ExecStart=/usr/local/bin/tapwire "),
        "{}: ExecStart does not start /usr/local/bin/tapwire",
        unit.display()
    );
    let bin = bin.to_str().context("utf-8 path")?;
    let copy = scratch.join("tapwire.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/tapwire", bin))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("run systemd-analyze verify")?;
    let messages = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify {}: {messages}",
        unit.display()
    );
    eprintln!("xtask: systemd-analyze verify {}: ok", unit.display());
    Ok(())
}

/// `tapwire --version` → `0.1.0`.
fn version_of(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .context("run tapwire --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("unexpected `tapwire --version` output: {text:?}"))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to.parent().context("destination folder")?)?;
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("no file name in {}", path.display()))
}

/// A new empty directory under the system temp dir.
fn scratch_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tapwire-dist-{what}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

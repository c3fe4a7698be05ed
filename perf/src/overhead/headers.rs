//! Kernel headers for bcc. This kernel ships neither `/lib/modules/$(uname -r)/build`
//! nor `/sys/kernel/kheaders.tar.xz`, so bcc cannot compile its programs. Debian's
//! `linux-headers-<arch>` of the distribution kernel is close enough for
//! sslsniff's program (pt_regs, current task); Debian splits it into an arch
//! directory and a `-common` one that bcc expects as one tree, so the harness
//! lays both out as symlinks in one directory and points `BCC_KERNEL_SOURCE` at it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where Debian installs kernel headers.
const SRC: &str = "/usr/src";

/// Builds the merged header tree under `dir`; returns its path.
pub fn merged(dir: &Path) -> Result<PathBuf> {
    if Path::new("/sys/kernel/kheaders.tar.xz").exists() {
        bail!("unexpected: the kernel has kheaders; bcc needs no workaround");
    }
    let mut arch_dirs: Vec<PathBuf> = std::fs::read_dir(SRC)
        .with_context(|| format!("read {SRC}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-headers-") && !n.ends_with("-common"))
                && p.join("include/generated/autoconf.h").exists()
        })
        .collect();
    arch_dirs.sort();
    let arch = arch_dirs
        .pop()
        .context("no kernel headers in /usr/src (Debian's linux-headers package)")?;
    let name = arch
        .file_name()
        .and_then(|n| n.to_str())
        .context("headers dir name")?;
    // linux-headers-6.1.0-56-amd64 → linux-headers-6.1.0-56-common
    let common = name
        .rsplit_once('-')
        .map(|(base, _)| Path::new(SRC).join(format!("{base}-common")))
        .filter(|p| p.exists())
        .context("no matching -common kernel headers")?;
    let out = dir.join("kernel-headers");
    std::fs::create_dir_all(&out)?;
    for src in [&common, &arch] {
        // cp -rs: directories copied, files symlinked; the arch tree last so its
        // generated headers win.
        let status = Command::new("cp")
            .arg("-rsf")
            .arg(format!("{}/.", src.display()))
            .arg(&out)
            .status()
            .context("run cp")?;
        if !status.success() {
            bail!("cp -rs {} failed", src.display());
        }
    }
    Ok(out)
}

//! Running commands, echoing them first so a failing step is obvious in CI logs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `program args` in the current directory; fails on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    run_cmd(Command::new(program).args(args))
}

/// Runs `program args` in `dir`.
pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    run_cmd(Command::new(program).args(args).current_dir(dir))
}

/// Runs cargo (the one that started xtask) with `args`.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(&cargo, args)
}

/// Runs a prepared command.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("xtask: $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// Whether `program args` runs and exits 0 (output discarded).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stdout of `program args`, if it ran and exited 0.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stdout of `program args` run in `dir`, if it ran and exited 0.
pub fn output_in(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

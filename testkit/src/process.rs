//! Child processes that never outlive the test that started them.
//!
//! [`guard`] puts a command in its own process group and asks the kernel to
//! SIGKILL it when the thread that spawned it exits (`PR_SET_PDEATHSIG`), so a
//! test that panics, times out or is killed leaves nothing behind; [`Bg`] kills
//! the whole group (a server's workers too) when it drops.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes `cmd` a guarded child: its own process group, killed by the kernel
/// when the spawning thread ends.
pub fn guard(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit-free control flow).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    cmd
}

/// Sends `signal` to the process group led by `pid` (a [`guard`]ed child).
pub fn signal_group(pid: u32, signal: i32) {
    // SAFETY: plain kill(2) of a process group we started; ESRCH is harmless.
    unsafe { libc::kill(-(pid as i32), signal) };
}

/// A background process (and its process group) killed on drop.
pub struct Bg(pub Child);

impl Bg {
    /// Spawns `cmd` guarded (see [`guard`]).
    pub fn spawn(cmd: &mut Command) -> Bg {
        let child = guard(cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        Bg(child)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        signal_group(self.0.id(), libc::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process started as `sh` waiting for a go-line on stdin, then `exec`ing
/// the real command: its pid is known (and can be selected) before the command
/// runs.
pub struct Gated {
    pub child: Child,
}

impl Gated {
    /// Prepares `program args…` behind a gate. stdout/stderr are piped.
    pub fn new(program: &str, args: &[&str]) -> Gated {
        // `read` is a shell builtin: the gate forks nothing, so the selected pid
        // is the command's own once it runs.
        let mut script = String::from("read _gate; exec");
        for a in std::iter::once(&program).chain(args) {
            script.push_str(" '");
            script.push_str(&a.replace('\'', "'\\''"));
            script.push('\'');
        }
        let child = guard(
            Command::new("sh")
                .arg("-c")
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("spawn gated sh");
        Gated { child }
    }

    /// Runs `program args…` at once with its stdin piped: for programs that
    /// read their work from stdin (`curl -K -`).
    pub fn stdin(program: &str, args: &[&str]) -> Gated {
        let child = guard(
            Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("spawn stdin-gated program");
        Gated { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `input` to the program's stdin and closes it.
    pub fn go_with(&mut self, input: &[u8]) {
        let mut stdin = self.child.stdin.take().expect("gate stdin");
        stdin.write_all(input).expect("write to the gate");
    }

    /// Lets the command run.
    pub fn go(&mut self) {
        self.go_with(b"go\n");
    }

    /// Runs to completion; returns stdout, panics on failure.
    pub fn finish(mut self, timeout: Duration) -> Vec<u8> {
        let start = Instant::now();
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                break;
            }
            if start.elapsed() > timeout {
                signal_group(self.child.id(), libc::SIGKILL);
                let _ = self.child.kill();
                panic!("gated command did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = take_output(&mut self.child);
        assert!(
            out.status.success(),
            "gated command failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output of an exited child whose pipes are still attached.
fn take_output(child: &mut Child) -> std::process::Output {
    use std::io::Read as _;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    let status = child.wait().expect("wait");
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd` to completion (killed after `timeout`); panics on failure and
/// returns its stdout.
pub fn run_ok(mut cmd: Command, timeout: Duration) -> Vec<u8> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    finish(child, timeout)
}

/// Waits for `child` to finish (killed after `timeout`); panics on failure
/// and returns its stdout.
pub fn finish(mut child: Child, timeout: Duration) -> Vec<u8> {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not finish within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "child failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A copy of the program `name` (from `PATH`) in `dir`: a new inode that no
/// other process on the host runs, so `--exe` of it selects only the test's runs.
pub fn private_copy(name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let copy = dir.join(name);
    std::fs::copy(crate::which(name), &copy).unwrap_or_else(|e| panic!("copy {name}: {e}"));
    copy
}

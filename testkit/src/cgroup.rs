//! Fresh cgroups: programs join one between fork and exec, as a container
//! runtime or `systemd-run` starts them, so a test can select them with
//! `--cgroup` without knowing their pids in advance or pausing them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::path_str;

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` (hybrid) or `/sys/fs/cgroup`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, path, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(path))
    })
}

/// A fresh cgroup. On drop every process still in it is killed
/// (`cgroup.kill`) and the cgroup removed.
pub struct Cgroup {
    /// Its directory.
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates `tapwire-test-<pid>-<tag>` under the cgroup2 root; panics if
    /// there is none (CI runs on cgroup v2).
    pub fn new(tag: &str) -> Cgroup {
        let root = cgroup2_root().expect("a cgroup2 hierarchy");
        let path = root.join(format!("tapwire-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        Cgroup { path }
    }

    /// `program`, guarded (see [`crate::guard`]), set up to join this cgroup
    /// between fork and exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let procs =
            std::ffi::CString::new(path_str(&self.path.join("cgroup.procs"))).expect("cgroup path");
        let mut cmd = Command::new(program);
        crate::guard(&mut cmd);
        // SAFETY: the closure only makes async-signal-safe calls (open, write,
        // close) on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        cmd
    }

    /// Starts `program args…` in this cgroup at once, stdout and stderr
    /// piped: a client started the way a user starts it.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Child {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let start = Instant::now();
        while std::fs::read_to_string(self.path.join("cgroup.procs"))
            .is_ok_and(|p| !p.trim().is_empty())
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

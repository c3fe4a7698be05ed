//! The privileges loading eBPF programs needs, checked before anything is attempted.

/// `CAP_PERFMON`: perf events, which uprobes and tracepoints attach through.
const CAP_PERFMON: u32 = 38;
/// `CAP_BPF`: loading programs and creating maps.
const CAP_BPF: u32 = 39;

/// Missing privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Not root and without the needed capabilities.
    #[error(
        "not enough privileges to load eBPF programs: run as root or grant {missing} \
         (uid {uid}, effective capabilities {cap_eff:#x})"
    )]
    Missing {
        /// The capabilities that are missing, e.g. `CAP_BPF and CAP_PERFMON`.
        missing: String,
        /// The effective uid.
        uid: u32,
        /// The effective capability set.
        cap_eff: u64,
    },
    /// `/proc/self/status` could not be read.
    #[error("cannot read `/proc/self/status` to check capabilities")]
    Status(#[source] std::io::Error),
}

/// Checks that this process may load and attach eBPF programs.
pub fn check() -> Result<(), PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(PrivilegeError::Status)?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(bit, _)| cap_eff & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    Err(PrivilegeError::Missing {
        missing: missing.join(" and "),
        uid,
        cap_eff,
    })
}

//! The kernel floor: before loading anything, try each kernel feature the
//! probes use, and name every one that is missing with the Linux version that
//! brought it, instead of failing later in the verifier with no explanation.
//!
//! Each check asks the kernel itself (loading a minimal program or creating a
//! minimal map, as libbpf's probes do) rather than comparing version numbers:
//! distributions backport features, and a kernel may be built without some.

use std::path::Path;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// The oldest Linux release with every feature below (`bpf_loop`, 5.17).
pub const MIN_KERNEL: &str = "5.17";

/// A kernel feature the probes need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// What it is, as a user would search for it.
    pub name: &'static str,
    /// The Linux release that brought it.
    pub since: &'static str,
}

/// Features missing from the running kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this kernel lacks {}; tapwire needs Linux {MIN_KERNEL} or later with BTF (CONFIG_DEBUG_INFO_BTF)",
    list(.0)
)]
pub struct MissingFeatures(pub Vec<Feature>);

fn list(missing: &[Feature]) -> String {
    missing
        .iter()
        .map(|f| format!("{} (Linux {})", f.name, f.since))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every feature the probes use, each with the check that tries it.
fn checks() -> Vec<(Feature, bool)> {
    let helper = |prog, h| matches!(is_helper_supported(prog, h), Ok(true));
    let map = |t| matches!(is_map_supported(t), Ok(true));
    let feature = |name, since| Feature { name, since };
    vec![
        (
            feature("BPF tracepoint programs", "4.7"),
            matches!(is_program_supported(ProgramType::TracePoint), Ok(true)),
        ),
        (
            feature("uprobe perf events", "4.17"),
            Path::new("/sys/bus/event_source/devices/uprobe/type").exists(),
        ),
        (
            feature("kernel BTF at /sys/kernel/btf/vmlinux", "5.4"),
            Path::new("/sys/kernel/btf/vmlinux").exists(),
        ),
        (feature("LRU hash maps", "4.10"), map(MapType::LruHash)),
        (feature("array-of-maps", "4.12"), map(MapType::ArrayOfMaps)),
        (feature("BPF ring buffers", "5.8"), map(MapType::RingBuf)),
        (
            feature("bpf_probe_read_user/kernel helpers", "5.5"),
            helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_probe_read_user),
        ),
        (
            feature("bpf_ringbuf_query helper", "5.8"),
            helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_ringbuf_query),
        ),
        (
            feature("uprobe attach cookies (bpf_get_attach_cookie)", "5.15"),
            helper(ProgramType::KProbe, BpfHelper::BPF_FUNC_get_attach_cookie),
        ),
        (
            feature("BPF links for perf events", "5.15"),
            aya::features().bpf_perf_link(),
        ),
        (
            feature("bpf_loop helper", "5.17"),
            helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop),
        ),
    ]
}

/// Tries every feature; `Err` names each missing one.
pub fn check() -> Result<(), MissingFeatures> {
    let missing: Vec<Feature> = checks()
        .into_iter()
        .filter_map(|(f, ok)| (!ok).then_some(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingFeatures(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_what_is_missing_and_the_floor() {
        let e = MissingFeatures(vec![
            Feature {
                name: "bpf_loop helper",
                since: "5.17",
            },
            Feature {
                name: "uprobe attach cookies (bpf_get_attach_cookie)",
                since: "5.15",
            },
        ]);
        assert_eq!(
            e.to_string(),
            "this kernel lacks bpf_loop helper (Linux 5.17), uprobe attach cookies \
             (bpf_get_attach_cookie) (Linux 5.15); tapwire needs Linux 5.17 or later with BTF \
             (CONFIG_DEBUG_INFO_BTF)"
        );
    }

    #[test]
    fn no_feature_is_newer_than_the_stated_floor() {
        let version = |v: &str| -> (u32, u32) {
            let (a, b) = v.split_once('.').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let floor = version(MIN_KERNEL);
        for (f, _) in checks() {
            assert!(
                version(f.since) <= floor,
                "{f:?} is newer than {MIN_KERNEL}"
            );
        }
    }

    /// Needs root (the checks load programs): run by the capture tests' CI.
    #[test]
    fn this_kernel_has_everything() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to load test programs");
            return;
        }
        assert_eq!(check(), Ok(()));
    }
}

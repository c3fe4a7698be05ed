//! Is the current process captured? Never the agent itself (`CONFIG.agent_tgid`).
//! Otherwise, without a selection, everything is; with one, a process is when its tgid is in `SELECTED` (by pid with descendants,
//! or by executable, maintained by [`crate::process`]) or its cgroup is in
//! `SELECTED_CGROUPS` (looked at only when the selection names cgroups).
//! Checked first in every program so unselected processes pay one map
//! lookup, two with a cgroup selection.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid};
use tapwire_common::config::{FLAG_SELECTION, FLAG_SELECTION_CGROUPS};

use crate::maps::{CONFIG, FILTERED, SELECTED, SELECTED_CGROUPS};

#[inline(always)]
pub fn selection_on() -> bool {
    CONFIG.get(0).is_some_and(|c| c.flags & FLAG_SELECTION != 0)
}

/// True if the current process is the agent.
#[inline(always)]
pub fn is_agent() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    CONFIG.get(0).is_some_and(|c| c.agent_tgid == tgid)
}

/// True if the current process is captured.
#[inline(always)]
pub fn selected() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    if cfg.agent_tgid == tgid {
        return false;
    }
    if cfg.flags & FLAG_SELECTION == 0 {
        return true;
    }
    // SAFETY: values are plain integers; we only test presence.
    if unsafe { SELECTED.get(tgid) }.is_some() {
        return true;
    }
    if cfg.flags & FLAG_SELECTION_CGROUPS == 0 {
        return false;
    }
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: as above.
    unsafe { SELECTED_CGROUPS.get(cgroup) }.is_some()
}

/// The `config::skip` bits a `tap.filters` entry gives the current process
/// (0: none).
#[inline(always)]
pub fn filter_skip() -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain integer value.
    unsafe { FILTERED.get(tgid) }.copied().unwrap_or(0)
}

/// True if the TLS probes capture the current process: it is captured and
/// no filter skips its TLS plaintext (`only: [tls]`; its TLS connections are
/// then seen as ciphertext only, which is not emitted) or the whole process
/// (whose connections are not tracked: the probes would find nothing to do).
#[inline(always)]
pub fn tls_selected() -> bool {
    use tapwire_common::config::skip;
    selected() && filter_skip() & (skip::TLS | skip::PROCESS) == 0
}

//! Which container and Kubernetes pod a process runs in, read from its cgroup v2
//! path, and the node's name. Looked up once per cgroup by the shard delivering
//! the first event of that cgroup (after parsing) and cached by cgroup id.
//!
//! Recognised layouts (`ID` is 64 hex digits, `UID` a pod UID):
//!
//! | runtime | cgroup v2 path |
//! | --- | --- |
//! | Docker | `/system.slice/docker-ID.scope`, `/docker/ID` |
//! | containerd (Kubernetes, systemd driver) | `/kubepods.slice/kubepods-QOS.slice/kubepods-QOS-podUID.slice/cri-containerd-ID.scope` |
//! | containerd (Kubernetes, cgroupfs driver) | `/kubepods/QOS/podUID/ID` |
//! | CRI-O | `…/crio-ID.scope`, `…/crio/ID` |
//! | Podman | `…/libpod-ID.scope`, `/libpod_parent/libpod-ID` |
//! | nerdctl | `…/nerdctl-ID.scope` |
//!
//! QoS is `guaranteed` for pods directly under `kubepods` (no QoS level), else
//! `burstable` or `besteffort`. In the systemd driver's names the pod UID's
//! dashes are written as underscores; they are restored. Container names and
//! labels would need the container runtime's CRI socket, which is not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Entries the cache holds at most; it is cleared past it (cgroups come and go,
/// so entries must not live forever anyway).
const MAX_CACHED_CGROUPS: usize = 4096;

/// Where a process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// The process's cgroup v2 path (`/kubepods.slice/…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container id (64 hex digits) if the cgroup is a container's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman` or `nerdctl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<&'static str>,
    /// The Kubernetes pod UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's QoS class: `guaranteed`, `burstable` or `besteffort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_qos: Option<&'static str>,
}

impl Attribution {
    /// Each field's event name and value, in the order events write them
    /// (absent ones are left out of events).
    pub fn fields(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("cgroup", self.cgroup.as_deref()),
            ("container_id", self.container_id.as_deref()),
            ("container_runtime", self.container_runtime),
            ("pod_uid", self.pod_uid.as_deref()),
            ("pod_qos", self.pod_qos),
        ]
    }
}

/// Container runtimes by the prefix of their systemd scope or directory.
const RUNTIME_PREFIXES: [(&str, &str); 6] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
    ("nerdctl-", "nerdctl"),
    ("containerd-", "containerd"),
];

/// Reads what `path` (a cgroup v2 path) says about containers and pods.
pub fn from_cgroup_path(path: &str) -> Attribution {
    let mut out = Attribution {
        cgroup: Some(path.to_owned()),
        ..Attribution::default()
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let in_kubepods = parts
        .first()
        .is_some_and(|p| *p == "kubepods" || *p == "kubepods.slice");
    for (i, part) in parts.iter().enumerate() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        let name = name.strip_suffix(".slice").unwrap_or(name);
        // Container: a runtime's scope or a bare 64-hex directory.
        for (prefix, runtime) in RUNTIME_PREFIXES {
            if let Some(id) = name.strip_prefix(prefix)
                && is_container_id(id)
            {
                out.container_id = Some(id.to_owned());
                out.container_runtime = Some(runtime);
            }
        }
        if is_container_id(name) {
            out.container_id = Some(name.to_owned());
            out.container_runtime = match parts.get(i.wrapping_sub(1)).copied() {
                Some("docker") => Some("docker"),
                Some("crio") => Some("cri-o"),
                Some("libpod_parent") => Some("podman"),
                _ if in_kubepods => Some("containerd"),
                _ => None,
            };
        }
        if !in_kubepods {
            continue;
        }
        // Pod: `podUID` (cgroupfs) or `kubepods[-QOS]-podUID` (systemd).
        let pod = name
            .rsplit_once("-pod")
            .map(|(_, uid)| uid)
            .or_else(|| name.strip_prefix("pod"));
        if let Some(uid) = pod {
            let uid = uid.replace('_', "-");
            if is_pod_uid(&uid) {
                out.pod_uid = Some(uid);
                out.pod_qos = Some(qos_of(&parts[..i]));
            }
        }
    }
    out
}

/// The QoS class from the path components above the pod's.
fn qos_of(above: &[&str]) -> &'static str {
    for part in above {
        let name = part.strip_suffix(".slice").unwrap_or(part);
        if name == "burstable" || name == "kubepods-burstable" {
            return "burstable";
        }
        if name == "besteffort" || name == "kubepods-besteffort" {
            return "besteffort";
        }
    }
    "guaranteed"
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `8-4-4-4-12` hex digits.
fn is_pod_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The cgroup v2 path of `pid` (the `0::` line of `/proc/PID/cgroup`).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// How long a cgroup whose process was already gone is not asked about again.
const MISS_RETRY: Duration = Duration::from_secs(1);

/// Attributions by cgroup id, resolved through the first pid seen in each.
#[derive(Default)]
pub struct AttributionCache {
    by_cgroup: HashMap<u64, Arc<Attribution>, foldhash::fast::RandomState>,
    /// Cgroups whose process had exited when asked, and when: asked again
    /// only after [`MISS_RETRY`], so a burst of late events costs one read.
    misses: HashMap<u64, Instant, foldhash::fast::RandomState>,
    unknown: Arc<Attribution>,
}

impl AttributionCache {
    /// Where `pid`, in cgroup `cgroup_id`, runs. Reads `/proc` only the first
    /// time a cgroup id is seen.
    pub fn get(&mut self, cgroup_id: u64, pid: u32) -> Arc<Attribution> {
        if let Some(found) = self.by_cgroup.get(&cgroup_id) {
            return Arc::clone(found);
        }
        if let Some(at) = self.misses.get(&cgroup_id)
            && at.elapsed() < MISS_RETRY
        {
            return Arc::clone(&self.unknown);
        }
        if self.by_cgroup.len() >= MAX_CACHED_CGROUPS {
            self.by_cgroup.clear();
        }
        let Some(path) = cgroup_of(pid) else {
            // A process that is already gone says nothing; another of its
            // cgroup may, a little later.
            if self.misses.len() >= MAX_CACHED_CGROUPS {
                self.misses.clear();
            }
            self.misses.insert(cgroup_id, Instant::now());
            return Arc::clone(&self.unknown);
        };
        self.misses.remove(&cgroup_id);
        let attribution = Arc::new(from_cgroup_path(&path));
        self.by_cgroup.insert(cgroup_id, Arc::clone(&attribution));
        attribution
    }
}

/// The node's name for events: `TAPWIRE_NODE_NAME` (the manifest and chart set
/// it from `spec.nodeName`, since a pod's own host name is the pod's), else the
/// host name.
pub fn node_name() -> String {
    if let Ok(name) = std::env::var(ENV_NODE_NAME)
        && !name.is_empty()
    {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Where an event happened: the node and the process's container and pod,
/// written into every event after `cgroup_id`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Origin<'a> {
    /// The node's name ([`node_name`]).
    pub host: &'a str,
    /// The process's cgroup, container and pod.
    #[serde(flatten)]
    pub place: &'a Attribution,
}

/// The environment variable naming the node.
pub const ENV_NODE_NAME: &str = "TAPWIRE_NODE_NAME";

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c2b1e8a9d7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c";
    const UID: &str = "0f5a6b2c-1d3e-4f50-8a9b-0c1d2e3f4a5b";

    #[test]
    fn kubernetes_systemd_driver_paths() {
        let uid = UID.replace('-', "_");
        let a = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(a.container_id.as_deref(), Some(ID));
        assert_eq!(a.container_runtime, Some("containerd"));
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
        assert_eq!(a.pod_qos, Some("burstable"));
        let a = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-pod{uid}.slice/crio-{ID}.scope"
        ));
        assert_eq!(a.container_runtime, Some("cri-o"));
        assert_eq!(a.pod_qos, Some("guaranteed"));
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn a_cgroup_whose_process_is_gone_is_asked_again_only_after_a_while() {
        let mut cache = AttributionCache::default();
        let gone = u32::MAX - 3;
        assert_eq!(cache.get(77, gone).cgroup, None);
        assert!(cache.misses.contains_key(&77));
        // Within the retry interval even a live process is not asked.
        assert_eq!(cache.get(77, std::process::id()).cgroup, None);
        cache
            .misses
            .insert(77, Instant::now().checked_sub(MISS_RETRY).unwrap());
        assert!(cache.get(77, std::process::id()).cgroup.is_some());
        assert!(cache.misses.is_empty());
    }

    #[test]
    fn kubernetes_cgroupfs_driver_paths() {
        let a = from_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(a.container_id.as_deref(), Some(ID));
        assert_eq!(a.container_runtime, Some("containerd"));
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
        assert_eq!(a.pod_qos, Some("besteffort"));
    }

    #[test]
    fn plain_container_and_host_paths() {
        let a = from_cgroup_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(
            (a.container_id.as_deref(), a.container_runtime, a.pod_uid),
            (Some(ID), Some("docker"), None)
        );
        let a = from_cgroup_path(&format!("/docker/{ID}"));
        assert_eq!(a.container_runtime, Some("docker"));
        let a = from_cgroup_path(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(a.container_runtime, Some("podman"));
        let a = from_cgroup_path("/user.slice/user-1000.slice/session-2.scope");
        assert_eq!(a.container_id, None);
        assert_eq!(a.pod_uid, None);
        assert_eq!(
            a.cgroup.as_deref(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        // Not a pod outside kubepods, not a container without 64 hex digits.
        let a = from_cgroup_path(&format!("/system.slice/pod{UID}/docker-abc.scope"));
        assert_eq!((a.pod_uid, a.container_id), (None, None));
    }
}

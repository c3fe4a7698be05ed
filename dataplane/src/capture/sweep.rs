//! Kernel map entries of processes that are gone, reclaimed.
//!
//! The probes key connection and call state by process: `tgid << 32 | fd`
//! (`CONNS`, `NOT_TCP`, `FD_PATHS`), `pid_tgid` (calls in flight), or a struct
//! that starts with the tgid (`SSL_FDS`, `GO_CALLS`). A process that exits
//! without closing its sockets leaves its entries behind: nothing in the kernel
//! removes them, and LRU eviction would only reclaim them by evicting live
//! connections along with them once a map is full. The capture control thread
//! sweeps these maps every few seconds and removes the entries whose process no
//! longer exists, counted per map; it also reports how many entries each map
//! holds, so an operator sees the maps return to their idle size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::{
    Ebpf, Pod,
    maps::{HashMap as BpfHashMap, MapData},
};

/// How a map's key names its process.
#[derive(Clone, Copy)]
enum Key {
    /// A `u64` with the tgid in its high 32 bits.
    TgidHigh,
    /// A struct of two `u64`, the first the tgid.
    TgidFirst,
}

/// The swept maps: name, key shape and value size in bytes (the probes'
/// layouts in `probes/ebpf/src/maps.rs`).
const MAPS: [(&str, Key, usize); 11] = [
    ("CONNS", Key::TgidHigh, 32),
    ("NOT_TCP", Key::TgidHigh, 1),
    ("FD_PATHS", Key::TgidHigh, tapwire_common::FILENAME_LEN),
    ("SYSCALLS", Key::TgidHigh, 32),
    ("TLS_CALLS", Key::TgidHigh, 40),
    ("LAST_TLS_READ", Key::TgidHigh, 8),
    ("MMAP_CALLS", Key::TgidHigh, 56),
    ("SENDFILES", Key::TgidHigh, 360),
    ("OPENS", Key::TgidHigh, 8),
    ("SSL_FDS", Key::TgidFirst, 8),
    ("GO_CALLS", Key::TgidFirst, 16),
];

/// Number of swept maps.
pub const SWEPT_MAPS: usize = MAPS.len();

/// Per map: entries reclaimed so far, and entries held at the last sweep.
#[derive(Debug, Default)]
pub struct SweepCounters {
    reclaimed: [AtomicU64; SWEPT_MAPS],
    entries: [AtomicU64; SWEPT_MAPS],
    sweeps: AtomicU64,
}

/// One map's counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MapCount {
    /// Entries of exited processes removed so far.
    pub reclaimed: u64,
    /// Entries held at the last sweep (after it).
    pub entries: u64,
}

impl SweepCounters {
    /// Each swept map's counters, by map name in lower case.
    pub fn read(&self) -> Vec<(String, MapCount)> {
        MAPS.iter()
            .enumerate()
            .map(|(i, (name, ..))| {
                (
                    name.to_ascii_lowercase(),
                    MapCount {
                        // Relaxed: plain counters, read for reporting.
                        reclaimed: self.reclaimed[i].load(Ordering::Relaxed),
                        entries: self.entries[i].load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// Sweeps done.
    pub fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }
}

/// Removes the entries of processes that no longer exist from every swept
/// map, and records what each map holds.
pub fn sweep(ebpf: &mut Ebpf, counters: &SweepCounters) {
    let mut alive = Alive::default();
    for (i, &(name, key, value)) in MAPS.iter().enumerate() {
        let result = match (key, value) {
            (Key::TgidHigh, 1) => sweep_map::<u64, 1>(ebpf, name, &mut alive),
            (Key::TgidHigh, 8) => sweep_map::<u64, 8>(ebpf, name, &mut alive),
            (Key::TgidHigh, 32) => sweep_map::<u64, 32>(ebpf, name, &mut alive),
            (Key::TgidHigh, 40) => sweep_map::<u64, 40>(ebpf, name, &mut alive),
            (Key::TgidHigh, 56) => sweep_map::<u64, 56>(ebpf, name, &mut alive),
            (Key::TgidHigh, 360) => sweep_map::<u64, 360>(ebpf, name, &mut alive),
            (Key::TgidHigh, tapwire_common::FILENAME_LEN) => {
                sweep_map::<u64, { tapwire_common::FILENAME_LEN }>(ebpf, name, &mut alive)
            }
            (Key::TgidFirst, 8) => sweep_map::<[u64; 2], 8>(ebpf, name, &mut alive),
            (Key::TgidFirst, 16) => sweep_map::<[u64; 2], 16>(ebpf, name, &mut alive),
            _ => None,
        };
        match result {
            Some((reclaimed, entries)) => {
                counters.reclaimed[i].fetch_add(reclaimed, Ordering::Relaxed);
                counters.entries[i].store(entries, Ordering::Relaxed);
            }
            None => tracing::debug!(map = name, "kernel map not swept"),
        }
    }
    counters.sweeps.fetch_add(1, Ordering::Relaxed);
}

/// The tgid a key names.
trait Tgid: Pod {
    fn tgid(&self) -> u32;
}

impl Tgid for u64 {
    fn tgid(&self) -> u32 {
        (self >> 32) as u32
    }
}

impl Tgid for [u64; 2] {
    fn tgid(&self) -> u32 {
        self[0] as u32
    }
}

/// Sweeps one map: (entries removed, entries left); `None` if the map is
/// missing or its layout is not the one expected.
fn sweep_map<K: Tgid, const V: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    alive: &mut Alive,
) -> Option<(u64, u64)> {
    let mut map: BpfHashMap<&mut MapData, K, [u8; V]> =
        BpfHashMap::try_from(ebpf.map_mut(name)?).ok()?;
    // Keys first, then removals: removing while walking with `get_next_key`
    // would restart the walk.
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    let mut removed = 0;
    for key in &keys {
        if !alive.is_alive(key.tgid()) && map.remove(key).is_ok() {
            removed += 1;
        }
    }
    Some((removed, keys.len() as u64 - removed))
}

/// Which processes exist, asked once per process per sweep.
#[derive(Default)]
struct Alive(HashMap<u32, bool>);

impl Alive {
    fn is_alive(&mut self, tgid: u32) -> bool {
        *self.0.entry(tgid).or_insert_with(|| {
            // A process that has exited and been reaped has no `/proc` entry;
            // a zombie still has one and keeps its entries until it is reaped.
            std::path::Path::new(&format!("/proc/{tgid}")).exists()
        })
    }
}

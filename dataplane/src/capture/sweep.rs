//! Kernel map entries of processes that are gone, reclaimed.
//!
//! The probes key connection and call state by process: `tgid << 32 | fd`
//! (`CONNS`, `NOT_TCP`, `FD_PATHS`), `pid_tgid` (calls in flight), or a struct
//! that starts with the tgid (`SSL_FDS`, `GO_CALLS`). A process that exits
//! without closing its sockets leaves its entries behind: nothing in the kernel
//! removes them, and LRU eviction would only reclaim them by evicting live
//! connections along with them once a map is full. A thread of its own
//! sweeps these maps every few seconds and removes the entries whose process no
//! longer exists, counted per map; it also reports how many entries each map
//! holds, so an operator sees the maps return to their idle size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::{
    Ebpf, Pod,
    maps::{HashMap as BpfHashMap, Map, MapData},
};

/// How a map's key names its process.
#[derive(Clone, Copy)]
enum Key {
    /// A `u64` with the tgid in its high 32 bits.
    TgidHigh,
    /// A struct of two `u64`, the first the tgid.
    TgidFirst,
}

/// The swept maps and their key shapes (`probes/ebpf/src/maps.rs`). Value
/// sizes are read from each map at run time (see `sweep_sized!` for the sizes
/// handled).
const MAPS: [(&str, Key); 11] = [
    ("CONNS", Key::TgidHigh),
    ("NOT_TCP", Key::TgidHigh),
    ("FD_PATHS", Key::TgidHigh),
    ("SYSCALLS", Key::TgidHigh),
    ("TLS_CALLS", Key::TgidHigh),
    ("LAST_TLS_READ", Key::TgidHigh),
    ("MMAP_CALLS", Key::TgidHigh),
    ("SENDFILES", Key::TgidHigh),
    ("OPENS", Key::TgidHigh),
    ("SSL_FDS", Key::TgidFirst),
    ("GO_CALLS", Key::TgidFirst),
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

/// Calls `sweep_map::<$key, N>` for the map's value size `N`, one of the
/// sizes listed (values are read as opaque bytes of exactly their size).
macro_rules! sweep_sized {
    ($size:expr, $key:ty, $map:expr, $alive:expr, [$($n:literal),*]) => {
        match $size {
            $($n => sweep_map::<$key, $n>($map, $alive),)*
            _ => None,
        }
    };
}

/// The swept maps, taken out of the loaded probes so that sweeping runs on a
/// thread of its own: a sweep of maps holding many entries costs a syscall
/// per entry, and must not delay the probing of a newly seen TLS file on the
/// capture control thread. The programs keep their own references to the
/// maps; only this handle moves.
pub struct Sweeper {
    /// Index in [`MAPS`], name, key shape, and the map.
    maps: Vec<(usize, &'static str, Key, Map)>,
}

impl Sweeper {
    /// Takes the swept maps out of `ebpf` (a missing map is logged at debug
    /// level and left out; the lifecycle test catches it).
    pub fn take(ebpf: &mut Ebpf) -> Self {
        let maps = MAPS
            .iter()
            .enumerate()
            .filter_map(|(i, &(name, key))| {
                let map = ebpf.take_map(name);
                if map.is_none() {
                    tracing::debug!(map = name, "kernel map missing: not swept");
                }
                Some((i, name, key, map?))
            })
            .collect();
        Self { maps }
    }

    /// Removes the entries of processes that no longer exist from every
    /// swept map, and records what each map holds. A map whose value size is
    /// not among those listed is logged at debug level and keeps its
    /// counters.
    pub fn sweep(&mut self, counters: &SweepCounters) {
        let mut alive = Alive::default();
        for (i, name, key, map) in &mut self.maps {
            let size = value_size(map).unwrap_or(0);
            let result = match key {
                Key::TgidHigh => sweep_sized!(
                    size,
                    u64,
                    map,
                    &mut alive,
                    [1, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 128, 256, 360]
                ),
                Key::TgidFirst => sweep_sized!(
                    size,
                    [u64; 2],
                    map,
                    &mut alive,
                    [1, 8, 16, 24, 32, 40, 48, 56, 64]
                ),
            };
            match result {
                Some((reclaimed, entries)) => {
                    counters.reclaimed[*i].fetch_add(reclaimed, Ordering::Relaxed);
                    counters.entries[*i].store(entries, Ordering::Relaxed);
                }
                None => tracing::debug!(map = *name, value_size = size, "kernel map not swept"),
            }
        }
        counters.sweeps.fetch_add(1, Ordering::Relaxed);
    }
}

/// The value size of hash map `map`, from the kernel.
fn value_size(map: &Map) -> Option<usize> {
    match map {
        Map::HashMap(data) | Map::LruHashMap(data) => Some(data.info().ok()?.value_size() as usize),
        _ => None,
    }
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

/// Sweeps one map: (entries removed, entries left); `None` if its layout is
/// not the one expected.
fn sweep_map<K: Tgid, const V: usize>(map: &mut Map, alive: &mut Alive) -> Option<(u64, u64)> {
    let mut map: BpfHashMap<&mut MapData, K, [u8; V]> = BpfHashMap::try_from(map).ok()?;
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

//! Gathers the agent's counters into a [`Snapshot`] (on the main thread, once
//! a second).

use std::sync::atomic::Ordering;

use tapwire_common::DropReason;
use tapwire_common::config::Exclusion;

use super::metrics::{ReaderSnapshot, Snapshot, StoreSnapshot, numbers};
use crate::capture::{Capture, LibraryKind};
use crate::pipeline::PipelineStats;
use tapwire_store::Stores;

/// Reload outcomes so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reloads {
    /// Applied.
    pub ok: u64,
    /// Refused.
    pub failed: u64,
}

/// Reads every counter: the kernel's drop counters, the readers', the
/// pipeline's (as last published by its threads) and the stores'.
pub fn gather(
    capture: &Capture,
    pipeline: &PipelineStats,
    stores: &Stores,
    reloads: Reloads,
) -> Snapshot {
    let drops = capture.drops();
    let kernel_drops = DropReason::ALL
        .iter()
        .zip(drops.iter())
        .map(|(reason, n)| (reason.name(), *n))
        .collect();
    let kernel_excluded = Exclusion::ALL
        .iter()
        .zip(capture.excluded().iter())
        .map(|(reason, n)| (reason.name(), *n))
        .collect();
    let kernel_maps = capture
        .kernel_maps()
        .into_iter()
        .map(|(map, c)| (map, c.reclaimed, c.entries))
        .collect();
    let readers = capture
        .reader_counters()
        .into_iter()
        .enumerate()
        .map(|(i, (cpu, c))| ReaderSnapshot {
            cpu,
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            router: pipeline.readers.get(i).map(numbers).unwrap_or_default(),
        })
        .collect();
    let shards = pipeline.shards.iter().map(numbers).collect();
    let mut all = Vec::new();
    for store in &stores.events {
        all.push(StoreSnapshot {
            kind: "event",
            id: store.id().to_owned(),
            counters: numbers(&store.stats()),
            gauges: Vec::new(),
        });
    }
    for store in &stores.objects {
        all.push(StoreSnapshot {
            kind: "object",
            id: store.id().to_owned(),
            counters: numbers(&store.stats()),
            gauges: store
                .levels()
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
        });
    }
    let probed = capture.probed();
    let tls_probed = LibraryKind::ALL
        .iter()
        .map(|&kind| (kind.name(), probed.files(kind), probed.points(kind)))
        .collect();
    Snapshot {
        tls_probed,
        tls_placement_fallbacks: capture.placement_fallbacks(),
        tls_uprobe_sessions: capture.uprobe_sessions(),
        kernel_drops,
        kernel_excluded,
        kernel_maps,
        readers,
        shards,
        stores: all,
        budget_used: pipeline.budget_used as u64,
        budget_limit: pipeline.budget_limit as u64,
        filtered: capture.filtered(),
        reloads_ok: reloads.ok,
        reloads_failed: reloads.failed,
    }
}

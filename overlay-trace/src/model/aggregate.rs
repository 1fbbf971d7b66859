//! Aggregation: pure code, no I/O. Events go in; per-mount histograms, counters and the N slowest
//! copy-ups come out.
//!
//! Memory is bounded whatever the run's length:
//! - Every mount is kept in detail while it lives (at most `LIVE_MOUNTS_MAX`; beyond that the
//!   least recently active one is folded, see below) and for a while after it is gone (unmounted,
//!   or its device number taken by a newer mount): the `GONE_DETAIL_MAX` most recent gone mounts.
//! - A mount that leaves the detail is *folded* into the summary row (group) of its container, or
//!   of "no container": counts and sums added, histograms merged, so totals stay exact. By then
//!   its naming is long done, so it lands in the right row.
//! - At most `GROUPS_MAX` groups; the rest fold into `OTHER_GROUP`.
//! - Latencies are kept as exact values up to `FEW_MAX`, then in a histogram of 2 significant
//!   digits (1% resolution, 36 KiB).
//!
//! Totals are therefore: the mounts in detail + the groups.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, VecDeque, btree_map},
};

use crate::model::stats::{CopyUpStats, LookupStats};

/// The maps each event looks up, keyed by device numbers the kernel gives (not chosen by anyone
/// else): a fast seeded hash rather than SipHash, which cost more than the lookup itself.
type FastMap<K, V> = foldhash::HashMap<K, V>;
use crate::stream::{
    event::{Dev, Event},
    names::{Container, OverlayMount},
    record::{CopyUpRef, MountKey},
};

/// How many slowest copy-ups each mount (and each summary) keeps.
pub const TOP_N: usize = 20;
/// Live mounts kept in detail at once.
pub const LIVE_MOUNTS_MAX: usize = 256;
/// Gone mounts kept in detail.
pub const GONE_DETAIL_MAX: usize = 128;
/// Summaries of retired mounts; beyond this, they fold into `OTHER_GROUP`.
pub const GROUPS_MAX: usize = 128;
pub const OTHER_GROUP: &str = "(other)";
/// The summary of retired mounts no runtime claimed.
pub const NO_CONTAINER_GROUP: &str = "(no container)";
/// Retired mounts remembered so that their late events still reach their summary.
const RETIRED_INDEX_MAX: usize = 4096;

/// One mount, in detail.
#[derive(Clone, Default)]
pub struct MountStats {
    pub copy_ups: CopyUpStats,
    pub lookups: LookupStats,
    /// What findings are made of (see `model::evidence`).
    pub evidence: crate::model::evidence::Evidence,
    /// `ovl_fill_super` time, when the mount happened while tracing.
    pub mount_ns: Option<u64>,
    /// Mount point and layers, once named (from mountinfo).
    pub mount: Option<OverlayMount>,
    /// The container whose root this is, when a runtime claimed it.
    pub container: Option<Container>,
    /// Its lower layers as the runtime names them (Docker: image layer and instruction).
    pub layers: Vec<crate::stream::names::LayerInfo>,
    /// Gone: unmounted, or its device number taken by a newer mount.
    pub gone: bool,
    /// Start of its first event (of its mount, when seen mounting): it was alive then, so any
    /// later mount of its device number began after (see `run::kernel_side::MountClock`).
    pub alive_ns: u64,
    /// Arrival number of its latest event: the least recently active are retired first.
    last_seq: u64,
}

impl MountStats {
    /// What the runtime says of lower layer `index` (1: topmost; 0, not known, has nothing).
    pub fn layer(&self, index: u32) -> Option<&crate::stream::names::LayerInfo> {
        self.layers.iter().find(|l| l.index == index && index > 0)
    }
}

/// Retired mounts of one container (or of no container), summed.
#[derive(Clone, Default)]
pub struct Group {
    pub container: Option<Container>,
    pub mounts: u64,
    pub copy_ups: CopyUpStats,
    pub lookups: LookupStats,
    /// Mounts whose `ovl_fill_super` was seen, and their total time.
    pub mounts_timed: u64,
    pub mount_ns_total: u64,
    /// The folded mounts' evidence, summed: their findings outlive their detail.
    pub evidence: crate::model::evidence::Evidence,
}

/// What `add` did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    pub key: MountKey,
    /// First event of this mount: the caller should name it while it still exists.
    pub new_mount: bool,
    /// The event's arrival number (the same in a replay of the run's events file).
    pub seq: u64,
    /// The mount this one (a new mount of the device number) took the number from: gone.
    pub superseded: Option<MountKey>,
    /// The mount is named (its mountinfo entry found): its copy-ups are no evidence for the
    /// naming any more.
    pub named: bool,
}

/// Everything seen so far.
#[derive(Default)]
pub struct Aggregate {
    /// Mounts in detail: live ones, and the most recent gone ones.
    pub mounts: BTreeMap<MountKey, MountStats>,
    /// Gone mounts in detail, oldest first.
    gone_order: VecDeque<MountKey>,
    live: usize,
    /// Mounts folded out of the detail, by group label (see `group_label`).
    pub retired: BTreeMap<String, Group>,
    /// Recently retired mounts -> their group, for events that arrive after retirement.
    retired_index: FastMap<MountKey, String>,
    retired_order: VecDeque<MountKey>,
    /// Current generation of each device (bounded by the number of device numbers in use).
    generations: FastMap<Dev, u32>,
    pub copy_up_events: u64,
    pub lookup_events: u64,
    pub mount_events: u64,
    /// Renames overlayfs refused (only those are sent).
    pub rename_events: u64,
    seq: u64,
}

/// The summary a retired mount folds into: its container (an init layer with its container), or
/// the shared row of mounts no runtime claimed.
pub fn group_label(c: Option<&Container>) -> String {
    match c {
        Some(c) => format!("{} {} {}", c.runtime, c.name, c.short_id()),
        None => NO_CONTAINER_GROUP.to_string(),
    }
}

impl Aggregate {
    /// The key events of `dev` go to now.
    pub fn current(&self, dev: Dev) -> MountKey {
        MountKey {
            dev,
            generation: self.generations.get(&dev).copied().unwrap_or(0),
        }
    }

    /// Adds one event.
    pub fn add(&mut self, e: &Event) -> Added {
        self.seq += 1;
        let dev = e.origin().dev;
        let mut superseded = None;
        if let Event::Mount(mt) = e {
            if mt.ret == 0 {
                let old = self.current(dev);
                *self.generations.entry(dev).or_default() += 1;
                // The previous mount of this device number is gone.
                self.retire(old);
                superseded = Some(old);
            }
        }
        let key = self.current(dev);
        match e {
            Event::CopyUp(_) => self.copy_up_events += 1,
            Event::Lookup(_) => self.lookup_events += 1,
            Event::Mount(_) => self.mount_events += 1,
            Event::Rename(_) => self.rename_events += 1,
        }
        // A late event of a mount already retired goes to its summary.
        if let Some(label) = self.retired_index.get(&key) {
            if let Some(g) = self.retired.get_mut(label) {
                match e {
                    Event::CopyUp(c) => {
                        g.copy_ups.add(c, self.seq);
                        g.evidence.add_copy_up(c, self.seq);
                    }
                    Event::Lookup(l) => {
                        g.lookups.add(l);
                        g.evidence.add_lookup(l);
                    }
                    Event::Rename(r) => g.evidence.add_rename(r, self.seq),
                    Event::Mount(_) => {}
                }
                return Added {
                    key,
                    new_mount: false,
                    seq: self.seq,
                    superseded,
                    // A mount evicted from the detail may still be waiting for its name: its
                    // copy-ups stay evidence (the naming ignores a mount it no longer waits for).
                    named: false,
                };
            }
        }
        let seq = self.seq;
        // One search of the mounts for an event of a known mount (nearly every event).
        if self.live >= LIVE_MOUNTS_MAX && !self.mounts.contains_key(&key) {
            self.evict_least_recent();
        }
        let (new_mount, m) = match self.mounts.entry(key) {
            btree_map::Entry::Occupied(o) => (false, o.into_mut()),
            btree_map::Entry::Vacant(v) => {
                self.live += 1;
                let alive_ns = e.origin().start_ns;
                (
                    true,
                    v.insert(MountStats {
                        alive_ns,
                        ..Default::default()
                    }),
                )
            }
        };
        m.last_seq = seq;
        match e {
            Event::CopyUp(c) => {
                m.copy_ups.add_with_layer(c, seq);
                m.evidence.add_copy_up(c, seq);
            }
            Event::Lookup(l) => {
                m.lookups.add(l);
                m.evidence.add_lookup(l);
            }
            Event::Mount(mt) => {
                if mt.ret == 0 {
                    m.mount_ns = Some(mt.duration_ns);
                }
            }
            Event::Rename(r) => m.evidence.add_rename(r, seq),
        }
        Added {
            key,
            new_mount,
            seq,
            superseded,
            named: m.mount.is_some(),
        }
    }

    /// A mount known before any event (`--container`): named and attributed from the start.
    pub fn add_known(&mut self, key: MountKey, mount: Option<OverlayMount>, container: Container) {
        if !self.mounts.contains_key(&key) {
            // Within the cap, as `add`: above it every later new mount would search them all.
            if self.live >= LIVE_MOUNTS_MAX {
                self.evict_least_recent();
            }
            self.live += 1;
        }
        let m = self.mounts.entry(key).or_default();
        m.mount = mount;
        m.container = Some(container);
    }

    /// Names a mount (no-op once it is retired).
    pub fn set_mount(&mut self, key: MountKey, mount: OverlayMount) {
        if let Some(m) = self.mounts.get_mut(&key) {
            m.mount = Some(mount);
        }
    }

    pub fn set_layers(&mut self, key: MountKey, layers: Vec<crate::stream::names::LayerInfo>) {
        if let Some(m) = self.mounts.get_mut(&key) {
            m.layers = layers;
        }
    }

    /// Whether rename `seq` of `key` is one the mount's evidence keeps (its layer is wanted).
    pub fn keeps_rename(&self, key: MountKey, seq: u64) -> bool {
        self.mounts.get(&key).is_some_and(|m| {
            m.evidence
                .refused_renames
                .items
                .iter()
                .any(|i| i.seq == seq)
        })
    }

    /// A refused rename's directory's layer, learned after it was added (nothing for a mount
    /// already folded).
    pub fn set_rename_layer(&mut self, key: MountKey, seq: u64, layer: u32) {
        if let Some(m) = self.mounts.get_mut(&key) {
            m.evidence.set_layer(seq, layer);
        }
    }

    /// A copy-up's source layer, learned after it was added (under layer 0, unknown): its
    /// tally moves to that layer and its row in the slowest table says so. Nothing for a mount
    /// already folded (groups keep no layers).
    pub fn set_source_layer(&mut self, key: MountKey, c: CopyUpRef, layer: u32) {
        let Some(m) = self.mounts.get_mut(&key) else {
            return;
        };
        m.evidence.set_layer(c.seq, layer);
        let stats = &mut m.copy_ups;
        if let Some(t) = stats.by_layer.get_mut(&0) {
            t.count = t.count.saturating_sub(1);
            t.data_bytes = t.data_bytes.saturating_sub(c.data_bytes);
            t.total_ns = t.total_ns.saturating_sub(c.duration_ns);
            if t.count == 0 {
                stats.by_layer.remove(&0);
            }
        }
        let t = stats.by_layer.entry(layer).or_default();
        t.count += 1;
        t.data_bytes = t.data_bytes.saturating_add(c.data_bytes);
        t.total_ns = t.total_ns.saturating_add(c.duration_ns);
        let mut slowest = std::mem::take(&mut stats.slowest).into_vec();
        for Reverse(s) in &mut slowest {
            if s.seq == c.seq {
                s.event.layer = Some(layer);
            }
        }
        stats.slowest = slowest.into();
    }

    pub fn set_container(&mut self, key: MountKey, container: Container) {
        if let Some(m) = self.mounts.get_mut(&key) {
            m.container = Some(container);
        }
    }

    /// Over the cap of live mounts: the least recently active leaves the detail for its group.
    fn evict_least_recent(&mut self) {
        let key = self
            .mounts
            .iter()
            .filter(|(_, m)| !m.gone)
            .min_by_key(|(_, m)| m.last_seq)
            .map(|(k, _)| *k);
        if let Some(key) = key {
            if let Some(m) = self.mounts.remove(&key) {
                self.live -= 1;
                self.fold(key, &m);
            }
        }
    }

    /// A mount is gone: kept in detail until `GONE_DETAIL_MAX` newer gone mounts push it out
    /// into its group. Totals are unchanged.
    pub fn retire(&mut self, key: MountKey) {
        let Some(m) = self.mounts.get_mut(&key) else {
            return;
        };
        if m.gone {
            return;
        }
        m.gone = true;
        self.live -= 1;
        self.gone_order.push_back(key);
        if self.gone_order.len() > GONE_DETAIL_MAX {
            if let Some(old) = self.gone_order.pop_front() {
                if let Some(m) = self.mounts.remove(&old) {
                    self.fold(old, &m);
                }
            }
        }
    }

    /// Adds a mount's numbers to its group.
    fn fold(&mut self, key: MountKey, m: &MountStats) {
        let mut label = group_label(m.container.as_ref());
        if !self.retired.contains_key(&label) && self.retired.len() >= GROUPS_MAX {
            label = OTHER_GROUP.to_string();
        }
        let g = self.retired.entry(label.clone()).or_default();
        if g.mounts == 0 && label != OTHER_GROUP {
            g.container = m.container.clone().map(|c| Container { role: None, ..c });
        }
        g.mounts += 1;
        g.copy_ups.merge(&m.copy_ups);
        g.lookups.merge(&m.lookups);
        g.evidence.merge(&m.evidence, |l| {
            m.layer(l).and_then(|i| i.created_by.clone())
        });
        if let Some(t) = m.mount_ns {
            g.mounts_timed += 1;
            g.mount_ns_total = g.mount_ns_total.saturating_add(t);
        }
        self.retired_index.insert(key, label);
        self.retired_order.push_back(key);
        if self.retired_order.len() > RETIRED_INDEX_MAX {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired_index.remove(&old);
            }
        }
    }

    /// Live mounts in detail.
    pub fn live_mounts(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests;

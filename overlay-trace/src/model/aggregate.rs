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
    collections::{BTreeMap, BinaryHeap, HashMap, VecDeque},
};

use crate::{
    model::latency::Latencies,
    stream::{
        event::{CopyUp, Dev, Event, Lookup, LookupOutcome},
        names::{Container, OverlayMount},
        record::{CopyUpRef, MountKey},
    },
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

/// A copy-up kept for the "slowest" table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowCopyUp {
    pub duration_ns: u64,
    /// Arrival order: ties on duration keep the earlier copy-up.
    pub seq: u64,
    pub event: CopyUp,
}

impl Ord for SlowCopyUp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.duration_ns, Reverse(self.seq)).cmp(&(other.duration_ns, Reverse(other.seq)))
    }
}
impl PartialOrd for SlowCopyUp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Default)]
pub struct CopyUpStats {
    pub count: u64,
    pub failed: u64,
    /// Bytes asked of the data copy.
    pub data_bytes: u64,
    pub data_ns: u64,
    pub total_ns: u64,
    pub latency: Latencies,
    /// Calls that only waited for another thread's copy-up of the same object, and their time.
    /// Not copy-ups: `count` and the rest leave them out.
    pub waited: u64,
    pub waited_ns: u64,
    /// Min-heap of the slowest `TOP_N`.
    slowest: BinaryHeap<Reverse<SlowCopyUp>>,
    /// Copy-ups by the lower layer they came from (0: not known), for one mount's detail (a
    /// layer number means nothing across mounts, so folded groups leave it empty).
    pub by_layer: BTreeMap<u32, LayerTally>,
}

/// The copy-ups that came from one lower layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerTally {
    pub count: u64,
    pub data_bytes: u64,
    pub total_ns: u64,
}

impl CopyUpStats {
    fn add(&mut self, c: &CopyUp, seq: u64) {
        if c.is_wait() {
            self.waited += 1;
            self.waited_ns = self.waited_ns.saturating_add(c.duration_ns);
            return;
        }
        self.count += 1;
        if c.kind() == crate::stream::event::CopyUpKind::Failed {
            self.failed += 1;
        }
        // Saturating: the numbers may come from a file (`report events.ndjson`).
        if let Some(d) = c.data {
            self.data_bytes = self.data_bytes.saturating_add(d.bytes);
            self.data_ns = self.data_ns.saturating_add(d.ns);
        }
        self.total_ns = self.total_ns.saturating_add(c.duration_ns);
        self.latency.record(c.duration_ns);
        self.offer(c.duration_ns, seq, || c.clone());
    }

    /// A copy-up of one mount: also tallied by its source layer.
    fn add_with_layer(&mut self, c: &CopyUp, seq: u64) {
        self.add(c, seq);
        if !c.is_wait() {
            let t = self.by_layer.entry(c.layer.unwrap_or(0)).or_default();
            t.count += 1;
            t.data_bytes = t.data_bytes.saturating_add(c.data.map_or(0, |d| d.bytes));
            t.total_ns = t.total_ns.saturating_add(c.duration_ns);
        }
    }

    /// Keeps the copy-up if it is among the `TOP_N` slowest; clones only then.
    fn offer(&mut self, duration_ns: u64, seq: u64, event: impl FnOnce() -> CopyUp) {
        let beats_min = self.slowest.len() < TOP_N
            || self.slowest.peek().is_some_and(|Reverse(min)| {
                (duration_ns, Reverse(seq)) > (min.duration_ns, Reverse(min.seq))
            });
        if beats_min {
            self.slowest.push(Reverse(SlowCopyUp {
                duration_ns,
                seq,
                event: event(),
            }));
            if self.slowest.len() > TOP_N {
                self.slowest.pop();
            }
        }
    }

    fn merge(&mut self, o: &CopyUpStats) {
        self.count += o.count;
        self.failed += o.failed;
        self.data_bytes = self.data_bytes.saturating_add(o.data_bytes);
        self.data_ns = self.data_ns.saturating_add(o.data_ns);
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.waited += o.waited;
        self.waited_ns = self.waited_ns.saturating_add(o.waited_ns);
        self.latency.merge(&o.latency);
        for Reverse(s) in &o.slowest {
            self.offer(s.duration_ns, s.seq, || s.event.clone());
        }
    }

    /// Slowest first.
    pub fn slowest(&self) -> Vec<&SlowCopyUp> {
        let mut v: Vec<&SlowCopyUp> = self.slowest.iter().map(|Reverse(s)| s).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

#[derive(Clone, Default)]
pub struct LookupStats {
    pub count: u64,
    pub latency: Latencies,
    pub outcomes: BTreeMap<LookupOutcomeKey, u64>,
    /// Layers consulted -> lookups.
    pub layers: BTreeMap<u32, u64>,
}

/// `LookupOutcome` with a stable order for reports.
pub type LookupOutcomeKey = u8;

pub fn outcome_key(o: LookupOutcome) -> LookupOutcomeKey {
    match o {
        LookupOutcome::Upper => 0,
        LookupOutcome::LowerOnly => 1,
        LookupOutcome::Positive => 2,
        LookupOutcome::Negative => 3,
        LookupOutcome::Error => 4,
    }
}

pub fn outcome_of_key(k: LookupOutcomeKey) -> LookupOutcome {
    match k {
        0 => LookupOutcome::Upper,
        1 => LookupOutcome::LowerOnly,
        2 => LookupOutcome::Positive,
        3 => LookupOutcome::Negative,
        _ => LookupOutcome::Error,
    }
}

impl LookupStats {
    fn add(&mut self, l: &Lookup) {
        self.count += 1;
        self.latency.record(l.duration_ns);
        *self.outcomes.entry(outcome_key(l.outcome)).or_default() += 1;
        *self.layers.entry(l.layers).or_default() += 1;
    }

    fn merge(&mut self, o: &LookupStats) {
        self.count += o.count;
        self.latency.merge(&o.latency);
        for (k, v) in &o.outcomes {
            *self.outcomes.entry(*k).or_default() += v;
        }
        for (k, v) in &o.layers {
            *self.layers.entry(*k).or_default() += v;
        }
    }

    pub fn outcome(&self, o: LookupOutcome) -> u64 {
        self.outcomes.get(&outcome_key(o)).copied().unwrap_or(0)
    }
}

/// One mount, in detail.
#[derive(Clone, Default)]
pub struct MountStats {
    pub copy_ups: CopyUpStats,
    pub lookups: LookupStats,
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
}

/// What `add` did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    pub key: MountKey,
    /// First event of this mount: the caller should name it while it still exists.
    pub new_mount: bool,
    /// The event's arrival number (the same in a replay of the run's events file).
    pub seq: u64,
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
    retired_index: HashMap<MountKey, String>,
    retired_order: VecDeque<MountKey>,
    /// Current generation of each device (bounded by the number of device numbers in use).
    generations: HashMap<Dev, u32>,
    pub copy_up_events: u64,
    pub lookup_events: u64,
    pub mount_events: u64,
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
        if let Event::Mount(mt) = e {
            if mt.ret == 0 {
                let old = self.current(dev);
                *self.generations.entry(dev).or_default() += 1;
                // The previous mount of this device number is gone.
                self.retire(old);
            }
        }
        let key = self.current(dev);
        match e {
            Event::CopyUp(_) => self.copy_up_events += 1,
            Event::Lookup(_) => self.lookup_events += 1,
            Event::Mount(_) => self.mount_events += 1,
        }
        // A late event of a mount already retired goes to its summary.
        if let Some(label) = self.retired_index.get(&key) {
            if let Some(g) = self.retired.get_mut(label) {
                match e {
                    Event::CopyUp(c) => g.copy_ups.add(c, self.seq),
                    Event::Lookup(l) => g.lookups.add(l),
                    Event::Mount(_) => {}
                }
                return Added {
                    key,
                    new_mount: false,
                    seq: self.seq,
                };
            }
        }
        let new_mount = !self.mounts.contains_key(&key);
        if new_mount {
            if self.live >= LIVE_MOUNTS_MAX {
                self.evict_least_recent();
            }
            self.live += 1;
        }
        let seq = self.seq;
        let m = self.mounts.entry(key).or_default();
        if new_mount {
            m.alive_ns = e.origin().start_ns;
        }
        m.last_seq = seq;
        match e {
            Event::CopyUp(c) => m.copy_ups.add_with_layer(c, seq),
            Event::Lookup(l) => m.lookups.add(l),
            Event::Mount(mt) => {
                if mt.ret == 0 {
                    m.mount_ns = Some(mt.duration_ns);
                }
            }
        }
        Added {
            key,
            new_mount,
            seq,
        }
    }

    /// A mount known before any event (`--container`): named and attributed from the start.
    pub fn add_known(&mut self, key: MountKey, mount: Option<OverlayMount>, container: Container) {
        if !self.mounts.contains_key(&key) {
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

    /// A copy-up's source layer, learned after it was added (under layer 0, unknown): its
    /// tally moves to that layer and its row in the slowest table says so. Nothing for a mount
    /// already folded (groups keep no layers).
    pub fn set_source_layer(&mut self, key: MountKey, c: CopyUpRef, layer: u32) {
        let Some(m) = self.mounts.get_mut(&key) else {
            return;
        };
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
mod tests {
    use super::*;
    use crate::stream::event::raw;
    use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE, LOOKUP_UPPER, NO_DATA_COPY};

    fn ev(b: Vec<u8>) -> Event {
        Event::try_from(b.as_slice()).unwrap()
    }

    fn key(dev: u32, generation: u32) -> MountKey {
        MountKey {
            dev: Dev::from_kernel(dev),
            generation,
        }
    }

    #[test]
    fn copy_ups_are_counted_per_mount_with_top_n() {
        let mut a = Aggregate::default();
        assert!(a.add(&ev(raw::copy_up(1, "a", 10, 10, 5))).new_mount);
        for i in 0..50u64 {
            assert!(
                !a.add(&ev(raw::copy_up(1, &format!("f{i}"), 100, 100, 1000 + i)))
                    .new_mount
            );
        }
        a.add(&ev(raw::copy_up(2, "dir", 0, NO_DATA_COPY, 7)));
        let m = &a.mounts[&key(1, 0)];
        assert_eq!(m.copy_ups.count, 51);
        assert_eq!(m.copy_ups.data_bytes, 10 + 50 * 100);
        assert_eq!(m.copy_ups.total_ns, 5 + (1000..1050).sum::<u64>());
        let slow = m.copy_ups.slowest();
        assert_eq!(slow.len(), TOP_N);
        assert_eq!(slow[0].event.path, "/f49");
        assert_eq!(slow[TOP_N - 1].event.path, format!("/f{}", 50 - TOP_N));
        assert_eq!(
            m.copy_ups.latency.max(),
            1049,
            "a few values are kept exactly"
        );
        assert_eq!(a.mounts[&key(2, 0)].copy_ups.data_bytes, 0);
        assert_eq!(a.copy_up_events, 52);
    }

    #[test]
    fn lookups_count_outcomes_and_layers() {
        let mut a = Aggregate::default();
        a.add(&ev(raw::lookup(1, "x", LOOKUP_NEGATIVE, 3, 10)));
        a.add(&ev(raw::lookup(1, "y", LOOKUP_NEGATIVE, 3, 10)));
        a.add(&ev(raw::lookup(1, "z", LOOKUP_UPPER, 1, 10)));
        a.add(&ev(raw::lookup(1, "w", LOOKUP_LOWER, 2, 30)));
        let l = &a.mounts[&key(1, 0)].lookups;
        assert_eq!(l.count, 4);
        assert_eq!(l.outcome(LookupOutcome::Negative), 2);
        assert_eq!(l.outcome(LookupOutcome::Upper), 1);
        assert_eq!(l.outcome(LookupOutcome::LowerOnly), 1);
        assert_eq!(l.layers.get(&3), Some(&2));
        assert_eq!(l.latency.summary().p50_ns, 10);
    }

    #[test]
    fn mount_time_is_kept_per_superblock() {
        let mut a = Aggregate::default();
        assert_eq!(
            a.add(&ev(raw::mount(9, 4242))),
            Added {
                key: key(9, 1),
                new_mount: true,
                seq: 1
            }
        );
        assert_eq!(
            a.add(&ev(raw::copy_up(9, "f", 1, 1, 5))),
            Added {
                key: key(9, 1),
                new_mount: false,
                seq: 2
            }
        );
        assert_eq!(a.mounts[&key(9, 1)].mount_ns, Some(4242));
        assert_eq!(a.mount_events, 1);
    }

    #[test]
    fn a_reused_device_number_retires_the_old_mount() {
        let mut a = Aggregate::default();
        a.add(&ev(raw::copy_up(9, "old", 1, 1, 5)));
        a.add(&ev(raw::mount(9, 10)));
        a.add(&ev(raw::copy_up(9, "new", 1, 1, 5)));
        a.add(&ev(raw::mount(9, 20)));
        assert_eq!(a.live_mounts(), 1, "only the newest generation is live");
        assert!(
            a.mounts[&key(9, 0)].gone && a.mounts[&key(9, 1)].gone,
            "the older ones stay in detail, gone"
        );
        assert_eq!(
            a.mounts[&key(9, 1)].copy_ups.slowest()[0].event.path,
            "/new"
        );
        assert_eq!(a.mounts[&key(9, 2)].copy_ups.count, 0);
        assert_eq!(a.mounts[&key(9, 2)].mount_ns, Some(20));
        assert!(a.retired.is_empty());
    }

    #[test]
    fn folded_mounts_go_to_their_container_and_late_events_follow() {
        let mut a = Aggregate::default();
        let c = Container {
            runtime: "docker".into(),
            id: "abcdef0123456789".into(),
            name: "web".into(),
            ..Default::default()
        };
        a.add(&ev(raw::mount(9, 10)));
        a.add(&ev(raw::copy_up(9, "a", 1, 1, 5)));
        a.set_container(
            key(9, 1),
            Container {
                role: Some("init-layer".into()),
                pod: None,
                image_id: None,
                ..c.clone()
            },
        );
        a.retire(key(9, 1));
        assert_eq!(
            a.mounts[&key(9, 1)].copy_ups.count,
            1,
            "a gone mount stays in detail for a while"
        );
        // Newer gone mounts push it out of the detail, into its container's row.
        for _ in 0..=GONE_DETAIL_MAX {
            a.add(&ev(raw::mount(10, 1)));
        }
        assert!(!a.mounts.contains_key(&key(9, 1)));
        // An event of the folded mount still in the ring buffer.
        a.add(&ev(raw::copy_up(9, "b", 1, 1, 7)));
        let g = &a.retired[&group_label(Some(&c))];
        assert_eq!(g.copy_ups.count, 2);
        assert_eq!(g.container.as_ref().unwrap().role, None);
        assert_eq!(a.copy_up_events, 2);
    }

    #[test]
    fn memory_is_bounded_and_totals_exact_over_many_mounts() {
        let mut a = Aggregate::default();
        for i in 0..3 * LIVE_MOUNTS_MAX as u32 {
            // Distinct devices that are never seen being unmounted: the cap retires them.
            a.add(&ev(raw::copy_up(1000 + i, "f", 1, 3, 5)));
            a.add(&ev(raw::lookup(1000 + i, "x", LOOKUP_NEGATIVE, 1, 9)));
        }
        assert_eq!(a.mounts.len(), LIVE_MOUNTS_MAX);
        assert_eq!(a.live_mounts(), LIVE_MOUNTS_MAX);
        let live: u64 = a.mounts.values().map(|m| m.copy_ups.count).sum();
        let retired: u64 = a.retired.values().map(|g| g.copy_ups.count).sum();
        assert_eq!(live + retired, 3 * LIVE_MOUNTS_MAX as u64);
        let bytes: u64 = a
            .mounts
            .values()
            .map(|m| m.copy_ups.data_bytes)
            .sum::<u64>()
            + a.retired
                .values()
                .map(|g| g.copy_ups.data_bytes)
                .sum::<u64>();
        assert_eq!(bytes, 9 * LIVE_MOUNTS_MAX as u64);
    }

    #[test]
    fn groups_are_capped_with_an_other_row() {
        let mut a = Aggregate::default();
        let n = GONE_DETAIL_MAX + GROUPS_MAX + 10;
        for i in 0..n {
            a.add(&ev(raw::copy_up(7, "f", 1, 1, 5)));
            let c = Container {
                runtime: "docker".into(),
                id: format!("{i:016}"),
                name: format!("c{i}"),
                ..Default::default()
            };
            a.set_container(a.current(Dev::from_kernel(7)), c);
            a.add(&ev(raw::mount(7, 1)));
        }
        assert_eq!(a.retired.len(), GROUPS_MAX + 1);
        assert_eq!(a.retired[OTHER_GROUP].mounts, 10);
        assert_eq!(
            a.retired.values().map(|g| g.copy_ups.count).sum::<u64>(),
            (GROUPS_MAX + 10) as u64
        );
        assert_eq!(
            a.mounts.values().map(|m| m.copy_ups.count).sum::<u64>(),
            GONE_DETAIL_MAX as u64
        );
    }

    #[test]
    fn gone_detail_is_capped_and_totals_stay_exact() {
        let mut a = Aggregate::default();
        for _ in 0..GONE_DETAIL_MAX + 50 {
            a.add(&ev(raw::copy_up(7, "f", 1, 1, 5)));
            a.add(&ev(raw::mount(7, 1)));
        }
        assert_eq!(
            a.mounts.values().filter(|m| m.gone).count(),
            GONE_DETAIL_MAX
        );
        assert_eq!(a.live_mounts(), 1);
        let detail: u64 = a.mounts.values().map(|m| m.copy_ups.count).sum();
        let groups: u64 = a.retired.values().map(|g| g.copy_ups.count).sum();
        assert_eq!(detail + groups, GONE_DETAIL_MAX as u64 + 50);
    }

    #[test]
    fn huge_latency_is_clamped_not_lost() {
        let mut a = Aggregate::default();
        a.add(&ev(raw::copy_up(1, "a", 1, 1, u64::MAX)));
        assert_eq!(a.mounts[&key(1, 0)].copy_ups.latency.len(), 1);
    }
}

//! Aggregation: pure code, no I/O. Events go in; per-mount histograms, counters and the N slowest
//! copy-ups come out. Memory is bounded by the number of mounts, not the number of events.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::events::{CopyUp, Dev, Event, Lookup, LookupOutcome};

/// How many slowest copy-ups each mount keeps.
pub const TOP_N: usize = 20;
/// Highest latency a histogram records exactly: one hour. Larger values are clamped.
const MAX_NS: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_NS));
}

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

pub struct CopyUpStats {
    pub count: u64,
    pub failed: u64,
    /// Bytes asked of the data copy.
    pub data_bytes: u64,
    pub data_ns: u64,
    pub total_ns: u64,
    pub latency: Histogram<u64>,
    /// Min-heap of the slowest `TOP_N`.
    slowest: BinaryHeap<Reverse<SlowCopyUp>>,
}

impl Default for CopyUpStats {
    fn default() -> Self {
        Self {
            count: 0,
            failed: 0,
            data_bytes: 0,
            data_ns: 0,
            total_ns: 0,
            latency: new_histogram(),
            slowest: BinaryHeap::with_capacity(TOP_N + 1),
        }
    }
}

impl CopyUpStats {
    fn add(&mut self, c: &CopyUp, seq: u64) {
        self.count += 1;
        if c.ret != 0 {
            self.failed += 1;
        }
        if let Some(d) = c.data {
            self.data_bytes += d.bytes;
            self.data_ns += d.ns;
        }
        self.total_ns += c.duration_ns;
        record(&mut self.latency, c.duration_ns);
        // Only clone the event when it makes the table.
        let beats_min = self.slowest.len() < TOP_N
            || self.slowest.peek().is_some_and(|Reverse(min)| c.duration_ns > min.duration_ns);
        if beats_min {
            self.slowest.push(Reverse(SlowCopyUp { duration_ns: c.duration_ns, seq, event: c.clone() }));
            if self.slowest.len() > TOP_N {
                self.slowest.pop();
            }
        }
    }

    /// Slowest first.
    pub fn slowest(&self) -> Vec<&SlowCopyUp> {
        let mut v: Vec<&SlowCopyUp> = self.slowest.iter().map(|Reverse(s)| s).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

pub struct LookupStats {
    pub count: u64,
    pub latency: Histogram<u64>,
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

impl Default for LookupStats {
    fn default() -> Self {
        Self { count: 0, latency: new_histogram(), outcomes: BTreeMap::new(), layers: BTreeMap::new() }
    }
}

impl LookupStats {
    fn add(&mut self, l: &Lookup) {
        self.count += 1;
        record(&mut self.latency, l.duration_ns);
        *self.outcomes.entry(outcome_key(l.outcome)).or_default() += 1;
        *self.layers.entry(l.layers).or_default() += 1;
    }

    pub fn outcome(&self, o: LookupOutcome) -> u64 {
        self.outcomes.get(&outcome_key(o)).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub struct MountStats {
    pub copy_ups: CopyUpStats,
    pub lookups: LookupStats,
    /// `ovl_fill_super` time, when the mount happened while tracing.
    pub mount_ns: Option<u64>,
}

/// One overlay superblock's life. Anonymous device numbers are reused as soon as a mount goes
/// away (Docker mounts each container's init layer briefly, then its root, often on the same
/// number), so each mount seen being made (`ovl_fill_super`) starts a new generation of its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MountKey {
    pub dev: Dev,
    /// 0 for a mount that existed before tracing started; +1 per mount of this device seen.
    pub generation: u32,
}

/// Everything seen so far, per overlay superblock.
#[derive(Default)]
pub struct Aggregate {
    pub mounts: BTreeMap<MountKey, MountStats>,
    /// Current generation of each device.
    generations: HashMap<Dev, u32>,
    pub copy_up_events: u64,
    pub lookup_events: u64,
    pub mount_events: u64,
    seq: u64,
}

impl Aggregate {
    /// The key events of `dev` go to now.
    pub fn current(&self, dev: Dev) -> MountKey {
        MountKey { dev, generation: self.generations.get(&dev).copied().unwrap_or(0) }
    }

    /// Adds one event. Returns its mount and whether that mount is new, so the caller can name
    /// it while it still exists.
    pub fn add(&mut self, e: &Event) -> (MountKey, bool) {
        self.seq += 1;
        let dev = e.origin().dev;
        if let Event::Mount(mt) = e {
            if mt.ret == 0 {
                *self.generations.entry(dev).or_default() += 1;
            }
        }
        let key = self.current(dev);
        let new = !self.mounts.contains_key(&key);
        let m = self.mounts.entry(key).or_default();
        match e {
            Event::CopyUp(c) => {
                self.copy_up_events += 1;
                m.copy_ups.add(c, self.seq);
            }
            Event::Lookup(l) => {
                self.lookup_events += 1;
                m.lookups.add(l);
            }
            Event::Mount(mt) => {
                self.mount_events += 1;
                if mt.ret == 0 {
                    m.mount_ns = Some(mt.duration_ns);
                }
            }
        }
        (key, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::raw;
    use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE, LOOKUP_UPPER, NO_DATA_COPY};

    fn ev(b: Vec<u8>) -> Event {
        Event::try_from(b.as_slice()).unwrap()
    }

    #[test]
    fn copy_ups_are_counted_per_mount_with_top_n() {
        let mut a = Aggregate::default();
        assert!(a.add(&ev(raw::copy_up(1, "a", 10, 10, 5))).1);
        for i in 0..50u64 {
            assert!(!a.add(&ev(raw::copy_up(1, &format!("f{i}"), 100, 100, 1000 + i))).1);
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
        assert_eq!(m.copy_ups.latency.max(), 1049);
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
        assert_eq!(l.latency.value_at_quantile(0.5), 10);
    }

    fn key(dev: u32, generation: u32) -> MountKey {
        MountKey { dev: Dev::from_kernel(dev), generation }
    }

    #[test]
    fn mount_time_is_kept_per_superblock() {
        let mut a = Aggregate::default();
        assert_eq!(a.add(&ev(raw::mount(9, 4242))), (key(9, 1), true));
        assert_eq!(a.add(&ev(raw::copy_up(9, "f", 1, 1, 5))), (key(9, 1), false));
        assert_eq!(a.mounts[&key(9, 1)].mount_ns, Some(4242));
        assert_eq!(a.mount_events, 1);
    }

    #[test]
    fn a_reused_device_number_starts_a_new_mount() {
        let mut a = Aggregate::default();
        a.add(&ev(raw::copy_up(9, "old", 1, 1, 5)));
        a.add(&ev(raw::mount(9, 10)));
        a.add(&ev(raw::copy_up(9, "new", 1, 1, 5)));
        a.add(&ev(raw::mount(9, 20)));
        assert_eq!(a.mounts.len(), 3);
        assert_eq!(a.mounts[&key(9, 0)].copy_ups.slowest()[0].event.path, "/old");
        assert_eq!(a.mounts[&key(9, 1)].copy_ups.slowest()[0].event.path, "/new");
        assert_eq!(a.mounts[&key(9, 2)].copy_ups.count, 0);
        assert_eq!(a.mounts[&key(9, 2)].mount_ns, Some(20));
    }

    #[test]
    fn huge_latency_is_clamped_not_lost() {
        let mut a = Aggregate::default();
        a.add(&ev(raw::copy_up(1, "a", 1, 1, u64::MAX)));
        assert_eq!(a.mounts[&key(1, 0)].copy_ups.latency.len(), 1);
    }
}

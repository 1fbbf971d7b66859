//! The numbers of one mount (or one group of folded mounts): copy-ups (counts, bytes, time,
//! latencies, the slowest, by source layer) and lookups (outcomes, layers consulted). Each
//! event's contribution is defined here once.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
};

use crate::{
    model::{aggregate::TOP_N, latency::Latencies},
    stream::event::{CopyUp, Lookup, LookupOutcome},
};

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
    /// Of `data_ns`, the syncs of the copied files (when measured).
    pub sync_ns: u64,
    pub total_ns: u64,
    pub latency: Latencies,
    /// Calls that only waited for another thread's copy-up of the same object, and their time.
    /// Not copy-ups: `count` and the rest leave them out.
    pub waited: u64,
    pub waited_ns: u64,
    /// Min-heap of the slowest `TOP_N`.
    pub(super) slowest: BinaryHeap<Reverse<SlowCopyUp>>,
    /// Copy-ups by the lower layer they came from (0: not known), for one mount's detail (a
    /// layer number means nothing across mounts, so folded groups leave it empty).
    pub by_layer: BTreeMap<u32, LayerTally>,
    /// Copy-ups by what asked for them (`stream::trigger`; "unknown" when the kernel side
    /// could not tell).
    pub by_trigger: BTreeMap<&'static str, LayerTally>,
}

/// The copy-ups that came from one lower layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerTally {
    pub count: u64,
    pub data_bytes: u64,
    pub total_ns: u64,
}

impl CopyUpStats {
    pub(super) fn add(&mut self, c: &CopyUp, seq: u64) {
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
        self.sync_ns = self.sync_ns.saturating_add(c.sync_ns);
        self.latency.record(c.duration_ns);
        let t = self
            .by_trigger
            .entry(c.trigger().map_or("unknown", |t| t.name()))
            .or_default();
        t.count += 1;
        t.data_bytes = t.data_bytes.saturating_add(c.data.map_or(0, |d| d.bytes));
        t.total_ns = t.total_ns.saturating_add(c.duration_ns);
        self.offer(c.duration_ns, seq, || c.clone());
    }

    /// A copy-up of one mount: also tallied by its source layer.
    pub(super) fn add_with_layer(&mut self, c: &CopyUp, seq: u64) {
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

    pub(super) fn merge(&mut self, o: &CopyUpStats) {
        self.count += o.count;
        self.failed += o.failed;
        self.data_bytes = self.data_bytes.saturating_add(o.data_bytes);
        self.data_ns = self.data_ns.saturating_add(o.data_ns);
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.sync_ns = self.sync_ns.saturating_add(o.sync_ns);
        self.waited += o.waited;
        self.waited_ns = self.waited_ns.saturating_add(o.waited_ns);
        self.latency.merge(&o.latency);
        for (k, t) in &o.by_trigger {
            let m = self.by_trigger.entry(k).or_default();
            m.count += t.count;
            m.data_bytes = m.data_bytes.saturating_add(t.data_bytes);
            m.total_ns = m.total_ns.saturating_add(t.total_ns);
        }
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
    pub(super) fn add(&mut self, l: &Lookup) {
        self.count += 1;
        self.latency.record(l.duration_ns);
        *self.outcomes.entry(outcome_key(l.outcome)).or_default() += 1;
        *self.layers.entry(l.layers).or_default() += 1;
    }

    pub(super) fn merge(&mut self, o: &LookupStats) {
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

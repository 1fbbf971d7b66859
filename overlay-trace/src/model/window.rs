//! The model seen at intervals (`top`): one row per container (or per mount no runtime
//! claimed), its totals as the report counts them, and what changed since the previous look.
//! Rates are differences of the model's own totals and the interval's p99 is the model's
//! latencies minus their copy from the previous look, so no event is counted a second way.

use std::collections::{BTreeMap, HashMap};

use crate::{
    model::{
        aggregate::{Aggregate, MountStats, OTHER_GROUP, group_label},
        latency::Latencies,
        stats::{CopyUpStats, LookupStats},
    },
    stream::{event::LookupOutcome, names::Container, record::MountKey},
};

/// Copy-ups shown in a row's detail.
pub const SLOWEST_SHOWN: usize = 8;

/// What a row stands for. Docker's init layer is a row of its own (`role`): its copy-ups are
/// not in the container's root (nor in `docker diff`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowId {
    Container {
        id: String,
        role: Option<String>,
    },
    Mount(MountKey),
    /// Mounts folded out of the detail that no runtime claimed, or beyond the cap on groups.
    Folded(String),
}

impl RowId {
    fn of_container(c: &Container) -> RowId {
        RowId::Container {
            id: c.id.clone(),
            role: c.role.clone(),
        }
    }
}

/// Totals since tracing began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub copy_ups: u64,
    pub failed: u64,
    pub data_bytes: u64,
    pub lookups: u64,
    pub negative: u64,
}

impl Totals {
    /// The totals of a mount's (or a group's) numbers.
    fn of(c: &CopyUpStats, l: &LookupStats) -> Totals {
        Totals {
            copy_ups: c.count,
            failed: c.failed,
            data_bytes: c.data_bytes,
            lookups: l.count,
            negative: l.outcome(LookupOutcome::Negative),
        }
    }

    fn plus(&self, o: &Totals) -> Totals {
        Totals {
            copy_ups: self.copy_ups.saturating_add(o.copy_ups),
            failed: self.failed.saturating_add(o.failed),
            data_bytes: self.data_bytes.saturating_add(o.data_bytes),
            lookups: self.lookups.saturating_add(o.lookups),
            negative: self.negative.saturating_add(o.negative),
        }
    }

    fn minus(&self, o: &Totals) -> Totals {
        Totals {
            copy_ups: self.copy_ups.saturating_sub(o.copy_ups),
            failed: self.failed.saturating_sub(o.failed),
            data_bytes: self.data_bytes.saturating_sub(o.data_bytes),
            lookups: self.lookups.saturating_sub(o.lookups),
            negative: self.negative.saturating_sub(o.negative),
        }
    }
}

/// Whether a row's mounts are still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowState {
    /// One of its mounts in detail is mounted.
    Live,
    /// Its mounts in detail are all gone (unmounted, or their device number reused).
    Gone,
    /// Only mounts folded out of the detail (gone long ago, or beyond the cap on live mounts)
    /// are left: totals only, no p99 and no slowest copy-ups.
    Folded,
}

/// A copy-up of a row's detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Slow {
    pub path: String,
    pub size: i64,
    pub data_bytes: Option<u64>,
    pub total_ns: u64,
    pub comm: String,
    /// The lower layer it came from (1: topmost), and the Dockerfile line that made it.
    pub layer: Option<u32>,
    pub created_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: RowId,
    pub name: String,
    /// Lower layers (the most of its mounts).
    pub layers: Option<usize>,
    pub total: Totals,
    /// Since the previous look.
    pub delta: Totals,
    /// p99 of the copy-ups since the previous look (None: there were none).
    pub p99_ns: Option<u64>,
    pub state: RowState,
    /// The slowest copy-ups the model keeps for its mounts in detail, slowest first.
    pub slowest: Vec<Slow>,
}

impl Row {
    /// Per second over `secs`.
    pub fn rate(&self, v: u64, secs: f64) -> f64 {
        if secs > 0.0 { v as f64 / secs } else { 0.0 }
    }

    /// Negative lookups as a share of the interval's lookups (None: no lookups).
    pub fn negative_share(&self) -> Option<f64> {
        (self.delta.lookups > 0).then(|| self.delta.negative as f64 / self.delta.lookups as f64)
    }
}

/// Remembers the previous look: each source's totals (a mount in detail, or a group of folded
/// mounts), so that a mount whose row changes (named, or folded into its group) never shows its
/// whole past as the interval's.
#[derive(Default)]
pub struct Window {
    mounts: HashMap<MountKey, (Totals, String)>,
    groups: HashMap<String, Totals>,
    /// Each mount's copy-up latencies at the previous look.
    latencies: HashMap<MountKey, Latencies>,
}

impl Window {
    /// The rows of `agg` now (rows without any event left out), and the interval's changes.
    pub fn look(&mut self, agg: &Aggregate) -> Vec<Row> {
        let mut rows: BTreeMap<RowId, Row> = BTreeMap::new();
        let mut interval: HashMap<RowId, Latencies> = HashMap::new();
        let mut mounts = HashMap::with_capacity(agg.mounts.len());
        for (key, m) in &agg.mounts {
            let id = row_id(*key, m);
            let row = rows
                .entry(id.clone())
                .or_insert_with(|| empty_row(id.clone(), name_of(*key, m)));
            let t = Totals::of(&m.copy_ups, &m.lookups);
            row.total = row.total.plus(&t);
            let was = self.mounts.get(key).map(|(t, _)| *t).unwrap_or_default();
            row.delta = row.delta.plus(&t.minus(&was));
            row.layers = row.layers.max(m.mount.as_ref().map(|x| x.lowerdirs.len()));
            row.state = match (row.state, m.gone) {
                (RowState::Live, _) | (_, false) => RowState::Live,
                _ => RowState::Gone,
            };
            row.slowest.extend(slowest_of(m));
            let now = &m.copy_ups.latency;
            let new = match self.latencies.get(key) {
                Some(was) if was.len() == now.len() => Latencies::Empty,
                Some(was) => now.since(was),
                None => now.clone(),
            };
            // A copy for the next look, only of latencies that changed.
            if !new.is_empty() {
                self.latencies.insert(*key, now.clone());
            }
            // Most rows have one mount: its latencies are moved in, not merged (a copy).
            match interval.entry(id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(new);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().merge(&new),
            }
            mounts.insert(*key, (t, group_label(m.container.as_ref())));
        }
        // What mounts folded since the previous look had then: already shown, not new.
        let mut folded: HashMap<&str, Totals> = HashMap::new();
        for (key, (t, label)) in &self.mounts {
            if !agg.mounts.contains_key(key) {
                let label = if agg.retired.contains_key(label) {
                    label.as_str()
                } else {
                    OTHER_GROUP
                };
                let f = folded.entry(label).or_default();
                *f = f.plus(t);
            }
        }
        let mut groups = HashMap::with_capacity(agg.retired.len());
        for (label, g) in &agg.retired {
            let id = g
                .container
                .as_ref()
                .map_or_else(|| RowId::Folded(label.clone()), RowId::of_container);
            let name = g
                .container
                .as_ref()
                .map_or_else(|| label.clone(), |c| c.track_name());
            let row = rows
                .entry(id.clone())
                .or_insert_with(|| empty_row(id, name));
            let t = Totals::of(&g.copy_ups, &g.lookups);
            row.total = row.total.plus(&t);
            let was = self.groups.get(label).copied().unwrap_or_default();
            let shown = folded.get(label.as_str()).copied().unwrap_or_default();
            row.delta = row.delta.plus(&t.minus(&was).minus(&shown));
            groups.insert(label.clone(), t);
        }
        self.latencies.retain(|k, _| agg.mounts.contains_key(k));
        (self.mounts, self.groups) = (mounts, groups);
        let mut out: Vec<Row> = rows
            .into_values()
            .filter(|r| r.total.copy_ups + r.total.lookups > 0)
            .collect();
        for r in &mut out {
            let l = interval.remove(&r.id).unwrap_or_default();
            r.p99_ns = (!l.is_empty()).then(|| l.p99());
            r.slowest.sort_by_key(|s| std::cmp::Reverse(s.total_ns));
            r.slowest.truncate(SLOWEST_SHOWN);
        }
        out
    }
}

fn row_id(key: MountKey, m: &MountStats) -> RowId {
    m.container
        .as_ref()
        .map_or(RowId::Mount(key), RowId::of_container)
}

fn name_of(key: MountKey, m: &MountStats) -> String {
    match (&m.container, &m.mount) {
        (Some(c), _) => c.track_name(),
        // The device number (and which mount of it) tells apart mounts at alike (or forged)
        // mount points.
        (None, Some(mount)) => format!("{} [{}]", mount.mount_point, dev_of(key)),
        (None, None) => format!("overlay [{}]", dev_of(key)),
    }
}

/// "0:38", or "0:38 #2" for the second mount of the number seen while tracing.
fn dev_of(key: MountKey) -> String {
    match key.generation {
        0 => key.dev.to_string(),
        g => format!("{} #{g}", key.dev),
    }
}

fn empty_row(id: RowId, name: String) -> Row {
    Row {
        id,
        name,
        layers: None,
        total: Totals::default(),
        delta: Totals::default(),
        p99_ns: None,
        state: RowState::Folded,
        slowest: Vec::new(),
    }
}

fn slowest_of(m: &MountStats) -> impl Iterator<Item = Slow> + '_ {
    m.copy_ups
        .slowest()
        .into_iter()
        .take(SLOWEST_SHOWN)
        .map(|s| {
            let layer = s.event.layer.filter(|l| *l > 0);
            Slow {
                path: s.event.path.clone(),
                size: s.event.size,
                data_bytes: s.event.data.map(|d| d.bytes),
                total_ns: s.duration_ns,
                comm: s.event.origin.comm.clone(),
                layer,
                created_by: layer
                    .and_then(|l| m.layer(l)?.created_by.clone())
                    // An imported layer's history says nothing.
                    .filter(|by| !by.trim().is_empty()),
            }
        })
}

#[cfg(test)]
mod tests;

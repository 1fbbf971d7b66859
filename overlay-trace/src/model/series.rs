//! The numbers `serve` exposes: per container (label set), counters and histograms fed by the
//! same decoded events as `run`'s aggregate, and the tracer's own health. Exposition goes
//! through prometheus-client (OpenMetrics text); `prometheus_text` turns that into the classic
//! Prometheus text format for scrapers that do not ask for OpenMetrics.
//!
//! Counters never go backwards, so a mount's numbers join a series only once its labels are
//! settled (its container found, or no runtime claims it, or `SETTLE_AFTER` passed); until then
//! they wait in the mount's own pending series. Cardinality is bounded: a label set with no live
//! mount and no event for `forget_after` is dropped, and beyond `max_series` label sets new
//! containers share the `other` series.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    model::counters::{Labels, Series},
    stream::{
        event::Event,
        names::Container,
        record::{EventCounts, MountKey},
    },
};

/// A mount's labels are settled at the latest this long after its first event: longer than the
/// naming thread's worst case (mountinfo retries, then a container lookup and its retries, each
/// bounded), so a slow runtime still gets its containers named.
pub const SETTLE_AFTER: Duration = Duration::from_secs(120);
/// Mounts tracked at once (pending or settled); beyond, the least recently active is settled
/// and forgotten (its later events go to the unnamed series).
const MOUNTS_MAX: usize = 4096;

struct Tracked {
    /// Settled labels (shared with the series map: no copy per event), or the numbers waiting
    /// for them.
    labels: Option<Arc<Labels>>,
    pending: Series,
    first_seen: Instant,
    last_seen: Instant,
    gone: bool,
    container: Option<Container>,
}

struct Kept {
    series: Series,
    live_mounts: u32,
    last_active: Instant,
}

/// The tracer's own state, as of the last update.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub counts: EventCounts,
    pub decode_errors: u64,
    /// Enrichment work abandoned or skipped (see `enrich::budget`).
    pub enrich: crate::enrich::budget::EnrichTally,
    /// (function, probe kind) of every attached probe.
    pub probes: Vec<(String, String)>,
    pub attached: bool,
    /// The drain loop's last 1 s tick: `/healthz` fails when it stops coming.
    pub last_tick: Option<Instant>,
    /// Series left out of /metrics bodies to keep them under `--max-body-mib`.
    pub series_cut: u64,
    /// Scrapes being encoded or sent when the last one began (itself included).
    pub scrapes_in_progress: usize,
    /// Scrapes answered 503 because every place was held.
    pub scrapes_refused: u64,
}

pub struct Metrics {
    mounts: HashMap<MountKey, Tracked>,
    series: HashMap<Arc<Labels>, Kept>,
    pub forget_after: Duration,
    pub max_series: usize,
    /// Mounts counted under `other` because of `max_series`.
    overflowed: u64,
    /// Label sets dropped after `forget_after`.
    forgotten: u64,
    pub health: Health,
}

/// Shared between the drain loop (writer) and the HTTP server (reader).
pub type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    pub fn new(forget_after: Duration, max_series: usize) -> Self {
        Self {
            mounts: HashMap::new(),
            series: HashMap::new(),
            forget_after,
            max_series: max_series.max(1),
            overflowed: 0,
            forgotten: 0,
            health: Health::default(),
        }
    }

    pub fn observe(&mut self, key: MountKey, e: &Event, now: Instant) {
        if !self.mounts.contains_key(&key) && self.mounts.len() >= MOUNTS_MAX {
            self.evict_one(now);
        }
        let t = self.mounts.entry(key).or_insert_with(|| Tracked {
            labels: None,
            pending: Series::default(),
            first_seen: now,
            last_seen: now,
            gone: false,
            container: None,
        });
        t.last_seen = now;
        match t.labels.clone() {
            // A settled mount holds its series (`live_mounts`), so it is never forgotten.
            Some(l) => {
                if let Some(k) = self.series.get_mut(l.as_ref()) {
                    k.series.observe(e);
                    k.last_active = now;
                }
            }
            None => t.pending.observe(e),
        }
    }

    /// The mount's container is known.
    pub fn named(&mut self, key: MountKey, c: &Container, now: Instant) {
        if let Some(t) = self.mounts.get_mut(&key) {
            t.container = Some(c.clone());
        }
        self.settle(key, now);
    }

    /// No runtime claims the mount.
    pub fn unclaimed(&mut self, key: MountKey, now: Instant) {
        self.settle(key, now);
    }

    /// The mount went away; its series stays until `forget_after`.
    pub fn gone(&mut self, key: MountKey, now: Instant) {
        if let Some(t) = self.mounts.get_mut(&key) {
            t.gone = true;
            if t.labels.is_some() {
                self.release(key, now);
            }
        }
    }

    /// Settles mounts that waited long enough and drops series idle for `forget_after`.
    pub fn tick(&mut self, now: Instant) {
        let due: Vec<MountKey> = self
            .mounts
            .iter()
            .filter(|(_, t)| t.labels.is_none() && now.duration_since(t.first_seen) >= SETTLE_AFTER)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            self.settle(k, now);
        }
        let forget = self.forget_after;
        let before = self.series.len();
        self.series
            .retain(|_, k| k.live_mounts > 0 || now.duration_since(k.last_active) < forget);
        self.forgotten += (before - self.series.len()) as u64;
    }

    /// Label sets exposed now.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn settle(&mut self, key: MountKey, now: Instant) {
        let Some(t) = self.mounts.get_mut(&key) else {
            return;
        };
        if t.labels.is_some() {
            return;
        }
        let wanted = Labels::of(t.container.as_ref());
        let pending = std::mem::take(&mut t.pending);
        let gone = t.gone;
        let labels = self.admit(wanted, now);
        let k = self.series.get_mut(labels.as_ref()).expect("admitted");
        k.series.merge(&pending);
        k.live_mounts += 1;
        if let Some(t) = self.mounts.get_mut(&key) {
            t.labels = Some(labels);
        }
        if gone {
            self.release(key, now);
        }
    }

    /// The series for `l`, made if needed: `other` once `max_series` label sets exist
    /// (`other` is one of them).
    fn admit(&mut self, l: Labels, now: Instant) -> Arc<Labels> {
        let other = Labels::other();
        let room =
            self.series.len() + usize::from(!self.series.contains_key(&other)) < self.max_series;
        let l = if self.series.contains_key(&l) || room {
            l
        } else {
            self.overflowed += 1;
            other
        };
        if let Some((k, _)) = self.series.get_key_value(&l) {
            return k.clone();
        }
        let l = Arc::new(l);
        self.series.insert(
            l.clone(),
            Kept {
                series: Series::default(),
                live_mounts: 0,
                last_active: now,
            },
        );
        l
    }

    /// A settled mount that is gone (or evicted) stops holding its series.
    fn release(&mut self, key: MountKey, now: Instant) {
        if let Some(t) = self.mounts.remove(&key) {
            if let Some(k) = t.labels.and_then(|l| self.series.get_mut(l.as_ref())) {
                k.live_mounts = k.live_mounts.saturating_sub(1);
                k.last_active = now;
            }
        }
    }

    fn evict_one(&mut self, now: Instant) {
        if let Some(key) = self
            .mounts
            .iter()
            .min_by_key(|(_, t)| t.last_seen)
            .map(|(k, _)| *k)
        {
            self.settle(key, now);
            self.release(key, now);
        }
    }
}

/// What one scrape shows, copied under the lock (quick) so that encoding it (tens of
/// milliseconds at a thousand series) holds nothing the drain waits for.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Series sorted by their labels.
    pub rows: Vec<(Labels, Series)>,
    pub health: Health,
    pub max_series: usize,
    pub overflowed: u64,
    pub forgotten: u64,
    pub pending: usize,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        let mut rows: Vec<(Labels, Series)> = self
            .series
            .iter()
            .map(|(l, k)| (l.as_ref().clone(), k.series.clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            rows,
            health: self.health.clone(),
            max_series: self.max_series,
            overflowed: self.overflowed,
            forgotten: self.forgotten,
            pending: self.mounts.values().filter(|t| t.labels.is_none()).count(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("series", &self.series.len())
            .finish()
    }
}

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
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::stream::record::{EventCounts, MountKey};

use crate::stream::names::Container;

use crate::stream::event::{CopyUpKind, Event, LookupOutcome};

/// A mount's labels are settled at the latest this long after its first event: longer than the
/// naming thread's worst case (mountinfo retries, then a container lookup and its retries, each
/// bounded), so a slow runtime still gets its containers named.
pub const SETTLE_AFTER: Duration = Duration::from_secs(120);
/// Mounts tracked at once (pending or settled); beyond, the least recently active is settled
/// and forgotten (its later events go to the unnamed series).
const MOUNTS_MAX: usize = 4096;

/// Bucket bounds in seconds: copy-ups, data copies and mounts (100 µs .. 30 s).
const SLOW_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Lookups (5 µs .. 1 s).
const FAST_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Layers consulted by one lookup.
const LAYER_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0, 128.0, 500.0];

pub const OUTCOMES: [(LookupOutcome, &str); 5] = [
    (LookupOutcome::Negative, "negative"),
    (LookupOutcome::Upper, "upper"),
    (LookupOutcome::LowerOnly, "lower_only"),
    (LookupOutcome::Positive, "positive"),
    (LookupOutcome::Error, "error"),
];

/// A histogram with fixed bounds: counts per bucket (not cumulative), sum and count.
#[derive(Clone, Debug)]
pub struct Hist {
    bounds: &'static [f64],
    counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    /// Buckets as prometheus-client wants them: counts per bucket (it sums them into the
    /// cumulative `le` series itself), the last bound `f64::MAX`, which it writes `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// One container's numbers (or one mount's, while its labels are not settled).
#[derive(Clone, Debug)]
pub struct Series {
    pub copy_ups: u64,
    pub copy_up_waits: u64,
    pub copy_up_failures: u64,
    pub copy_up_bytes: u64,
    pub copy_up_seconds: Hist,
    pub data_copy_seconds: Hist,
    pub lookups: [u64; OUTCOMES.len()],
    pub lookup_seconds: Hist,
    pub lookup_layers: Hist,
    pub mounts: u64,
    pub mount_failures: u64,
    pub mount_seconds: Hist,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            copy_ups: 0,
            copy_up_waits: 0,
            copy_up_failures: 0,
            copy_up_bytes: 0,
            copy_up_seconds: Hist::new(SLOW_BUCKETS),
            data_copy_seconds: Hist::new(SLOW_BUCKETS),
            lookups: [0; OUTCOMES.len()],
            lookup_seconds: Hist::new(FAST_BUCKETS),
            lookup_layers: Hist::new(LAYER_BUCKETS),
            mounts: 0,
            mount_failures: 0,
            mount_seconds: Hist::new(SLOW_BUCKETS),
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Series {
    fn observe(&mut self, e: &Event) {
        match e {
            Event::CopyUp(c) if c.is_wait() => self.copy_up_waits += 1,
            // A failed copy-up is a copy-up (counted, timed) that also failed, as in the report.
            Event::CopyUp(c) => {
                self.copy_ups += 1;
                if c.kind() == CopyUpKind::Failed {
                    self.copy_up_failures += 1;
                }
                self.copy_up_seconds.observe(secs(c.duration_ns));
                if let Some(d) = c.data {
                    self.copy_up_bytes += d.bytes;
                    self.data_copy_seconds.observe(secs(d.ns));
                }
            }
            Event::Lookup(l) => {
                if let Some(i) = OUTCOMES.iter().position(|(o, _)| *o == l.outcome) {
                    self.lookups[i] += 1;
                }
                self.lookup_seconds.observe(secs(l.duration_ns));
                self.lookup_layers.observe(f64::from(l.layers));
            }
            Event::Mount(m) if m.ret != 0 => self.mount_failures += 1,
            Event::Mount(m) => {
                self.mounts += 1;
                self.mount_seconds.observe(secs(m.duration_ns));
            }
        }
    }

    fn merge(&mut self, o: &Series) {
        self.copy_ups += o.copy_ups;
        self.copy_up_waits += o.copy_up_waits;
        self.copy_up_failures += o.copy_up_failures;
        self.copy_up_bytes += o.copy_up_bytes;
        self.copy_up_seconds.merge(&o.copy_up_seconds);
        self.data_copy_seconds.merge(&o.data_copy_seconds);
        for (a, b) in self.lookups.iter_mut().zip(&o.lookups) {
            *a += b;
        }
        self.lookup_seconds.merge(&o.lookup_seconds);
        self.lookup_layers.merge(&o.lookup_layers);
        self.mounts += o.mounts;
        self.mount_failures += o.mount_failures;
        self.mount_seconds.merge(&o.mount_seconds);
    }
}

/// A label value, escaped as the exposition formats require (prometheus-client writes label
/// values as given, and container names and images come from outside).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Escaped(pub String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let mut rest = self.0.as_str();
        // Runs of ordinary characters in one write; only the three specials are escaped.
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

/// Who a series belongs to. Empty values for a mount no runtime claims.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub runtime: String,
    pub container: String,
    pub image: String,
    pub namespace: String,
    pub pod: String,
    /// "" for a container's root, "init-layer" for Docker's brief mount that prepares it.
    pub role: String,
}

impl Labels {
    pub fn of(c: Option<&Container>) -> Self {
        let Some(c) = c else {
            return Self::default();
        };
        Self {
            runtime: c.runtime.clone(),
            container: c.name.clone(),
            image: c.image.clone(),
            namespace: c.namespace.clone().unwrap_or_default(),
            pod: c.pod.clone().unwrap_or_default(),
            role: c.role.clone().unwrap_or_default(),
        }
    }

    fn other() -> Self {
        Self {
            runtime: "other".into(),
            container: "other".into(),
            ..Default::default()
        }
    }

    pub fn pairs(&self) -> Vec<(&'static str, Escaped)> {
        [
            ("runtime", &self.runtime),
            ("container", &self.container),
            ("image", &self.image),
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("role", &self.role),
        ]
        .into_iter()
        // An empty label is no label, for Prometheus: leave it out.
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, Escaped(v.clone())))
        .collect()
    }
}

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

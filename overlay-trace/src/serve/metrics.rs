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

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    aggregate::MountKey,
    containers::Container,
    events::{CopyUpKind, Event, LookupOutcome},
    report::EventCounts,
};

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

const OUTCOMES: [(LookupOutcome, &str); 5] = [
    (LookupOutcome::Negative, "negative"),
    (LookupOutcome::Upper, "upper"),
    (LookupOutcome::LowerOnly, "lower_only"),
    (LookupOutcome::Positive, "positive"),
    (LookupOutcome::Error, "error"),
];

/// A histogram with fixed bounds: counts per bucket (not cumulative), sum and count.
#[derive(Clone, Debug)]
struct Hist {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
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
    fn buckets(&self) -> Vec<(f64, u64)> {
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
struct Series {
    copy_ups: u64,
    copy_up_waits: u64,
    copy_up_failures: u64,
    copy_up_bytes: u64,
    copy_up_seconds: Hist,
    data_copy_seconds: Hist,
    lookups: [u64; OUTCOMES.len()],
    lookup_seconds: Hist,
    lookup_layers: Hist,
    mounts: u64,
    mount_failures: u64,
    mount_seconds: Hist,
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

    fn pairs(&self) -> Vec<(&'static str, Escaped)> {
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

/// prometheus-client's view of `Shared`: encoded under the lock on every scrape.
#[derive(Debug)]
struct View(Shared);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("series", &self.series.len())
            .finish()
    }
}

type Pairs = Vec<(&'static str, Escaped)>;

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[(Pairs, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Pairs, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[(Pairs, &Hist)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    for (labels, h) in rows {
        let buckets = h.buckets();
        if labels.is_empty() {
            m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        } else {
            m.encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
    }
    Ok(())
}

impl Collector for View {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(&Labels, &Series)> = m
            .series
            .iter()
            .map(|(l, k)| (l.as_ref(), &k.series))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let rows: Vec<(Pairs, &Series)> = rows.into_iter().map(|(l, s)| (l.pairs(), s)).collect();
        let c = |f: fn(&Series) -> u64| -> Vec<(Pairs, u64)> {
            rows.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        let h = |f: fn(&Series) -> &Hist| -> Vec<(Pairs, &Hist)> {
            rows.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        counter(
            &mut enc,
            "copy_ups",
            "Copy-ups (ovl_copy_up_one calls that did not only wait), failed ones included",
            None,
            &c(|s| s.copy_ups),
        )?;
        counter(
            &mut enc,
            "copy_up_waits",
            "Copy-up calls that waited for another thread's copy-up of the same object",
            None,
            &c(|s| s.copy_up_waits),
        )?;
        counter(
            &mut enc,
            "copy_up_failures",
            "Copy-ups that returned an error",
            None,
            &c(|s| s.copy_up_failures),
        )?;
        counter(
            &mut enc,
            "copy_up",
            "File data copied up",
            Some(&Unit::Bytes),
            &c(|s| s.copy_up_bytes),
        )?;
        histogram(
            &mut enc,
            "copy_up_duration",
            "Time of one copy-up (ovl_copy_up_one), data copy included",
            Some(&Unit::Seconds),
            &h(|s| &s.copy_up_seconds),
        )?;
        histogram(
            &mut enc,
            "data_copy_duration",
            "Time of the data copy of one copy-up",
            Some(&Unit::Seconds),
            &h(|s| &s.data_copy_seconds),
        )?;
        let mut lookups = Vec::new();
        for (l, s) in &rows {
            for (i, (_, name)) in OUTCOMES.iter().enumerate() {
                let mut labels = l.clone();
                labels.push(("outcome", Escaped((*name).into())));
                lookups.push((labels, s.lookups[i]));
            }
        }
        counter(
            &mut enc,
            "lookups",
            "Name lookups (ovl_lookup) by outcome",
            None,
            &lookups,
        )?;
        histogram(
            &mut enc,
            "lookup_duration",
            "Time of one lookup",
            Some(&Unit::Seconds),
            &h(|s| &s.lookup_seconds),
        )?;
        histogram(
            &mut enc,
            "lookup_layers_consulted",
            "Layers one lookup consulted",
            None,
            &h(|s| &s.lookup_layers),
        )?;
        counter(
            &mut enc,
            "mounts",
            "Overlays mounted (ovl_fill_super)",
            None,
            &c(|s| s.mounts),
        )?;
        counter(
            &mut enc,
            "mount_failures",
            "Overlay mounts that failed",
            None,
            &c(|s| s.mount_failures),
        )?;
        histogram(
            &mut enc,
            "mount_duration",
            "Time of one overlay mount (ovl_fill_super)",
            Some(&Unit::Seconds),
            &h(|s| &s.mount_seconds),
        )?;

        // The tracer's own health.
        let n = &m.health.counts;
        let kind = |k: &str| vec![("kind", Escaped(k.into()))];
        counter(
            &mut enc,
            "events_lost",
            "Events the kernel could not hand over (ring buffer full), by kind",
            None,
            &[
                (kind("copy_up"), n.dropped_copy_up),
                (kind("lookup"), n.dropped_lookup),
                (kind("mount"), n.dropped_mount),
            ],
        )?;
        counter(
            &mut enc,
            "missed_returns",
            "Calls whose return was never seen (not reported), by kind",
            None,
            &[
                (kind("copy_up"), n.missed_return_copy_up),
                (kind("lookup"), n.missed_return_lookup),
                (kind("mount"), n.missed_return_mount),
                (kind("data_copy"), n.missed_return_data),
            ],
        )?;
        counter(
            &mut enc,
            "untracked_calls",
            "Calls whose start could not be recorded (in-flight table full or nested too deep)",
            None,
            &[(vec![], n.untracked_calls)],
        )?;
        counter(
            &mut enc,
            "decode_errors",
            "Records userspace could not decode",
            None,
            &[(vec![], m.health.decode_errors)],
        )?;
        counter(
            &mut enc,
            "enrichment_abandoned",
            "Name and source-layer lookups abandoned after their time budget (a path that did not answer)",
            None,
            &[(vec![], m.health.enrich.abandoned)],
        )?;
        counter(
            &mut enc,
            "enrichment_skipped",
            "Name and source-layer lookups not attempted (their mount did not answer before, or too many were stuck)",
            None,
            &[(vec![], m.health.enrich.skipped)],
        )?;
        let probes: Vec<(Pairs, i64)> = m
            .health
            .probes
            .iter()
            .map(|(f, k)| {
                (
                    vec![
                        ("function", Escaped(f.clone())),
                        ("kind", Escaped(k.clone())),
                    ],
                    1,
                )
            })
            .collect();
        gauge(
            &mut enc,
            "probe_attached",
            "1 for every probe attached, by function and kind (fentry, fexit, kprobe, kretprobe)",
            &probes,
        )?;
        gauge(
            &mut enc,
            "up",
            "1 once the probes are attached",
            &[(vec![], i64::from(m.health.attached))],
        )?;
        gauge(
            &mut enc,
            "series",
            "Container label sets exposed now",
            &[(vec![], m.series.len() as i64)],
        )?;
        gauge(
            &mut enc,
            "series_max",
            "Cap on container label sets (--max-series); beyond it containers share `other`",
            &[(vec![], m.max_series as i64)],
        )?;
        counter(
            &mut enc,
            "series_overflowed",
            "Mounts counted under `other` because --max-series was reached",
            None,
            &[(vec![], m.overflowed)],
        )?;
        counter(
            &mut enc,
            "series_forgotten",
            "Container label sets dropped after --forget-after without a live mount or event",
            None,
            &[(vec![], m.forgotten)],
        )?;
        let pending = m.mounts.values().filter(|t| t.labels.is_none()).count();
        gauge(
            &mut enc,
            "mounts_pending",
            "Mounts whose container is still being looked up (their numbers join their series then)",
            &[(vec![], pending as i64)],
        )?;
        Ok(())
    }
}

/// The registry a scrape encodes: every name prefixed `overlay_trace_`.
pub fn registry(shared: Shared) -> Registry {
    let mut r = Registry::with_prefix("overlay_trace");
    r.register_collector(Box::new(View(shared)));
    r
}

/// The exposition in OpenMetrics text (what prometheus-client writes).
pub fn openmetrics(r: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, r);
    out
}

/// The same numbers in the Prometheus text format (0.0.4): no `# EOF` and no `# UNIT`, and a
/// counter's HELP and TYPE lines carry the `_total` name its samples have. One pass: samples
/// are copied as they are, a HELP line waits for the TYPE line after it.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.split_inclusive('\n') {
        if !line.starts_with('#') {
            out.push_str(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = help.replace(rest) {
                // A HELP without a TYPE after it: as it was.
                out.push_str("# HELP ");
                out.push_str(h);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind.trim_end() == "counter" {
                "_total"
            } else {
                ""
            };
            if let Some(h) = help.take() {
                let (hname, text) = h.split_once(' ').unwrap_or((h, "\n"));
                let _ = write!(out, "# HELP {hname}{suffix} {text}");
            }
            let _ = write!(out, "# TYPE {name}{suffix} {kind}");
        } else if line.starts_with("# UNIT ") || line.starts_with("# EOF") {
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Dev, Event, raw};

    fn key(minor: u32) -> MountKey {
        MountKey {
            dev: Dev { major: 0, minor },
            generation: 1,
        }
    }

    fn copy_up(minor: u32, bytes: i64) -> Event {
        Event::try_from(&raw::copy_up(minor, "a/b", bytes, bytes, 2_000_000)[..]).unwrap()
    }

    fn container(name: &str) -> Container {
        Container {
            runtime: "docker".into(),
            id: format!("{name}0123456789"),
            name: name.into(),
            image: "img:1".into(),
            ..Default::default()
        }
    }

    fn text(m: Metrics) -> String {
        openmetrics(&registry(Arc::new(Mutex::new(m))))
    }

    #[test]
    fn numbers_wait_for_their_labels_then_join_the_container() {
        let now = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 100);
        m.observe(key(1), &copy_up(1, 10), now);
        m.observe(key(1), &copy_up(1, 5), now);
        assert_eq!(
            m.series_count(),
            0,
            "nothing exposed before the mount is named"
        );
        m.named(key(1), &container("web"), now);
        m.observe(key(1), &copy_up(1, 1), now);
        let t = text(m);
        assert!(
            t.contains(
                r#"overlay_trace_copy_ups_total{runtime="docker",container="web",image="img:1"} 3"#
            ),
            "{t}"
        );
        assert!(t.contains("overlay_trace_copy_up_bytes_total{"), "{t}");
        assert!(t.contains("} 16\n"), "{t}");
        assert!(
            t.contains("# TYPE overlay_trace_copy_up_duration_seconds histogram"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn an_unnamed_mount_settles_after_a_while_under_empty_labels() {
        let t0 = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 100);
        m.observe(key(1), &copy_up(1, 1), t0);
        m.tick(t0 + SETTLE_AFTER / 2);
        assert_eq!(m.series_count(), 0);
        m.tick(t0 + SETTLE_AFTER);
        assert_eq!(m.series_count(), 1);
        assert!(text(m).contains("\noverlay_trace_copy_ups_total 1\n"));
    }

    #[test]
    fn series_are_capped_then_forgotten() {
        let t0 = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            m.observe(key(i), &copy_up(i, 1), t0);
            m.named(key(i), &container(&format!("c{i}")), t0);
            m.gone(key(i), t0);
        }
        // Three label sets: two containers and `other` with the rest.
        assert_eq!(m.series_count(), 3);
        let t = text(m);
        assert!(t.contains(r#"container="other""#), "{t}");
        assert!(t.contains("overlay_trace_series_overflowed_total 8"), "{t}");
        let mut m = Metrics::new(Duration::from_secs(60), 3);
        m.observe(key(1), &copy_up(1, 1), t0);
        m.named(key(1), &container("a"), t0);
        m.observe(key(2), &copy_up(2, 1), t0);
        m.named(key(2), &container("b"), t0);
        m.gone(key(1), t0);
        m.tick(t0 + Duration::from_secs(61));
        assert_eq!(
            m.series_count(),
            1,
            "the gone container is forgotten, the live one kept"
        );
    }

    #[test]
    fn hostile_names_cannot_break_the_exposition() {
        let now = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 100);
        m.observe(key(1), &copy_up(1, 1), now);
        m.named(key(1), &container("x\"} 1\nfake_metric 2\\"), now);
        let t = text(m);
        assert!(!t.contains("\nfake_metric"), "{t}");
        assert!(t.contains(r#"container="x\"} 1\nfake_metric 2\\""#), "{t}");
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_drops_eof() {
        let now = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 100);
        m.observe(key(1), &copy_up(1, 1), now);
        m.named(key(1), &container("web"), now);
        let p = prometheus_text(&text(m));
        assert!(
            p.contains("# TYPE overlay_trace_copy_ups_total counter\n"),
            "{p}"
        );
        assert!(p.contains("# HELP overlay_trace_copy_ups_total "), "{p}");
        assert!(!p.contains("# EOF") && !p.contains("# UNIT"), "{p}");
        assert!(p.contains("# TYPE overlay_trace_lookup_duration_seconds histogram\n"));
    }

    #[test]
    fn buckets_are_cumulative_and_end_in_inf() {
        let now = Instant::now();
        let mut m = Metrics::new(Duration::from_secs(60), 100);
        for ns in [1_000, 10_000, 5_000_000_000] {
            let e = Event::try_from(&raw::lookup(1, "x", 1, 1, ns)[..]).unwrap();
            m.observe(key(1), &e, now);
        }
        m.named(key(1), &container("web"), now);
        let t = text(m);
        let bucket = |le: &str| {
            t.lines()
                .find(|l| {
                    l.starts_with("overlay_trace_lookup_duration_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(
            bucket("5e-6").or(bucket("0.000005")).as_deref(),
            Some("1"),
            "{t}"
        );
        // A value on a bound is in that bucket (le).
        assert_eq!(
            bucket("1e-5").or(bucket("0.00001")).as_deref(),
            Some("2"),
            "{t}"
        );
        assert_eq!(bucket("1.0").as_deref(), Some("2"), "{t}");
        assert_eq!(bucket("+Inf").as_deref(), Some("3"), "{t}");
    }
}

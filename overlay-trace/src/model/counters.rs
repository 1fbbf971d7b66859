//! One label set's numbers for Prometheus (`Series`: counters and fixed-bucket histograms, each
//! event's contribution defined once, as the report's), and the labels themselves, escaped as
//! the exposition formats require.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::stream::{
    event::{CopyUpKind, Event, LookupOutcome},
    names::Container,
};

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

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &Hist) {
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
    pub fn observe(&mut self, e: &Event) {
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
            // In the report's findings only.
            Event::Rename(_) => {}
        }
    }

    pub fn merge(&mut self, o: &Series) {
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

    pub fn other() -> Self {
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

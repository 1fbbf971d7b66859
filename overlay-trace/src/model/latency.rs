//! Latency distributions: a few exact values, then an HdrHistogram (`Latencies`), and the
//! percentiles reports show (`Latency`).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records exactly: one hour. Larger values are clamped.
const MAX_NS: u64 = 3_600_000_000_000;

/// 2 significant digits: 1% resolution, about 36 KiB per histogram (3 digits: 270 KiB).
const SIG_FIGS: u8 = 2;

/// Up to this many values are kept as they are; a histogram is made only beyond (most mounts of
/// a busy host see a handful of copy-ups: 8 bytes each instead of a 36 KiB histogram).
const FEW_MAX: usize = 64;

/// Latencies of one mount or group: nothing yet, a few exact values, or a histogram.
#[derive(Clone, Default)]
pub enum Latencies {
    #[default]
    Empty,
    Few(Vec<u64>),
    Live(Box<Histogram<u64>>),
}

fn new_histogram() -> Box<Histogram<u64>> {
    Box::new(Histogram::new_with_bounds(1, MAX_NS, SIG_FIGS).expect("static bounds"))
}

impl Latencies {
    pub fn record(&mut self, ns: u64) {
        let ns = ns.clamp(1, MAX_NS);
        match self {
            Self::Empty => *self = Self::Few(vec![ns]),
            Self::Few(v) if v.len() < FEW_MAX => v.push(ns),
            Self::Few(v) => {
                let mut h = new_histogram();
                for x in v.iter().copied().chain(std::iter::once(ns)) {
                    h.saturating_record(x);
                }
                *self = Self::Live(h);
            }
            Self::Live(h) => h.saturating_record(ns),
        }
    }

    pub fn merge(&mut self, other: &Latencies) {
        match other {
            Self::Few(v) => v.iter().for_each(|x| self.record(*x)),
            Self::Live(o) => match self {
                // Same bounds on both sides: cannot fail.
                Self::Live(h) => {
                    let _ = h.add(o.as_ref());
                }
                _ => {
                    let mut h = o.clone();
                    if let Self::Few(v) = self {
                        v.iter().for_each(|x| h.saturating_record(*x));
                    }
                    *self = Self::Live(h);
                }
            },
            Self::Empty => {}
        }
    }

    pub fn summary(&self) -> Latency {
        match self {
            Self::Empty => Latency::default(),
            Self::Few(v) => Latency::of_values(v),
            Self::Live(h) => Latency::of_histogram(h),
        }
    }

    /// The 99th percentile alone (`summary` computes every percentile a report shows).
    pub fn p99(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Few(v) => Latency::of_values(v).p99_ns,
            Self::Live(h) if h.is_empty() => 0,
            Self::Live(h) => quantiles(h, &[0.99])[0],
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Few(v) => v.len() as u64,
            Self::Live(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max(&self) -> u64 {
        self.summary().max_ns
    }

    /// What was recorded since `earlier`, a copy of these latencies taken before (values are
    /// only ever added, so the difference is exact: a suffix of a few values, or a histogram
    /// minus the earlier one).
    pub fn since(&self, earlier: &Latencies) -> Latencies {
        match (self, earlier) {
            (_, Self::Empty) => self.clone(),
            (Self::Few(now), Self::Few(was)) => {
                Self::Few(now.get(was.len()..).unwrap_or_default().to_vec())
            }
            (Self::Live(now), Self::Few(was)) => {
                let mut h = now.clone();
                let mut w = new_histogram();
                was.iter().for_each(|x| w.saturating_record(*x));
                let _ = h.subtract(w.as_ref());
                Self::Live(h)
            }
            (Self::Live(now), Self::Live(was)) => {
                let mut h = now.clone();
                // An error only if `earlier` was not a copy of these: then all of them.
                if h.subtract(was.as_ref()).is_err() {
                    return self.clone();
                }
                Self::Live(h)
            }
            // `earlier` holds more than these: it was not a copy of them.
            _ => self.clone(),
        }
    }

    /// Whether a histogram is held (memory accounting in tests).
    pub fn has_histogram(&self) -> bool {
        matches!(self, Self::Live(_))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p99_9_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
    /// Values recorded.
    #[serde(default)]
    pub count: u64,
    /// The distribution as [percentile, ns] points (`CURVE_PERCENTILES`), for plots.
    #[serde(default)]
    pub curve: Vec<(f64, u64)>,
}

impl Latency {
    pub fn of(l: &Latencies) -> Self {
        l.summary()
    }

    pub fn of_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let fixed = [0.5, 0.9, 0.99, 0.999];
        let mut wanted: Vec<f64> = fixed
            .iter()
            .copied()
            .chain(CURVE_PERCENTILES.iter().map(|p| p / 100.0))
            .collect();
        wanted.sort_by(f64::total_cmp);
        let values = quantiles(h, &wanted);
        let at = |q: f64| values[wanted.iter().position(|w| *w == q).expect("asked for")];
        Self {
            p50_ns: at(0.5),
            p90_ns: at(0.9),
            p99_ns: at(0.99),
            p99_9_ns: at(0.999),
            max_ns: h.max(),
            mean_ns: h.mean().round() as u64,
            count: h.len(),
            curve: CURVE_PERCENTILES
                .iter()
                .map(|p| (*p, at(p / 100.0)))
                .collect(),
        }
    }
}

/// Percentiles at which the latency curve is sampled.
pub const CURVE_PERCENTILES: &[f64] = &[
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0,
];

impl Latency {
    /// Exact percentiles of a few values (hdrhistogram's rule: the smallest value with at least
    /// ceil(q x n) values at or below it).
    pub fn of_values(values: &[u64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| v[(((q * n as f64).ceil() as usize).max(1)).min(n) - 1];
        Self {
            p50_ns: at(0.5),
            p90_ns: at(0.9),
            p99_ns: at(0.99),
            p99_9_ns: at(0.999),
            max_ns: v[n - 1],
            mean_ns: (v.iter().map(|x| *x as u128).sum::<u128>() as f64 / n as f64).round() as u64,
            count: n as u64,
            curve: CURVE_PERCENTILES
                .iter()
                .map(|p| (*p, at(p / 100.0)))
                .collect(),
        }
    }
}

/// `h.value_at_quantile(q)` for every `q` of `sorted` (ascending), in one pass over the
/// histogram instead of one per quantile (reports of hundreds of mounts stay quick).
pub fn quantiles(h: &Histogram<u64>, sorted: &[f64]) -> Vec<u64> {
    let total = h.len();
    // The count each quantile needs, as hdrhistogram computes it.
    let need: Vec<u64> = sorted
        .iter()
        .map(|q| ((q.min(1.0) * total as f64).ceil() as u64).max(1))
        .collect();
    let mut out = vec![0; sorted.len()];
    let mut next = 0;
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_since_last_iteration();
        while next < need.len() && seen >= need[next] {
            out[next] = h.highest_equivalent(v.value_iterated_to());
            next += 1;
        }
        if next == need.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_quantiles_equal_hdrhistograms_own() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 2).unwrap();
        let mut x: u64 = 12345;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            h.record(1 + (x >> 40) % 50_000_000).unwrap();
        }
        let qs = [0.01, 0.05, 0.1, 0.5, 0.9, 0.99, 0.995, 0.999, 1.0];
        let ours = quantiles(&h, &qs);
        for (q, v) in qs.iter().zip(ours) {
            assert_eq!(v, h.value_at_quantile(*q), "q {q}");
        }
    }

    #[test]
    fn a_few_values_then_a_histogram_give_the_same_percentiles() {
        let mut few = Latencies::default();
        let mut many = Latencies::default();
        for v in 1..=FEW_MAX as u64 {
            few.record(v * 1000);
            many.record(v * 1000);
        }
        many.record(1);
        assert!(!few.has_histogram() && many.has_histogram());
        let (f, m) = (few.summary(), many.summary());
        assert_eq!((f.count, m.count), (FEW_MAX as u64, FEW_MAX as u64 + 1));
        // Histograms keep 2 significant digits: within 1%.
        assert!(
            m.p50_ns.abs_diff(f.p50_ns) * 100 <= f.p50_ns,
            "{} vs {}",
            m.p50_ns,
            f.p50_ns
        );
        // What came after a copy is exactly the values recorded after it.
        let mut later = many.clone();
        for v in [5, 7_000_000] {
            later.record(v);
        }
        let since_few = later.since(&few);
        assert_eq!(since_few.len(), 3);
        let max = since_few.summary().max_ns;
        assert!((7_000_000..7_100_000).contains(&max), "{max}");
        let since_many = later.since(&many);
        assert_eq!(since_many.len(), 2);
        assert_eq!(since_many.summary().p50_ns, 5);
        assert_eq!(few.since(&few).len(), 0);
        assert_eq!(few.since(&Latencies::Empty).len(), FEW_MAX as u64);
        let mut merged = Latencies::default();
        merged.merge(&few);
        merged.merge(&many);
        assert_eq!(merged.len(), 2 * FEW_MAX as u64 + 1);
    }
}

//! `overlay-trace diff BASE NEW`: compares the metrics of two reports and decides whether NEW
//! regressed. A metric regresses when it grew by more than its allowed share AND, when both
//! reports carry a spread over repeats, NEW's best run is worse than BASE's worst: noise alone
//! does not fail a build.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{Result, anyhow, bail};

use super::report::{Report, Spread};

/// Metric names, what they measure, and their default allowed growth.
pub const METRICS: &[(&str, &str, f64)] = &[
    ("copy_ups", "number of copy-ups", 0.0),
    ("bytes", "bytes copied up", 0.0),
    ("total", "total copy-up time (ns)", 0.25),
    ("p50", "copy-up p50 (ns)", 0.25),
    ("p90", "copy-up p90 (ns)", 0.25),
    ("p99", "copy-up p99 (ns)", 0.25),
    ("max", "slowest copy-up (ns)", 0.50),
    ("lookups", "number of lookups", 0.0),
    ("lookup_p99", "lookup p99 (ns)", 0.25),
];

/// The metrics of one report, summed (counts, bytes, time) or taken as the worst mount
/// (percentiles) over its mounts.
pub fn metrics(r: &Report) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    // Totals: the mounts in detail plus the per-container rows of the mounts folded out of it.
    let sum = |f: &dyn Fn(&super::report::CopyUpReport, &super::report::LookupReport) -> u64| {
        // Saturating: a hostile report's counts must not wrap to a smaller total.
        r.mounts
            .iter()
            .map(|x| f(&x.copy_up, &x.lookup))
            .chain(r.retired.iter().map(|g| f(&g.copy_up, &g.lookup)))
            .fold(0, u64::saturating_add) as f64
    };
    let worst = |f: &dyn Fn(&super::report::MountReport) -> u64| {
        r.mounts.iter().map(f).max().unwrap_or(0) as f64
    };
    m.insert("copy_ups".into(), sum(&|c, _| c.count));
    m.insert("bytes".into(), sum(&|c, _| c.data_bytes));
    m.insert("total".into(), sum(&|c, _| c.total_ns));
    m.insert("p50".into(), worst(&|x| x.copy_up.latency.p50_ns));
    m.insert("p90".into(), worst(&|x| x.copy_up.latency.p90_ns));
    m.insert("p99".into(), worst(&|x| x.copy_up.latency.p99_ns));
    m.insert("max".into(), worst(&|x| x.copy_up.latency.max_ns));
    m.insert("lookups".into(), sum(&|_, l| l.count));
    m.insert("lookup_p99".into(), worst(&|x| x.lookup.latency.p99_ns));
    m
}

/// Parses `p99=10%,bytes=0%` into metric -> allowed growth (0.10, 0.0).
pub fn parse_limits(spec: &str) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, pct) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("bad limit {part:?}: expected METRIC=N%"))?;
        if !METRICS.iter().any(|(n, _, _)| *n == name) {
            let known: Vec<&str> = METRICS.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "unknown metric {name:?} in --max-regression (known: {})",
                known.join(", ")
            );
        }
        let v: f64 = pct
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| anyhow!("bad limit {part:?}: expected a percentage like 10%"))?;
        out.insert(name.to_string(), v / 100.0);
    }
    Ok(out)
}

#[derive(Debug, PartialEq)]
pub struct Row {
    pub metric: String,
    pub base: f64,
    pub new: f64,
    pub allowed: f64,
    pub regressed: bool,
}

fn spread(r: &Report, metric: &str) -> Option<Spread> {
    r.bench
        .as_ref()
        .and_then(|b| b.metrics.get(metric).copied())
}

/// Compares every metric. `limits` overrides the defaults of `METRICS`.
pub fn compare(base: &Report, new: &Report, limits: &BTreeMap<String, f64>) -> Vec<Row> {
    let (mb, mn) = (metrics(base), metrics(new));
    METRICS
        .iter()
        .map(|(name, _, default)| {
            let allowed = limits.get(*name).copied().unwrap_or(*default);
            // With repeats, compare medians and require NEW's best to be past BASE's worst.
            let (b, n, outside_noise) = match (spread(base, name), spread(new, name)) {
                (Some(sb), Some(sn)) => (sb.median, sn.median, sn.min > sb.max),
                _ => (mb[*name], mn[*name], true),
            };
            let grew_too_much = n > b * (1.0 + allowed) + f64::EPSILON;
            Row {
                metric: name.to_string(),
                base: b,
                new: n,
                allowed,
                regressed: grew_too_much && outside_noise,
            }
        })
        .collect()
}

pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>16} {:>16} {:>9} {:>8}  verdict",
        "metric", "base", "new", "change", "allowed"
    );
    for r in rows {
        let change = if r.base == 0.0 {
            if r.new == 0.0 {
                "0.0%".to_string()
            } else {
                "new".to_string()
            }
        } else {
            format!("{:+.1}%", (r.new / r.base - 1.0) * 100.0)
        };
        let _ = writeln!(
            out,
            "{:<12} {:>16.0} {:>16.0} {:>9} {:>7.0}%  {}",
            r.metric,
            r.base,
            r.new,
            change,
            r.allowed * 100.0,
            if r.regressed { "REGRESSED" } else { "ok" }
        );
    }
    let bad: Vec<&str> = rows
        .iter()
        .filter(|r| r.regressed)
        .map(|r| r.metric.as_str())
        .collect();
    if bad.is_empty() {
        let _ = writeln!(out, "no regression");
    } else {
        let _ = writeln!(out, "regressed: {}", bad.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::latency::Latency;
    use crate::stream::record::{EventCounts, SCHEMA_VERSION};
    use crate::views::report::{CopyUpReport, LookupReport, MountReport};

    fn report(count: u64, bytes: u64, p99: u64) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: "t".into(),
            kernel: "k".into(),
            traced_seconds: 1.0,
            events: EventCounts::default(),
            findings: Vec::new(),
            retired: Vec::new(),
            probes: Vec::new(),
            events_file_error: None,
            trace_file_error: None,
            incomplete: None,
            mounts: vec![MountReport {
                dev: "0:1".into(),
                mount_gen: 0,
                mount: None,
                container: None,
                gone: false,
                layers: None,
                mount_ns: None,
                copy_up: CopyUpReport {
                    count,
                    data_bytes: bytes,
                    total_ns: count * p99,
                    latency: Latency {
                        p50_ns: p99 / 2,
                        p90_ns: p99,
                        p99_ns: p99,
                        p99_9_ns: p99,
                        max_ns: p99,
                        mean_ns: p99,
                        count,
                        curve: vec![],
                    },
                    ..Default::default()
                },
                lookup: LookupReport::default(),
            }],
            bench: None,
        }
    }

    #[test]
    fn same_report_passes_and_growth_fails_naming_the_metric() {
        let base = report(10, 1000, 5000);
        assert!(
            compare(&base, &base, &BTreeMap::new())
                .iter()
                .all(|r| !r.regressed)
        );
        let rows = compare(&base, &report(10, 2000, 5000), &BTreeMap::new());
        let bad: Vec<&str> = rows
            .iter()
            .filter(|r| r.regressed)
            .map(|r| r.metric.as_str())
            .collect();
        assert_eq!(bad, vec!["bytes"]);
        assert!(render(&rows).contains("regressed: bytes"));
    }

    #[test]
    fn limits_loosen_and_tighten() {
        let base = report(10, 1000, 5000);
        let slower = report(10, 1000, 5400); // +8%
        assert!(
            compare(&base, &slower, &BTreeMap::new())
                .iter()
                .all(|r| !r.regressed)
        );
        let strict = parse_limits("p99=5%,bytes=0%").unwrap();
        let rows = compare(&base, &slower, &strict);
        assert!(rows.iter().find(|r| r.metric == "p99").unwrap().regressed);
    }

    #[test]
    fn recorded_spread_absorbs_noise() {
        let mut base = report(10, 1000, 5000);
        let mut new = report(10, 1000, 9000);
        let s = |median, min, max| Spread { median, min, max };
        for (r, sp) in [
            (&mut base, s(5000.0, 3000.0, 9500.0)),
            (&mut new, s(9000.0, 4000.0, 12000.0)),
        ] {
            r.bench = Some(crate::views::report::BenchInfo {
                scenario: "x".into(),
                scenario_source: String::new(),
                mount_options: String::new(),
                upper_fs: "tmpfs".into(),
                repeat: 5,
                metrics: [("p99".to_string(), sp)].into_iter().collect(),
            });
        }
        let rows = compare(&base, &new, &BTreeMap::new());
        assert!(
            !rows.iter().find(|r| r.metric == "p99").unwrap().regressed,
            "new's best run is within base's spread"
        );
    }

    #[test]
    fn bad_limits_are_clear_errors() {
        assert!(
            parse_limits("p99")
                .unwrap_err()
                .to_string()
                .contains("expected METRIC=N%")
        );
        assert!(
            parse_limits("p98=1%")
                .unwrap_err()
                .to_string()
                .contains(r#"unknown metric "p98""#)
        );
        assert!(
            parse_limits("p99=ten")
                .unwrap_err()
                .to_string()
                .contains("percentage")
        );
        assert_eq!(parse_limits("p99=10%, bytes=0%").unwrap()["p99"], 0.10);
    }
}

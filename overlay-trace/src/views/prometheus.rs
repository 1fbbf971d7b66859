//! The exposition of `Metrics` for Prometheus: every scrape copies a `Snapshot` under the lock
//! and encodes it without holding anything, through prometheus-client (OpenMetrics text);
//! `prometheus_text` turns that into the classic Prometheus text format for scrapers that do not
//! ask for OpenMetrics.

use std::fmt::Write as _;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::model::{
    counters::{Escaped, Hist, OUTCOMES, Series},
    series::Shared,
};

/// prometheus-client's view of `Shared`.
#[derive(Debug)]
struct View(Shared);

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
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
        let rows: Vec<(Pairs, &Series)> = m.rows.iter().map(|(l, s)| (l.pairs(), s)).collect();
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
            "kernel_skipped_runs",
            "fentry/fexit runs the kernel skipped (recursion guard): a call's entry (the call is lost), or another run",
            None,
            &[
                (vec![("run", Escaped("call_entry".into()))], n.skipped_calls),
                (vec![("run", Escaped("other".into()))], n.skipped_runs),
            ],
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
            &[(vec![], m.rows.len() as i64)],
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
        counter(
            &mut enc,
            "scrape_series_cut",
            "Series left out of /metrics bodies to keep them under --max-body-mib (the largest first)",
            None,
            &[(vec![], m.health.series_cut)],
        )?;
        gauge(
            &mut enc,
            "scrapes_in_progress",
            "Scrapes being encoded or sent when this one began, itself included",
            &[(vec![], m.health.scrapes_in_progress as i64)],
        )?;
        counter(
            &mut enc,
            "scrapes_refused",
            "Scrapes answered 503 because every place was held (clients reading slowly)",
            None,
            &[(vec![], m.health.scrapes_refused)],
        )?;
        let pending = m.pending;
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

pub mod cut;

#[cfg(test)]
mod tests;

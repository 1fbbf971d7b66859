//! Human-readable rendering. Only formats; every number comes from the report.

use std::fmt::Write as _;

use super::report::{CopyUpReport, GroupReport, LookupReport, MountReport, Report};
use crate::base::escape::escape;
use crate::model::latency::Latency;

/// Mounts shown in detail; the rest get one summary line (all of them are in `--json`).
pub const DETAIL_MOUNTS: usize = 10;
/// Summaries of gone mounts shown one line each; the rest get one line together.
pub const DETAIL_GROUPS: usize = 10;

/// "1.23 ms" style durations.
pub fn ns(v: u64) -> String {
    match v {
        0..1_000 => format!("{v} ns"),
        1_000..1_000_000 => format!("{:.1} µs", v as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", v as f64 / 1e6),
        _ => format!("{:.2} s", v as f64 / 1e9),
    }
}

pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut f = v as f64;
    let mut u = 0;
    while f >= 1024.0 && u < UNITS.len() - 1 {
        f /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v} B")
    } else {
        format!("{f:.1} {}", UNITS[u])
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ns(l.p50_ns),
        ns(l.p90_ns),
        ns(l.p99_ns),
        ns(l.p99_9_ns),
        ns(l.max_ns)
    )
}

fn mount(out: &mut String, m: &MountReport) {
    if m.gone {
        let _ = writeln!(out, "(unmounted while tracing)");
    }
    if let Some(c) = &m.container {
        let _ = writeln!(
            out,
            "container {}{} ({}, {}{}) image {}",
            escape(&c.name),
            // Every part escaped: a containerd task's id and namespace are its creator's choice,
            // and a report may come from another host.
            c.role
                .as_deref()
                .map(|r| format!(" [{}]", escape(r)))
                .unwrap_or_default(),
            escape(c.short_id()),
            escape(&c.runtime),
            c.namespace
                .as_deref()
                .map(|n| format!(" namespace {}", escape(n)))
                .unwrap_or_default(),
            if c.image.is_empty() {
                "-".to_string()
            } else {
                escape(&c.image)
            }
        );
    }
    if let Some(t) = m.mount_ns {
        let _ = writeln!(
            out,
            "  mounted in {}{}",
            ns(t),
            m.layers
                .map(|l| format!(" ({l} lower layers)"))
                .unwrap_or_default()
        );
    }
    match &m.mount {
        Some(mi) => {
            let _ = writeln!(out, "overlay {} (dev {})", escape(&mi.mount_point), m.dev);
            let _ = writeln!(
                out,
                "  upperdir {}  lower layers {}",
                mi.upperdir
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "(none, read-only)".into()),
                mi.lowerdirs.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "overlay dev {} (not named: gone from mountinfo before it was read)",
                m.dev
            );
        }
    }
    copy_ups(out, &m.copy_up);
    lookups(out, &m.lookup);
}

fn copy_ups(out: &mut String, c: &CopyUpReport) {
    if c.count == 0 {
        let _ = writeln!(out, "  copy-ups: none");
    }
    if c.waited > 0 {
        let _ = writeln!(
            out,
            "  waits: {} calls waited {} for another thread's copy-up of the same object",
            c.waited,
            ns(c.waited_ns)
        );
    }
    if c.count > 0 {
        let _ = writeln!(
            out,
            "  copy-ups: {}{}  data {}  total {}  (data copy {}{})",
            c.count,
            if c.failed > 0 {
                format!(" ({} failed)", c.failed)
            } else {
                String::new()
            },
            bytes(c.data_bytes),
            ns(c.total_ns),
            ns(c.data_ns),
            if c.sync_ns > 0 {
                format!(", of which sync {}", ns(c.sync_ns))
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "    latency {}", latency_line(&c.latency));
        let _ = writeln!(out, "    slowest:");
        let _ = writeln!(
            out,
            "    {:>10} {:>10} {:>10} {:>10}  {:<16} {:<10} path",
            "total", "data", "size", "copied", "process", "asked by"
        );
        for s in &c.slowest {
            let _ = writeln!(
                out,
                "    {:>10} {:>10} {:>10} {:>10}  {:<16} {:<10} {}{}",
                ns(s.total_ns),
                s.data_ns.map(ns).unwrap_or_else(|| "-".into()),
                if s.mode & 0o170000 == 0o040000 {
                    "dir".to_string()
                } else {
                    bytes(s.size.max(0) as u64)
                },
                s.data_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                format!("{}[{}]", escape(&s.comm), s.pid),
                s.syscall.as_deref().map_or_else(|| "-".into(), escape),
                // A path cut short keeps its leaf end: mark the missing start.
                if s.path_truncated {
                    format!("...{}", escape(&s.path))
                } else {
                    escape(&s.path)
                },
                if s.path_truncated {
                    " (path cut short)"
                } else {
                    ""
                },
            );
        }
        let asked: Vec<String> = c
            .by_trigger
            .iter()
            .map(|(k, t)| format!("{k} {} ({})", t.count, bytes(t.data_bytes)))
            .collect();
        if !asked.is_empty() {
            let _ = writeln!(out, "    asked by: {}", asked.join(", "));
        }
        by_layer(out, &c.by_layer);
    }
}

/// `layer 3/5  RUN pip install -r requirements.txt  412 copy-ups  38.2 MiB  1.9 s`: where the
/// copied-up objects came from, heaviest first.
fn by_layer(out: &mut String, layers: &[crate::views::report::LayerReport]) {
    if layers.is_empty() {
        return;
    }
    let _ = writeln!(out, "    by source layer:");
    for l in layers {
        let which = match (l.layer, l.image_layer) {
            (0, _) => "layer unknown".to_string(),
            (_, Some((k, n))) => format!("layer {k}/{n}"),
            (i, None) => format!("lower {i}/{}", l.of),
        };
        let what = match (&l.created_by, &l.lowerdir) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => String::new(),
        };
        // An instruction can be long (a whole shell script): its start says enough.
        let mut what = escape(&what);
        if what.chars().count() > 70 {
            what = format!("{}...", what.chars().take(67).collect::<String>());
        }
        let _ = writeln!(
            out,
            "      {which:<14} {what:<70}  {:>5} copy-up{}  {:>9}  {:>9}",
            l.count,
            if l.count == 1 { " " } else { "s" },
            bytes(l.data_bytes),
            ns(l.total_ns),
        );
    }
}

fn lookups(out: &mut String, l: &LookupReport) {
    if l.count == 0 {
        let _ = writeln!(out, "  lookups: none");
    } else {
        let _ = writeln!(
            out,
            "  lookups: {}  negative {:.1}%",
            l.count,
            l.negative_share * 100.0
        );
        let _ = writeln!(out, "    latency {}", latency_line(&l.latency));
        let outcomes: Vec<String> = l.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "    outcomes: {}", outcomes.join(", "));
        let layers: Vec<String> = l
            .layers_consulted
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "    layers consulted: {}", layers.join(", "));
    }
}

/// "12 copy-ups 3.0 MiB 45.00 ms, 800 lookups": the one-line form of a group of mounts.
fn totals_line(copy_ups: u64, data: u64, total_ns: u64, lookups: u64) -> String {
    format!(
        "{copy_ups} copy-ups  {}  {},  {lookups} lookups",
        bytes(data),
        ns(total_ns)
    )
}

fn group(out: &mut String, g: &GroupReport) {
    let _ = writeln!(
        out,
        "  {}{}: {} mount{}{}  {}",
        escape(&g.group),
        g.container
            .as_ref()
            .filter(|c| !c.image.is_empty())
            .map(|c| format!(" image {}", escape(&c.image)))
            .unwrap_or_default(),
        g.mounts,
        if g.mounts == 1 { "" } else { "s" },
        g.mount_ns_total
            .checked_div(g.mounts_timed)
            .map(|avg| format!(" (mounting {} on average)", ns(avg)))
            .unwrap_or_default(),
        totals_line(
            g.copy_up.count,
            g.copy_up.data_bytes,
            g.copy_up.total_ns,
            g.lookup.count
        ),
    );
    if g.copy_up.count > 0 {
        let _ = writeln!(
            out,
            "    copy-up latency {}",
            latency_line(&g.copy_up.latency)
        );
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    header::header(&mut out, r);
    out.push('\n');
    findings::findings(&mut out, &r.findings);
    if r.mounts.is_empty() && r.retired.is_empty() {
        let _ = writeln!(out, "\nno overlayfs activity seen");
    }
    for m in r.mounts.iter().take(DETAIL_MOUNTS) {
        out.push('\n');
        mount(&mut out, m);
    }
    if r.mounts.len() > DETAIL_MOUNTS {
        let rest = &r.mounts[DETAIL_MOUNTS..];
        let sum = |f: fn(&MountReport) -> u64| rest.iter().map(f).fold(0, u64::saturating_add);
        let _ = writeln!(
            out,
            "\n... and {} more mounts: {} (all of them in --json)",
            rest.len(),
            totals_line(
                sum(|m| m.copy_up.count),
                sum(|m| m.copy_up.data_bytes),
                sum(|m| m.copy_up.total_ns),
                sum(|m| m.lookup.count)
            )
        );
    }
    if !r.retired.is_empty() {
        let n = r
            .retired
            .iter()
            .map(|g| g.mounts)
            .fold(0, u64::saturating_add);
        let _ = writeln!(
            out,
            "\n{n} more mounts (gone long before the end), by container:"
        );
        for g in r.retired.iter().take(DETAIL_GROUPS) {
            group(&mut out, g);
        }
        if r.retired.len() > DETAIL_GROUPS {
            let rest = &r.retired[DETAIL_GROUPS..];
            let sum = |f: fn(&GroupReport) -> u64| rest.iter().map(f).fold(0, u64::saturating_add);
            let _ = writeln!(
                out,
                "  ... and {} more containers, {} mounts: {}",
                rest.len(),
                sum(|g| g.mounts),
                totals_line(
                    sum(|g| g.copy_up.count),
                    sum(|g| g.copy_up.data_bytes),
                    sum(|g| g.copy_up.total_ns),
                    sum(|g| g.lookup.count)
                )
            );
        }
    }
    out
}

pub mod findings;
mod header;

#[cfg(test)]
mod tests;

//! Human-readable rendering. Only formats; every number comes from the report.

use std::fmt::Write as _;

use super::{Latency, MountReport, Report};

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
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut f = v as f64;
    let mut u = 0;
    while f >= 1024.0 && u < UNITS.len() - 1 {
        f /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v} B") } else { format!("{f:.1} {}", UNITS[u]) }
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
    if let Some(c) = &m.container {
        let _ = writeln!(
            out,
            "container {}{} ({}, {}{}) image {}",
            c.name,
            c.role.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default(),
            c.short_id(),
            c.runtime,
            c.namespace.as_deref().map(|n| format!(" namespace {n}")).unwrap_or_default(),
            if c.image.is_empty() { "-" } else { &c.image }
        );
    }
    if let Some(t) = m.mount_ns {
        let _ = writeln!(out, "  mounted in {}{}", ns(t), m.layers.map(|l| format!(" ({l} lower layers)")).unwrap_or_default());
    }
    match &m.mount {
        Some(mi) => {
            let _ = writeln!(out, "overlay {} (dev {})", mi.mount_point, m.dev);
            let _ = writeln!(
                out,
                "  upperdir {}  lower layers {}",
                mi.upperdir.as_deref().unwrap_or("(none, read-only)"),
                mi.lowerdirs.len()
            );
        }
        None => {
            let _ = writeln!(out, "overlay dev {} (unmounted before it could be named)", m.dev);
        }
    }
    let c = &m.copy_up;
    if c.count == 0 {
        let _ = writeln!(out, "  copy-ups: none");
    } else {
        let _ = writeln!(
            out,
            "  copy-ups: {}{}  data {}  total {}  (data copy {})",
            c.count,
            if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() },
            bytes(c.data_bytes),
            ns(c.total_ns),
            ns(c.data_ns)
        );
        let _ = writeln!(out, "    latency {}", latency_line(&c.latency));
        let _ = writeln!(out, "    slowest:");
        let _ = writeln!(out, "    {:>10} {:>10} {:>10} {:>10}  {:<16} path", "total", "data", "size", "copied", "process");
        for s in &c.slowest {
            let _ = writeln!(
                out,
                "    {:>10} {:>10} {:>10} {:>10}  {:<16} {}{}",
                ns(s.total_ns),
                s.data_ns.map(ns).unwrap_or_else(|| "-".into()),
                if s.mode & 0o170000 == 0o040000 { "dir".to_string() } else { bytes(s.size.max(0) as u64) },
                s.data_bytes.map(bytes).unwrap_or_else(|| "-".into()),
                format!("{}[{}]", s.comm, s.pid),
                s.path,
                if s.path_truncated { " (truncated)" } else { "" },
            );
        }
    }
    let l = &m.lookup;
    if l.count == 0 {
        let _ = writeln!(out, "  lookups: none");
    } else {
        let _ = writeln!(out, "  lookups: {}  negative {:.1}%", l.count, l.negative_share * 100.0);
        let _ = writeln!(out, "    latency {}", latency_line(&l.latency));
        let outcomes: Vec<String> = l.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "    outcomes: {}", outcomes.join(", "));
        let layers: Vec<String> = l.layers_consulted.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "    layers consulted: {}", layers.join(", "));
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let e = &r.events;
    let _ = writeln!(
        out,
        "overlay-trace {} on kernel {}: traced {:.1} s, {} copy-ups, {} lookups",
        r.tool_version, r.kernel, r.traced_seconds, e.copy_up, e.lookup
    );
    if e.lost() > 0 || e.kernel_read_errors > 0 {
        let _ = writeln!(
            out,
            "LOST: {} copy-up and {} lookup events dropped (ring buffer full), {} calls untracked, \
             {} undecodable records, {} failed kernel reads",
            e.dropped_copy_up, e.dropped_lookup + e.dropped_mount, e.untracked_calls, e.decode_errors, e.kernel_read_errors
        );
    } else {
        let _ = writeln!(out, "no events lost");
    }
    if r.mounts.is_empty() {
        let _ = writeln!(out, "\nno overlayfs activity seen");
    }
    for m in &r.mounts {
        out.push('\n');
        mount(&mut out, m);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        aggregate::Aggregate,
        events::{Dev, Event, raw},
        mounts::OverlayMount,
        report::{EventCounts, json},
    };
    use overlay_trace_common::{LOOKUP_NEGATIVE, LOOKUP_UPPER};

    fn sample() -> Report {
        let mut a = Aggregate::default();
        a.add(&Event::try_from(raw::mount(52, 2_500_000).as_slice()).unwrap());
        for (p, d) in [("etc/passwd", 3_000u64), ("var/log/big.log", 9_000_000)] {
            a.add(&Event::try_from(raw::copy_up(52, p, 1 << 20, 1 << 20, d).as_slice()).unwrap());
        }
        a.add(&Event::try_from(raw::lookup(52, "nope", LOOKUP_NEGATIVE, 3, 800).as_slice()).unwrap());
        a.add(&Event::try_from(raw::lookup(52, "passwd", LOOKUP_UPPER, 1, 400).as_slice()).unwrap());
        let key = crate::aggregate::MountKey { dev: Dev::from_kernel(52), generation: 1 };
        let mut names = BTreeMap::new();
        names.insert(
            key,
            OverlayMount {
                dev: Dev::from_kernel(52),
                mount_point: "/merged".into(),
                lowerdirs: vec!["/l1".into(), "/l2".into(), "/l3".into()],
                upperdir: Some("/upper".into()),
                workdir: Some("/work".into()),
            },
        );
        let mut containers = BTreeMap::new();
        containers.insert(
            key,
            crate::containers::Container {
                runtime: "docker".into(),
                id: "153bf8403972b4a60b573a9e331118a8".into(),
                name: "web".into(),
                image: "base:1".into(),
                namespace: None,
                role: None,
            },
        );
        Report::build(&a, &names, &containers, "6.1.0".into(), 2.0, EventCounts { dropped_lookup: 3, ..Default::default() })
    }

    #[test]
    fn text_names_mount_slowest_first_and_losses() {
        let t = render(&sample());
        assert!(t.contains("container web (153bf8403972, docker) image base:1\n  mounted in 2.50 ms (3 lower layers)\noverlay /merged (dev 0:52)"), "{t}");
        assert!(t.contains("lower layers 3"), "{t}");
        assert!(t.contains("copy-ups: 2  data 2.0 MiB"), "{t}");
        let big = t.find("/var/log/big.log").unwrap();
        let small = t.find("/etc/passwd").unwrap();
        assert!(big < small, "slowest first:\n{t}");
        assert!(t.contains("LOST: 0 copy-up and 3 lookup events dropped"), "{t}");
        assert!(t.contains("negative 50.0%"), "{t}");
        assert!(t.contains("layers consulted: 1: 1, 3: 1"), "{t}");
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let back = json::from_str(&json::to_string(&r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.mounts[0].copy_up.slowest[0].path, "/var/log/big.log");
    }

    #[test]
    fn json_rejects_bad_input_clearly() {
        assert_eq!(json::from_str("{").unwrap_err().to_string(), "not valid JSON");
        assert!(json::from_str("{\"schema_version\": 99}").unwrap_err().to_string().contains("schema_version 99 is not supported"));
        assert!(json::from_str("{}").unwrap_err().to_string().contains("no schema_version"));
        assert_eq!(json::from_str("{\"schema_version\": 1}").unwrap_err().to_string(), "malformed overlay-trace report");
    }

    #[test]
    fn units() {
        assert_eq!(ns(999), "999 ns");
        assert_eq!(ns(1_500), "1.5 µs");
        assert_eq!(ns(2_500_000), "2.50 ms");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(16 << 20), "16.0 MiB");
    }
}

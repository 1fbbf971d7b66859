//! One stream, one truth: the same records folded by `run`'s collector give the report, the
//! `serve` metrics and, written to an events file and replayed, the same report again. Streams
//! are generated: copy-ups that succeed, fail or only wait, lookups of every outcome, mounts that
//! succeed or fail (device numbers reused), naming answers that arrive late or never, source
//! layers learned after the fact.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use overlay_trace::stream::record::{EventCounts, MountKey, Record};

use overlay_trace::stream::names::Container;

use overlay_trace::enrich::source_layers::LayerAsk;

use overlay_trace::stream::event::{Dev, raw};

use overlay_trace::model::replay;

use overlay_trace::views::report::Report;

use overlay_trace::views::{json, prometheus};

use overlay_trace::model::fold::Collector;

use overlay_trace::enrich::answer::Named;

use overlay_trace::stream::output::EventsFile;

use overlay_trace::model::series::{Metrics, SETTLE_AFTER};
use overlay_trace_common::{
    COPY_UP_COPIED, COPY_UP_WAITED, LOOKUP_ERROR, LOOKUP_LOWER, LOOKUP_NEGATIVE,
    LOOKUP_POSITIVE_UNKNOWN_LAYER, LOOKUP_UPPER,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    CopyUp {
        dev: u32,
        kind: u8,
        bytes: i64,
        ns: u64,
    },
    Lookup {
        dev: u32,
        outcome: u32,
        layers: u32,
        ns: u64,
    },
    Mount {
        dev: u32,
        failed: bool,
        ns: u64,
    },
    /// The naming side's answers, for the device's current mount.
    Named {
        dev: u32,
        container: u8,
    },
    Unclaimed {
        dev: u32,
    },
    Gone {
        dev: u32,
    },
    /// A rename overlayfs refused.
    Rename {
        dev: u32,
    },
    /// The source layer of the oldest copy-up (or rename) still waiting for one.
    Layer {
        layer: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 1u32..5;
    prop_oneof![
        6 => (dev.clone(), 0u8..4, 0i64..5_000_000, 1u64..2_000_000_000)
            .prop_map(|(dev, kind, bytes, ns)| Op::CopyUp { dev, kind, bytes, ns }),
        6 => (dev.clone(), 0u32..5, 1u32..6, 1u64..50_000_000)
            .prop_map(|(dev, outcome, layers, ns)| Op::Lookup { dev, outcome, layers, ns }),
        2 => (dev.clone(), proptest::bool::weighted(0.2), 1u64..500_000_000)
            .prop_map(|(dev, failed, ns)| Op::Mount { dev, failed, ns }),
        2 => (dev.clone(), 0u8..3).prop_map(|(dev, container)| Op::Named { dev, container }),
        1 => dev.clone().prop_map(|dev| Op::Unclaimed { dev }),
        1 => dev.clone().prop_map(|dev| Op::Gone { dev }),
        1 => dev.prop_map(|dev| Op::Rename { dev }),
        2 => (1u32..4).prop_map(|layer| Op::Layer { layer }),
    ]
}

fn container(i: u8) -> Container {
    Container {
        runtime: "docker".into(),
        id: format!("{i:064}"),
        name: format!("c{i}"),
        image: "img:1".into(),
        ..Default::default()
    }
}

const OUTCOMES: [u32; 5] = [
    LOOKUP_NEGATIVE,
    LOOKUP_UPPER,
    LOOKUP_LOWER,
    LOOKUP_POSITIVE_UNKNOWN_LAYER,
    LOOKUP_ERROR,
];

/// Sums of every series of `name` in an OpenMetrics exposition, by the label `by` (or "").
fn sums(text: &str, name: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        let key = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{by}=\"")))
            .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_string())
            .unwrap_or_default();
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    out
}

fn total(text: &str, name: &str) -> f64 {
    sums(text, name, "").values().sum()
}

fn fold(ops: &[Op]) -> (Report, String, Report) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let shared = Arc::new(Mutex::new(Metrics::new(Duration::from_secs(3600), 100_000)));
    let mut c = Collector {
        events: Some(EventsFile::create(&path).unwrap()),
        metrics: Some(shared.clone()),
        ..Default::default()
    };
    c.events.as_mut().unwrap().record(&Record::Header {
        schema_version: overlay_trace::stream::record::SCHEMA_VERSION,
        tool_version: "t".into(),
        kernel: "k".into(),
    });
    // Asks waiting for a layer: a copy-up (Ok) or a refused rename (Err: its arrival number).
    let mut waiting_layer: std::collections::VecDeque<(MountKey, Result<_, u64>)> =
        Default::default();
    let key = |c: &Collector, dev: u32| c.agg.current(Dev::from_kernel(dev));
    for (i, op) in ops.iter().enumerate() {
        let path = format!("d/f{i}");
        match op {
            Op::CopyUp {
                dev,
                kind,
                bytes,
                ns,
            } => {
                let (ret, outcome) = match kind {
                    0 | 1 => (0, COPY_UP_COPIED),
                    2 => (-28, COPY_UP_COPIED),
                    // A failure that never reached the copy, as the kernel side used to send it.
                    _ => (-75, COPY_UP_WAITED),
                };
                let outcome = if *kind == 1 { COPY_UP_WAITED } else { outcome };
                let data = if *bytes % 3 == 0 { -1 } else { *bytes };
                c.take(&raw::copy_up_ending(
                    *dev, &path, *bytes, data, *ns, ret, outcome,
                ));
            }
            Op::Lookup {
                dev,
                outcome,
                layers,
                ns,
            } => {
                c.take(&raw::lookup(
                    *dev,
                    "n",
                    OUTCOMES[*outcome as usize],
                    *layers,
                    *ns,
                ));
            }
            Op::Mount { dev, failed, ns } => {
                c.take(&raw::mount_ending(*dev, *ns, if *failed { -12 } else { 0 }));
            }
            Op::Named { dev, container: i } => {
                let k = key(&c, *dev);
                c.apply(Named::Container {
                    key: k,
                    container: container(*i),
                });
            }
            Op::Unclaimed { dev } => {
                let k = key(&c, *dev);
                c.apply(Named::Unclaimed { key: k });
            }
            Op::Gone { dev } => {
                let k = key(&c, *dev);
                c.apply(Named::Gone { key: k });
            }
            Op::Rename { dev } => {
                c.take(&raw::rename_refused(*dev, &path));
            }
            Op::Layer { layer } => match waiting_layer.pop_front() {
                Some((key, Ok(copy_up))) => {
                    c.apply(Named::SourceLayer {
                        key,
                        copy_up,
                        layer: *layer,
                    });
                }
                Some((key, Err(seq))) => {
                    c.apply(Named::RenameLayer {
                        key,
                        seq,
                        layer: *layer,
                    });
                }
                None => {}
            },
        }
        c.copied_unnamed.clear();
        for a in c.layer_asks.drain(..) {
            match a {
                LayerAsk::CopyUp { key, copy_up, .. } => {
                    waiting_layer.push_back((key, Ok(copy_up)))
                }
                LayerAsk::Rename { key, seq, .. } => waiting_layer.push_back((key, Err(seq))),
                _ => {}
            }
        }
    }
    // Every mount settled: no runtime claims the rest.
    shared
        .lock()
        .unwrap()
        .tick(Instant::now() + SETTLE_AFTER + Duration::from_secs(1));
    let live = Report::build(&c.agg, "k".into(), 1.0, EventCounts::default());
    let mut out = c.events.take().unwrap();
    out.record(&Record::End {
        traced_seconds: 1.0,
        events: live.events.clone(),
        probes: Vec::new(),
    });
    assert_eq!(out.finish(), None);
    let replayed = replay::replay(&path).unwrap();
    assert_eq!(replayed.warning, None);
    let replayed = Report::replayed(replayed);
    let text = prometheus::openmetrics(&prometheus::registry(shared));
    (live, text, replayed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn run_serve_and_replay_give_the_same_numbers(ops in proptest::collection::vec(op(), 1..400)) {
        let (live, text, replayed) = fold(&ops);
        prop_assert_eq!(json::to_string(&replayed), json::to_string(&live));

        // The report's totals: mounts in detail plus retired rows.
        let copy = live.mounts.iter().map(|m| &m.copy_up)
            .chain(live.retired.iter().map(|g| &g.copy_up));
        let (mut count, mut failed, mut waited, mut bytes, mut total_ns, mut data_ns) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for c in copy {
            count += c.count;
            failed += c.failed;
            waited += c.waited;
            bytes += c.data_bytes;
            total_ns += c.total_ns;
            data_ns += c.data_ns;
        }
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut lookups = 0;
        for l in live.mounts.iter().map(|m| &m.lookup).chain(live.retired.iter().map(|g| &g.lookup)) {
            lookups += l.count;
            for (k, v) in &l.outcomes {
                *outcomes.entry(k.replace("positive_layer_unknown", "positive")).or_default() += v;
            }
        }
        let mounted = live.mounts.iter().filter(|m| m.mount_ns.is_some()).count() as u64
            + live.retired.iter().map(|g| g.mounts_timed).sum::<u64>();

        prop_assert_eq!(total(&text, "overlay_trace_copy_ups_total"), count as f64);
        prop_assert_eq!(total(&text, "overlay_trace_copy_up_failures_total"), failed as f64);
        prop_assert_eq!(total(&text, "overlay_trace_copy_up_waits_total"), waited as f64);
        prop_assert_eq!(total(&text, "overlay_trace_copy_up_bytes_total"), bytes as f64);
        prop_assert_eq!(total(&text, "overlay_trace_copy_up_duration_seconds_count"), count as f64);
        let sum = total(&text, "overlay_trace_copy_up_duration_seconds_sum");
        prop_assert!((sum - total_ns as f64 / 1e9).abs() < 1e-6 * (1.0 + sum), "{} vs {}", sum, total_ns);
        let dsum = total(&text, "overlay_trace_data_copy_duration_seconds_sum");
        prop_assert!((dsum - data_ns as f64 / 1e9).abs() < 1e-6 * (1.0 + dsum), "{} vs {}", dsum, data_ns);
        prop_assert_eq!(total(&text, "overlay_trace_lookup_duration_seconds_count"), lookups as f64);
        let by_outcome: BTreeMap<String, u64> = sums(&text, "overlay_trace_lookups_total", "outcome")
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(k, v)| (k, v as u64))
            .collect();
        prop_assert_eq!(by_outcome, outcomes.into_iter().filter(|(_, v)| *v > 0).collect::<BTreeMap<_, _>>());
        prop_assert_eq!(total(&text, "overlay_trace_mounts_total"), mounted as f64);
        prop_assert_eq!(total(&text, "overlay_trace_mount_duration_seconds_count"), mounted as f64);
        prop_assert_eq!(
            total(&text, "overlay_trace_mounts_total") + total(&text, "overlay_trace_mount_failures_total"),
            live.events.mount as f64
        );
        prop_assert_eq!(total(&text, "overlay_trace_mounts_pending"), 0.0);
    }
}

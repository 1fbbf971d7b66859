//! `serve`'s scrape: encoding /metrics with 1,000 live containers' series (each with its
//! copy-up, data-copy, lookup, layers and mount histograms). Goal: 50 ms per scrape or less.
//! Prints the ratio to the goal after criterion.

use std::{
    hint::black_box,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use criterion::Criterion;
use overlay_trace::model::series::Metrics;
use overlay_trace::stream::event::{Dev, Event, raw};
use overlay_trace::stream::names::Container;
use overlay_trace::stream::record::MountKey;
use overlay_trace::views::prometheus::{openmetrics, prometheus_text, registry};
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE};

const CONTAINERS: u32 = 1_000;
const GOAL_MS: f64 = 50.0;

fn metrics() -> Metrics {
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(3600), 2_000);
    for i in 0..CONTAINERS {
        let key = MountKey {
            dev: Dev {
                major: 0,
                minor: 100 + i,
            },
            generation: 1,
        };
        let dev = 100 + i;
        let mut recs = vec![raw::mount(dev, 2_000_000)];
        for k in 0..20u64 {
            recs.push(raw::copy_up(dev, "etc/x", 4096, 4096, 50_000 * (k + 1)));
            recs.push(raw::lookup(
                dev,
                "n",
                if k % 2 == 0 {
                    LOOKUP_NEGATIVE
                } else {
                    LOOKUP_LOWER
                },
                1 + (k % 4) as u32,
                2_000 * (k + 1),
            ));
        }
        for r in recs {
            m.observe(key, &Event::try_from(&r[..]).unwrap(), now);
        }
        m.named(
            key,
            &Container {
                runtime: "containerd".into(),
                id: format!("{i:064x}"),
                name: format!("web-{i}/app"),
                image: format!("registry.local/team/web:{}", i % 13),
                namespace: Some("prod".into()),
                pod: Some(format!("web-{i}")),
                ..Default::default()
            },
            now,
        );
    }
    m
}

fn main() {
    let shared = Arc::new(Mutex::new(metrics()));
    let r = registry(shared);
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("scrape 1000 containers (OpenMetrics)", |b| {
        b.iter(|| black_box(openmetrics(&r)))
    });
    c.bench_function("scrape 1000 containers (Prometheus text)", |b| {
        b.iter(|| black_box(prometheus_text(&openmetrics(&r))))
    });
    c.final_summary();

    let rounds = 20;
    let t = Instant::now();
    let mut size = 0;
    for _ in 0..rounds {
        size = black_box(prometheus_text(&openmetrics(&r))).len();
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    println!(
        "scrape with {CONTAINERS} containers: {ms:.1} ms per scrape ({:.1} MiB of text); goal {GOAL_MS} ms: {:.2} of the goal",
        size as f64 / (1 << 20) as f64,
        ms / GOAL_MS
    );
}

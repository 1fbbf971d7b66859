//! Userspace throughput: decode + fold (the collector every command uses: the aggregate, the
//! source-layer asks, the naming evidence), one core. Goal: 2M events/s or more, and memory
//! bounded (under 64 MiB RSS after 1M events). Prints the ratios to the goals after criterion.

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, Throughput};
use overlay_trace::model::fold::Collector;
use overlay_trace::stream::event::raw;
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE, NO_DATA_COPY};

const GOAL_EVENTS_PER_SEC: f64 = 2_000_000.0;
const GOAL_RSS_MIB: f64 = 64.0;

/// A realistic mix: 9 lookups (a third negative) for each copy-up, over 4 mounts.
fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let dev = (i % 4) as u32 + 40;
            if i % 10 == 0 {
                let data = if i % 20 == 0 { NO_DATA_COPY } else { 4096 };
                raw::copy_up(
                    dev,
                    &format!("usr/lib/x86_64-linux-gnu/lib{}.so.6", i % 997),
                    4096,
                    data,
                    1000 + (i % 5000) as u64,
                )
            } else {
                let outcome = if i % 3 == 0 {
                    LOOKUP_NEGATIVE
                } else {
                    LOOKUP_LOWER
                };
                raw::lookup(
                    dev,
                    &format!("name{}", i % 4096),
                    outcome,
                    (i % 4) as u32 + 1,
                    200 + (i % 3000) as u64,
                )
            }
        })
        .collect()
}

fn run(recs: &[Vec<u8>], fold: &mut Collector) {
    for r in recs {
        black_box(fold.take(r));
        // What the session hands the enrichment threads (their queues are not measured).
        fold.copied_unnamed.clear();
        fold.layer_asks.clear();
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let recs = records(100_000);
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("decode_aggregate");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("100k_mixed_events", |b| {
        b.iter(|| {
            let mut agg = Collector::default();
            run(black_box(&recs), &mut agg);
            agg
        })
    });
    g.finish();
    c.final_summary();

    // One aggregate fed 1M events (the records are reused, so RSS measures the aggregate's growth).
    let before = rss_mib();
    let mut agg = Collector::default();
    let start = Instant::now();
    for _ in 0..10 {
        run(&recs, &mut agg);
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = 1_000_000.0 / secs;
    let rss = rss_mib();
    println!(
        "decode+fold: {:.2} M events/s on one core; ratio to the 2 M/s goal: {:.2}",
        rate / 1e6,
        rate / GOAL_EVENTS_PER_SEC
    );
    println!(
        "memory: RSS {rss:.1} MiB after 1M events (aggregate grew {:.1} MiB); ratio to the 64 MiB goal: {:.2}",
        rss - before,
        rss / GOAL_RSS_MIB
    );
    black_box(agg);

    // 10,000 mount generations (device numbers reused, each mount with copy-ups and lookups),
    // as a day of container starts on a CI runner: throughput and memory per generation.
    let per_dev = generations();
    let before = rss_mib();
    let mut agg = Collector::default();
    let start = Instant::now();
    let mut events = 0;
    for g in 0..10_000 {
        let recs = &per_dev[g % per_dev.len()];
        run(recs, &mut agg);
        events += recs.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let rss = rss_mib();
    let rate = events as f64 / secs;
    println!(
        "10k mount generations: {:.2} M events/s (ratio to the 2 M/s goal: {:.2}); RSS {rss:.1} MiB, {:.1} KiB per generation \
         (grew {:.1} MiB); ratio to the 64 MiB goal: {:.2}",
        rate / 1e6,
        rate / GOAL_EVENTS_PER_SEC,
        (rss - before) * 1024.0 / 10_000.0,
        rss - before,
        rss / GOAL_RSS_MIB
    );
    black_box(agg);
}

/// The records of one mount generation on each of 64 reused device numbers: a mount, 3 copy-ups
/// and 20 lookups. Generation g replays the records of device g % 64 (the mount event starts a
/// new generation each time).
fn generations() -> Vec<Vec<Vec<u8>>> {
    (0..64u32)
        .map(|d| {
            let dev = 200 + d;
            let mut out = vec![raw::mount(dev, 1000)];
            for k in 0..3u64 {
                out.push(raw::copy_up(
                    dev,
                    &format!("etc/f{k}"),
                    4096,
                    4096,
                    5000 + k * 31 + u64::from(d),
                ));
            }
            for k in 0..20u32 {
                out.push(raw::lookup(
                    dev,
                    &format!("n{k}"),
                    if k % 3 == 0 {
                        LOOKUP_NEGATIVE
                    } else {
                        LOOKUP_LOWER
                    },
                    2,
                    300 + u64::from(k),
                ));
            }
            out
        })
        .collect()
}

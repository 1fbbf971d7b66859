//! A long run without a kernel: the collector fed 10,000 mount generations of synthetic events
//! (device numbers reused, containers coming and going, mounts never seen unmounted), as a day on
//! a busy CI runner would. Totals must stay exact and memory bounded. Its own test binary, so the
//! process's peak RSS is this run's alone.

mod common;
use common::vm_hwm_kib;

use overlay_trace::model::aggregate::{GONE_DETAIL_MAX, GROUPS_MAX, LIVE_MOUNTS_MAX};

use overlay_trace::stream::names::Container;

use overlay_trace::stream::event::{Dev, raw};

use overlay_trace::stream::record::EventCounts;

use overlay_trace::views::report::Report;

use overlay_trace::views::text;

use overlay_trace::model::fold::Collector;

use overlay_trace::enrich::answer::Named;
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE};

#[test]
fn ten_thousand_mount_generations_keep_totals_exact_and_memory_bounded() {
    const GENERATIONS: u32 = 10_000;
    const STRAYS: u32 = 1_000;
    let mut c = Collector::default();
    let (mut copy_ups, mut bytes, mut lookups) = (0u64, 0u64, 0u64);
    for g in 0..GENERATIONS {
        // 64 device numbers, reused as Docker reuses them.
        let dev = 100 + g % 64;
        c.take(&raw::mount(dev, 1_000 + u64::from(g)));
        let key = c.agg.current(Dev::from_kernel(dev));
        if g % 2 == 0 {
            let container = Container {
                runtime: "docker".into(),
                id: format!("{g:064x}"),
                name: format!("job-{g}"),
                image: format!("ci/image:{}", g % 7),
                ..Default::default()
            };
            c.apply(Named::Container { key, container });
        }
        for k in 0..3u64 {
            c.take(&raw::copy_up(
                dev,
                &format!("usr/lib/lib{k}.so"),
                4096,
                4096,
                10_000 + k * 997 + u64::from(g),
            ));
            copy_ups += 1;
            bytes += 4096;
        }
        for k in 0..5u32 {
            let outcome = if k % 2 == 0 {
                LOOKUP_NEGATIVE
            } else {
                LOOKUP_LOWER
            };
            c.take(&raw::lookup(
                dev,
                &format!("n{k}"),
                outcome,
                2,
                500 + u64::from(k),
            ));
            lookups += 1;
        }
        // Half the mounts are seen going away before their device number is reused.
        if g % 4 == 1 {
            c.apply(Named::Gone { key });
        }
    }
    // Mounts never seen unmounted (another namespace): the cap on live detail folds them.
    for s in 0..STRAYS {
        c.take(&raw::copy_up(50_000 + s, "f", 1, 1, 77));
        copy_ups += 1;
        bytes += 1;
    }
    let r = Report::build(&c.agg, "test".into(), 1.0, EventCounts::default());
    assert_eq!(r.events.copy_up, copy_ups);
    assert_eq!(r.events.lookup, lookups);
    assert_eq!(r.events.mount, u64::from(GENERATIONS));
    let live = r.mounts.iter();
    let sum_copy_ups: u64 = live.clone().map(|m| m.copy_up.count).sum::<u64>()
        + r.retired.iter().map(|g| g.copy_up.count).sum::<u64>();
    let sum_bytes: u64 = live.clone().map(|m| m.copy_up.data_bytes).sum::<u64>()
        + r.retired.iter().map(|g| g.copy_up.data_bytes).sum::<u64>();
    let sum_lookups: u64 = live.clone().map(|m| m.lookup.count).sum::<u64>()
        + r.retired.iter().map(|g| g.lookup.count).sum::<u64>();
    assert_eq!(
        (sum_copy_ups, sum_bytes, sum_lookups),
        (copy_ups, bytes, lookups),
        "totals are exact after folding"
    );
    assert!(live.count() <= LIVE_MOUNTS_MAX + GONE_DETAIL_MAX);
    assert!(
        r.retired.len() <= GROUPS_MAX + 1,
        "{} summary rows",
        r.retired.len()
    );
    let lines = text::render(&r).lines().count();
    assert!(lines < 500, "the text report is {lines} lines");
    let hwm = vm_hwm_kib();
    println!(
        "peak RSS after {GENERATIONS} generations: {} KiB; text report {lines} lines",
        hwm
    );
    assert!(hwm <= 64 * 1024, "peak RSS {hwm} KiB over 64 MiB");
}

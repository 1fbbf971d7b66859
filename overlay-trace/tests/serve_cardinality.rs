//! `serve` over weeks, without a kernel: 2,000 containers come and go through the collector with
//! metrics attached (synthetic events; a real mount costs about half a second under emulation,
//! so the VM test does a hundred). The series stay under the cap, totals stay exact, forgotten
//! containers leave, and memory stays small. Its own test binary, so the peak RSS is its own.

mod common;
use common::{ci_job_mounted, vm_hwm_kib};

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use overlay_trace::stream::names::Container;

use overlay_trace::stream::event::{Dev, raw};

use overlay_trace::model::fold::{Collector, lock};

use overlay_trace::enrich::answer::Named;

use overlay_trace::views::prometheus::{openmetrics, prometheus_text, registry};

use overlay_trace::model::series::Metrics;

fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Feeds `n` containers, each mounted, named, copying up 3 files, then gone; `tick` every 100.
fn churn(c: &mut Collector, n: u32, tick: impl Fn(&mut Collector)) -> u64 {
    let mut copy_ups = 0;
    for g in 0..n {
        let dev = 100 + g % 64;
        let key = ci_job_mounted(
            c,
            dev,
            1_000 + u64::from(g),
            g,
            &format!("ci/image:{}", g % 7),
        );
        for k in 0..3u64 {
            c.take(&raw::copy_up(
                dev,
                &format!("usr/lib/lib{k}.so"),
                4096,
                4096,
                10_000 + k,
            ));
            copy_ups += 1;
        }
        c.apply(Named::Gone { key });
        if g % 100 == 99 {
            tick(c);
        }
    }
    copy_ups
}

#[test]
fn two_thousand_containers_keep_series_capped_totals_exact_and_memory_small() {
    const N: u32 = 2_000;
    const CAP: usize = 1_000;
    // Nothing forgotten: the cap alone holds the series, `other` takes the rest, totals exact.
    let shared = Arc::new(Mutex::new(Metrics::new(Duration::from_secs(86_400), CAP)));
    let mut c = Collector {
        metrics: Some(shared.clone()),
        ..Default::default()
    };
    let copy_ups = churn(&mut c, N, |c| {
        lock(c.metrics.as_ref().unwrap()).tick(Instant::now())
    });
    let r = registry(shared.clone());
    let text = openmetrics(&r);
    assert_eq!(lock(&shared).series_count(), CAP);
    assert_eq!(sum(&text, "overlay_trace_copy_ups_total"), copy_ups as f64);
    assert_eq!(sum(&text, "overlay_trace_mounts_total"), f64::from(N));
    assert_eq!(
        sum(&text, "overlay_trace_series_overflowed_total"),
        f64::from(N) - (CAP as f64 - 1.0)
    );
    assert!(text.contains(r#"container="other""#));
    assert!(!prometheus_text(&text).contains("# EOF"));

    // Forgetting on: containers gone for longer than --forget-after leave.
    let shared = Arc::new(Mutex::new(Metrics::new(Duration::from_millis(1), CAP)));
    let mut c = Collector {
        metrics: Some(shared.clone()),
        ..Default::default()
    };
    churn(&mut c, N, |c| {
        std::thread::sleep(Duration::from_millis(2));
        lock(c.metrics.as_ref().unwrap()).tick(Instant::now())
    });
    let left = lock(&shared).series_count();
    assert!(left <= 100, "{left} series left after forgetting");
    let text = openmetrics(&registry(shared.clone()));
    assert!(sum(&text, "overlay_trace_series_forgotten_total") >= f64::from(N) - 100.0);
    assert_eq!(sum(&text, "overlay_trace_series_overflowed_total"), 0.0);

    let hwm = vm_hwm_kib();
    println!("peak RSS after {N} containers twice: {hwm} KiB");
    assert!(hwm <= 64 * 1024, "peak RSS {hwm} KiB over 64 MiB");
}

/// Docker mounts a container's init layer, unmounts it and mounts the root on the same device
/// number, often between two looks at mountinfo: the new mount alone must release the old
/// one's series, or `--forget-after` could never drop it.
#[test]
fn a_reused_device_number_releases_the_mount_before_it() {
    let shared = Arc::new(Mutex::new(Metrics::new(Duration::from_millis(1), 1_000)));
    let mut c = Collector {
        metrics: Some(shared.clone()),
        ..Default::default()
    };
    for g in 0..50u32 {
        c.take(&raw::mount(77, 1_000));
        let key = c.agg.current(Dev::from_kernel(77));
        c.apply(Named::Container {
            key,
            container: Container {
                runtime: "docker".into(),
                id: format!("{g:064x}"),
                name: format!("c{g}"),
                ..Default::default()
            },
        });
        c.take(&raw::copy_up(77, "etc/x", 1, 1, 10));
        // No Gone: the next mount of device 77 is the only sign.
    }
    std::thread::sleep(Duration::from_millis(5));
    lock(&shared).tick(Instant::now());
    assert_eq!(
        lock(&shared).series_count(),
        1,
        "only the live mount's container is left"
    );
}

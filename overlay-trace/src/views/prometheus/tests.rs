use super::*;
use crate::model::series::{Metrics, SETTLE_AFTER};
use crate::stream::event::Dev;
use crate::stream::event::{Event, raw};
use crate::stream::names::Container;
use crate::stream::record::MountKey;
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

fn key(minor: u32) -> MountKey {
    MountKey {
        dev: Dev { major: 0, minor },
        generation: 1,
    }
}

fn copy_up(minor: u32, bytes: i64) -> Event {
    Event::try_from(&raw::copy_up(minor, "a/b", bytes, bytes, 2_000_000)[..]).unwrap()
}

fn container(name: &str) -> Container {
    Container {
        runtime: "docker".into(),
        id: format!("{name}0123456789"),
        name: name.into(),
        image: "img:1".into(),
        ..Default::default()
    }
}

fn text(m: Metrics) -> String {
    openmetrics(&registry(Arc::new(Mutex::new(m))))
}

#[test]
fn numbers_wait_for_their_labels_then_join_the_container() {
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 100);
    m.observe(key(1), &copy_up(1, 10), now);
    m.observe(key(1), &copy_up(1, 5), now);
    assert_eq!(
        m.series_count(),
        0,
        "nothing exposed before the mount is named"
    );
    m.named(key(1), &container("web"), now);
    m.observe(key(1), &copy_up(1, 1), now);
    let t = text(m);
    assert!(
        t.contains(
            r#"overlay_trace_copy_ups_total{runtime="docker",container="web",image="img:1"} 3"#
        ),
        "{t}"
    );
    assert!(t.contains("overlay_trace_copy_up_bytes_total{"), "{t}");
    assert!(t.contains("} 16\n"), "{t}");
    assert!(
        t.contains("# TYPE overlay_trace_copy_up_duration_seconds histogram"),
        "{t}"
    );
    assert!(t.ends_with("# EOF\n"));
}

#[test]
fn an_unnamed_mount_settles_after_a_while_under_empty_labels() {
    let t0 = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 100);
    m.observe(key(1), &copy_up(1, 1), t0);
    m.tick(t0 + SETTLE_AFTER / 2);
    assert_eq!(m.series_count(), 0);
    m.tick(t0 + SETTLE_AFTER);
    assert_eq!(m.series_count(), 1);
    assert!(text(m).contains("\noverlay_trace_copy_ups_total 1\n"));
}

#[test]
fn series_are_capped_then_forgotten() {
    let t0 = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 3);
    for i in 0..10 {
        m.observe(key(i), &copy_up(i, 1), t0);
        m.named(key(i), &container(&format!("c{i}")), t0);
        m.gone(key(i), t0);
    }
    // Three label sets: two containers and `other` with the rest.
    assert_eq!(m.series_count(), 3);
    let t = text(m);
    assert!(t.contains(r#"container="other""#), "{t}");
    assert!(t.contains("overlay_trace_series_overflowed_total 8"), "{t}");
    let mut m = Metrics::new(Duration::from_secs(60), 3);
    m.observe(key(1), &copy_up(1, 1), t0);
    m.named(key(1), &container("a"), t0);
    m.observe(key(2), &copy_up(2, 1), t0);
    m.named(key(2), &container("b"), t0);
    m.gone(key(1), t0);
    m.tick(t0 + Duration::from_secs(61));
    assert_eq!(
        m.series_count(),
        1,
        "the gone container is forgotten, the live one kept"
    );
}

#[test]
fn hostile_names_cannot_break_the_exposition() {
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 100);
    m.observe(key(1), &copy_up(1, 1), now);
    m.named(key(1), &container("x\"} 1\nfake_metric 2\\"), now);
    let t = text(m);
    assert!(!t.contains("\nfake_metric"), "{t}");
    assert!(t.contains(r#"container="x\"} 1\nfake_metric 2\\""#), "{t}");
}

#[test]
fn prometheus_text_names_counters_with_total_and_drops_eof() {
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 100);
    m.observe(key(1), &copy_up(1, 1), now);
    m.named(key(1), &container("web"), now);
    let p = prometheus_text(&text(m));
    assert!(
        p.contains("# TYPE overlay_trace_copy_ups_total counter\n"),
        "{p}"
    );
    assert!(p.contains("# HELP overlay_trace_copy_ups_total "), "{p}");
    assert!(!p.contains("# EOF") && !p.contains("# UNIT"), "{p}");
    assert!(p.contains("# TYPE overlay_trace_lookup_duration_seconds histogram\n"));
}

#[test]
fn buckets_are_cumulative_and_end_in_inf() {
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 100);
    for ns in [1_000, 10_000, 5_000_000_000] {
        let e = Event::try_from(&raw::lookup(1, "x", 1, 1, ns)[..]).unwrap();
        m.observe(key(1), &e, now);
    }
    m.named(key(1), &container("web"), now);
    let t = text(m);
    let bucket = |le: &str| {
        t.lines()
            .find(|l| {
                l.starts_with("overlay_trace_lookup_duration_seconds_bucket")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        bucket("5e-6").or(bucket("0.000005")).as_deref(),
        Some("1"),
        "{t}"
    );
    // A value on a bound is in that bucket (le).
    assert_eq!(
        bucket("1e-5").or(bucket("0.00001")).as_deref(),
        Some("2"),
        "{t}"
    );
    assert_eq!(bucket("1.0").as_deref(), Some("2"), "{t}");
    assert_eq!(bucket("+Inf").as_deref(), Some("3"), "{t}");
}

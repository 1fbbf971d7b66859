use super::*;
use crate::stream::event::LookupOutcome;
use crate::stream::event::raw;
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE, LOOKUP_UPPER, NO_DATA_COPY};

fn ev(b: Vec<u8>) -> Event {
    Event::try_from(b.as_slice()).unwrap()
}

fn key(dev: u32, generation: u32) -> MountKey {
    MountKey {
        dev: Dev::from_kernel(dev),
        generation,
    }
}

#[test]
fn copy_ups_are_counted_per_mount_with_top_n() {
    let mut a = Aggregate::default();
    assert!(a.add(&ev(raw::copy_up(1, "a", 10, 10, 5))).new_mount);
    for i in 0..50u64 {
        assert!(
            !a.add(&ev(raw::copy_up(1, &format!("f{i}"), 100, 100, 1000 + i)))
                .new_mount
        );
    }
    a.add(&ev(raw::copy_up(2, "dir", 0, NO_DATA_COPY, 7)));
    let m = &a.mounts[&key(1, 0)];
    assert_eq!(m.copy_ups.count, 51);
    assert_eq!(m.copy_ups.data_bytes, 10 + 50 * 100);
    assert_eq!(m.copy_ups.total_ns, 5 + (1000..1050).sum::<u64>());
    let slow = m.copy_ups.slowest();
    assert_eq!(slow.len(), TOP_N);
    assert_eq!(slow[0].event.path, "/f49");
    assert_eq!(slow[TOP_N - 1].event.path, format!("/f{}", 50 - TOP_N));
    assert_eq!(
        m.copy_ups.latency.max(),
        1049,
        "a few values are kept exactly"
    );
    assert_eq!(a.mounts[&key(2, 0)].copy_ups.data_bytes, 0);
    assert_eq!(a.copy_up_events, 52);
}

#[test]
fn lookups_count_outcomes_and_layers() {
    let mut a = Aggregate::default();
    a.add(&ev(raw::lookup(1, "x", LOOKUP_NEGATIVE, 3, 10)));
    a.add(&ev(raw::lookup(1, "y", LOOKUP_NEGATIVE, 3, 10)));
    a.add(&ev(raw::lookup(1, "z", LOOKUP_UPPER, 1, 10)));
    a.add(&ev(raw::lookup(1, "w", LOOKUP_LOWER, 2, 30)));
    let l = &a.mounts[&key(1, 0)].lookups;
    assert_eq!(l.count, 4);
    assert_eq!(l.outcome(LookupOutcome::Negative), 2);
    assert_eq!(l.outcome(LookupOutcome::Upper), 1);
    assert_eq!(l.outcome(LookupOutcome::LowerOnly), 1);
    assert_eq!(l.layers.get(&3), Some(&2));
    assert_eq!(l.latency.summary().p50_ns, 10);
}

#[test]
fn mount_time_is_kept_per_superblock() {
    let mut a = Aggregate::default();
    assert_eq!(
        a.add(&ev(raw::mount(9, 4242))),
        Added {
            key: key(9, 1),
            new_mount: true,
            seq: 1,
            superseded: Some(key(9, 0)),
            named: false,
        }
    );
    assert_eq!(
        a.add(&ev(raw::copy_up(9, "f", 1, 1, 5))),
        Added {
            key: key(9, 1),
            new_mount: false,
            seq: 2,
            superseded: None,
            named: false,
        }
    );
    assert_eq!(a.mounts[&key(9, 1)].mount_ns, Some(4242));
    assert_eq!(a.mount_events, 1);
}

#[test]
fn a_reused_device_number_retires_the_old_mount() {
    let mut a = Aggregate::default();
    a.add(&ev(raw::copy_up(9, "old", 1, 1, 5)));
    a.add(&ev(raw::mount(9, 10)));
    a.add(&ev(raw::copy_up(9, "new", 1, 1, 5)));
    a.add(&ev(raw::mount(9, 20)));
    assert_eq!(a.live_mounts(), 1, "only the newest generation is live");
    assert!(
        a.mounts[&key(9, 0)].gone && a.mounts[&key(9, 1)].gone,
        "the older ones stay in detail, gone"
    );
    assert_eq!(
        a.mounts[&key(9, 1)].copy_ups.slowest()[0].event.path,
        "/new"
    );
    assert_eq!(a.mounts[&key(9, 2)].copy_ups.count, 0);
    assert_eq!(a.mounts[&key(9, 2)].mount_ns, Some(20));
    assert!(a.retired.is_empty());
}

#[test]
fn folded_mounts_go_to_their_container_and_late_events_follow() {
    let mut a = Aggregate::default();
    let c = Container {
        runtime: "docker".into(),
        id: "abcdef0123456789".into(),
        name: "web".into(),
        ..Default::default()
    };
    a.add(&ev(raw::mount(9, 10)));
    a.add(&ev(raw::copy_up(9, "a", 1, 1, 5)));
    a.set_container(
        key(9, 1),
        Container {
            role: Some("init-layer".into()),
            pod: None,
            image_id: None,
            ..c.clone()
        },
    );
    a.retire(key(9, 1));
    assert_eq!(
        a.mounts[&key(9, 1)].copy_ups.count,
        1,
        "a gone mount stays in detail for a while"
    );
    // Newer gone mounts push it out of the detail, into its container's row.
    for _ in 0..=GONE_DETAIL_MAX {
        a.add(&ev(raw::mount(10, 1)));
    }
    assert!(!a.mounts.contains_key(&key(9, 1)));
    // An event of the folded mount still in the ring buffer.
    a.add(&ev(raw::copy_up(9, "b", 1, 1, 7)));
    let g = &a.retired[&group_label(Some(&c))];
    assert_eq!(g.copy_ups.count, 2);
    assert_eq!(g.container.as_ref().unwrap().role, None);
    assert_eq!(a.copy_up_events, 2);
}

#[test]
fn memory_is_bounded_and_totals_exact_over_many_mounts() {
    let mut a = Aggregate::default();
    for i in 0..3 * LIVE_MOUNTS_MAX as u32 {
        // Distinct devices that are never seen being unmounted: the cap retires them.
        a.add(&ev(raw::copy_up(1000 + i, "f", 1, 3, 5)));
        a.add(&ev(raw::lookup(1000 + i, "x", LOOKUP_NEGATIVE, 1, 9)));
    }
    assert_eq!(a.mounts.len(), LIVE_MOUNTS_MAX);
    assert_eq!(a.live_mounts(), LIVE_MOUNTS_MAX);
    let live: u64 = a.mounts.values().map(|m| m.copy_ups.count).sum();
    let retired: u64 = a.retired.values().map(|g| g.copy_ups.count).sum();
    assert_eq!(live + retired, 3 * LIVE_MOUNTS_MAX as u64);
    let bytes: u64 = a
        .mounts
        .values()
        .map(|m| m.copy_ups.data_bytes)
        .sum::<u64>()
        + a.retired
            .values()
            .map(|g| g.copy_ups.data_bytes)
            .sum::<u64>();
    assert_eq!(bytes, 9 * LIVE_MOUNTS_MAX as u64);
}

#[test]
fn known_mounts_stay_within_the_cap() {
    let mut a = Aggregate::default();
    for i in 0..2 * LIVE_MOUNTS_MAX as u32 {
        a.add_known(key(5000 + i, 0), None, Container::default());
    }
    assert_eq!(a.live_mounts(), LIVE_MOUNTS_MAX);
    assert_eq!(a.mounts.len(), LIVE_MOUNTS_MAX);
}

#[test]
fn groups_are_capped_with_an_other_row() {
    let mut a = Aggregate::default();
    let n = GONE_DETAIL_MAX + GROUPS_MAX + 10;
    for i in 0..n {
        a.add(&ev(raw::copy_up(7, "f", 1, 1, 5)));
        let c = Container {
            runtime: "docker".into(),
            id: format!("{i:016}"),
            name: format!("c{i}"),
            ..Default::default()
        };
        a.set_container(a.current(Dev::from_kernel(7)), c);
        a.add(&ev(raw::mount(7, 1)));
    }
    assert_eq!(a.retired.len(), GROUPS_MAX + 1);
    assert_eq!(a.retired[OTHER_GROUP].mounts, 10);
    assert_eq!(
        a.retired.values().map(|g| g.copy_ups.count).sum::<u64>(),
        (GROUPS_MAX + 10) as u64
    );
    assert_eq!(
        a.mounts.values().map(|m| m.copy_ups.count).sum::<u64>(),
        GONE_DETAIL_MAX as u64
    );
}

#[test]
fn gone_detail_is_capped_and_totals_stay_exact() {
    let mut a = Aggregate::default();
    for _ in 0..GONE_DETAIL_MAX + 50 {
        a.add(&ev(raw::copy_up(7, "f", 1, 1, 5)));
        a.add(&ev(raw::mount(7, 1)));
    }
    assert_eq!(
        a.mounts.values().filter(|m| m.gone).count(),
        GONE_DETAIL_MAX
    );
    assert_eq!(a.live_mounts(), 1);
    let detail: u64 = a.mounts.values().map(|m| m.copy_ups.count).sum();
    let groups: u64 = a.retired.values().map(|g| g.copy_ups.count).sum();
    assert_eq!(detail + groups, GONE_DETAIL_MAX as u64 + 50);
}

#[test]
fn huge_latency_is_clamped_not_lost() {
    let mut a = Aggregate::default();
    a.add(&ev(raw::copy_up(1, "a", 1, 1, u64::MAX)));
    assert_eq!(a.mounts[&key(1, 0)].copy_ups.latency.len(), 1);
}

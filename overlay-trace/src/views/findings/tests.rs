//! Each finding at its threshold and just below it (the control), from raw kernel records.

use super::*;
use crate::stream::event::{Event, raw};
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE};

const FCHOWNAT: u32 = 260;
const OPENAT: u32 = 257;
const O_WRONLY_APPEND: u32 = 0o2001;

fn add(a: &mut Aggregate, record: Vec<u8>) {
    a.add(&Event::try_from(record.as_slice()).unwrap());
}

fn ids(a: &Aggregate) -> Vec<String> {
    findings(a, 10.0).into_iter().map(|f| f.id).collect()
}

#[test]
fn metadata_copy_from_a_mebibyte_copied_for_metadata() {
    let mut a = Aggregate::default();
    // Just below: 1 MiB - 1 byte copied by chown.
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "app/a", 1, 1, 1_000), FCHOWNAT, 0),
    );
    let half = (METADATA_COPY_BYTES / 2) as i64;
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "app/b", half, half - 2, 2_000), FCHOWNAT, 0),
    );
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "app/c", half, half, 3_000), FCHOWNAT, 0),
    );
    // Data copied for a write is not a metadata copy.
    add(
        &mut a,
        raw::asked_by(
            raw::copy_up(1, "log", 100, 100, 500),
            OPENAT,
            O_WRONLY_APPEND,
        ),
    );
    assert!(ids(&a).is_empty(), "{:?}", findings(&a, 10.0));
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "app/d", 1, 1, 4_000), FCHOWNAT, 0),
    );
    let f = findings(&a, 10.0);
    assert_eq!(ids(&a), ["metadata-copy"]);
    assert_eq!((f[0].count, f[0].bytes), (4, METADATA_COPY_BYTES));
    assert_eq!(f[0].top[0].path, "/app/c");
    assert_eq!(f[0].top[0].syscall.as_deref(), Some("fchownat"));
    assert_eq!(f[0].time_ns, 10_000);
    // The data copy's share of it (raw records copy data for half their time).
    assert_eq!(f[0].saving_ns, 5_000);
}

#[test]
fn big_file_copy_from_eight_mebibytes_written() {
    let mut a = Aggregate::default();
    let below = (BIG_FILE_BYTES - 1) as i64;
    add(
        &mut a,
        raw::asked_by(
            raw::copy_up(1, "var/log/a", below, below, 9),
            OPENAT,
            O_WRONLY_APPEND,
        ),
    );
    // A big file copied for a chown is a metadata copy, not this.
    let big = BIG_FILE_BYTES as i64;
    add(
        &mut a,
        raw::asked_by(raw::copy_up(2, "big", big, big, 9), FCHOWNAT, 0),
    );
    assert_eq!(ids(&a), ["metadata-copy"]);
    add(
        &mut a,
        raw::asked_by(
            raw::copy_up(1, "var/log/b", big, big, 9),
            OPENAT,
            O_WRONLY_APPEND,
        ),
    );
    let f: Vec<_> = findings(&a, 10.0)
        .into_iter()
        .filter(|f| f.id == "big-file-copy")
        .collect();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].count, f[0].bytes), (1, BIG_FILE_BYTES));
    assert_eq!(f[0].top[0].path, "/var/log/b");
}

#[test]
fn deep_layers_from_a_hundred_deep_negative_lookups() {
    let mut a = Aggregate::default();
    for i in 0..DEEP_LOOKUPS - 1 {
        add(
            &mut a,
            raw::lookup(
                1,
                &format!("n{i}"),
                LOOKUP_NEGATIVE,
                DEEP_LOOKUP_LAYERS,
                1_000,
            ),
        );
    }
    // Shallower, or positive: not evidence.
    add(
        &mut a,
        raw::lookup(1, "s", LOOKUP_NEGATIVE, DEEP_LOOKUP_LAYERS - 1, 1_000),
    );
    add(
        &mut a,
        raw::lookup(1, "p", LOOKUP_LOWER, DEEP_LOOKUP_LAYERS + 2, 1_000),
    );
    assert!(ids(&a).is_empty());
    add(
        &mut a,
        raw::lookup(1, "last", LOOKUP_NEGATIVE, DEEP_LOOKUP_LAYERS, 1_000),
    );
    let f = findings(&a, 10.0);
    assert_eq!(ids(&a), ["deep-layers"]);
    assert_eq!(f[0].count, DEEP_LOOKUPS);
    // Ten layers each: squashed, nine tenths of their time goes.
    assert_eq!(f[0].saving_ns, DEEP_LOOKUPS * 900);
}

#[test]
fn fail_on_names_what_is_there() {
    let mut a = Aggregate::default();
    let big = BIG_FILE_BYTES as i64;
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "big", big, big, 9), OPENAT, O_WRONLY_APPEND),
    );
    let f = findings(&a, 1.0);
    assert_eq!(failing(&f, &["metadata-copy".into()]).len(), 0);
    assert_eq!(failing(&f, &["big-file-copy".into()]).len(), 1);
    assert_eq!(failing(&f, &["any".into()]).len(), 1);
    let mut text_out = String::new();
    crate::views::text::findings::findings(&mut text_out, &f);
    assert!(text_out.contains("[big-file-copy]"), "{text_out}");
    let mut none = String::new();
    crate::views::text::findings::findings(&mut none, &[]);
    assert_eq!(none, "findings: none\n");
}

#[test]
fn one_refused_rename_is_a_finding() {
    let mut a = Aggregate::default();
    add(&mut a, raw::copy_up(1, "old", 0, -1, 9));
    assert!(ids(&a).is_empty());
    add(&mut a, raw::rename_refused(1, "srv/old"));
    let f = findings(&a, 1.0);
    assert_eq!(ids(&a), ["lower-dir-rename"]);
    assert_eq!((f[0].count, f[0].top[0].path.as_str()), (1, "/srv/old"));
    assert_eq!(f[0].top[0].process, "mv[100]");
    assert_eq!(a.rename_events, 1);
    assert_eq!(f[0].top[0].created_by, None);

    // The directory's layer, found beside the drain, names the Dockerfile line that made it.
    use crate::stream::{event::Dev, names::LayerInfo, record::Record};
    let key = a.current(Dev::from_kernel(1));
    let seq = a.mounts[&key].evidence.refused_renames.items[0].seq;
    let layer = |index: u32, created_by: &str| LayerInfo {
        index,
        lowerdir: format!("/l{index}"),
        created_by: Some(created_by.to_string()),
        ..Default::default()
    };
    let (dev, mount_gen) = (key.dev, key.generation);
    let layers = vec![layer(1, "RUN touch /x"), layer(2, "RUN mkdir -p /srv/old")];
    crate::model::replay::apply(
        &mut a,
        Record::NamedLayers {
            dev,
            mount_gen,
            layers,
        },
    );
    crate::model::replay::apply(
        &mut a,
        Record::RenameLayer {
            dev,
            mount_gen,
            seq,
            layer: 2,
        },
    );
    let f = findings(&a, 1.0);
    assert_eq!(f[0].top[0].layer, Some(2));
    assert_eq!(
        f[0].top[0].created_by.as_deref(),
        Some("RUN mkdir -p /srv/old")
    );
}

#[test]
fn a_mount_folded_out_of_the_detail_keeps_its_findings() {
    use crate::model::aggregate::GONE_DETAIL_MAX;
    let mut a = Aggregate::default();
    let big = BIG_FILE_BYTES as i64;
    add(
        &mut a,
        raw::asked_by(raw::copy_up(1, "log", big, big, 9), OPENAT, O_WRONLY_APPEND),
    );
    let first = a.current(crate::stream::event::Dev::from_kernel(1));
    a.retire(first);
    for minor in 2..(GONE_DETAIL_MAX as u32 + 3) {
        add(&mut a, raw::copy_up(minor, "x", 1, 1, 9));
        let k = a.current(crate::stream::event::Dev::from_kernel(minor));
        a.retire(k);
    }
    assert!(!a.mounts.contains_key(&first), "folded");
    let f = findings(&a, 1.0);
    assert_eq!(ids(&a), ["big-file-copy"]);
    assert_eq!((f[0].count, f[0].top[0].path.as_str()), (1, "/log"));
    assert!(f[0].mount.contains("mounts folded"), "{}", f[0].mount);
    assert!(f[0].dev.is_empty());
}

#[test]
fn copy_up_sync_from_ten_milliseconds_and_a_quarter() {
    let ms = 1_000_000;
    let sync = |a: &mut Aggregate, path: &str, total: u64, synced: u64| {
        let rec = raw::asked_by(
            raw::copy_up(1, path, 10, 10, total),
            OPENAT,
            O_WRONLY_APPEND,
        );
        add(a, raw::synced(rec, synced));
    };
    // Just below the time: 10 ms - 1 ns of syncs in 20 ms of copy-ups.
    let mut a = Aggregate::default();
    sync(&mut a, "a", 10 * ms, 5 * ms);
    sync(&mut a, "b", 10 * ms, 5 * ms - 1);
    assert!(ids(&a).is_empty());
    // Just below the share: 10 ms of syncs in 40 ms + 1 ns of copy-ups.
    let mut a = Aggregate::default();
    sync(&mut a, "a", 20 * ms + 1, 5 * ms);
    sync(&mut a, "b", 20 * ms, 5 * ms);
    assert!(ids(&a).is_empty());
    // 10 ms in 40 ms: a finding, the syncs' time its cost and saving.
    let mut a = Aggregate::default();
    sync(&mut a, "a", 20 * ms, 5 * ms);
    sync(&mut a, "b", 20 * ms, 5 * ms);
    let f = findings(&a, 1.0);
    assert_eq!(ids(&a), ["copy-up-sync"]);
    assert_eq!(
        (f[0].count, f[0].time_ns, f[0].saving_ns),
        (2, 10 * ms, 10 * ms)
    );
}

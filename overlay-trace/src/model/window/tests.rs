use super::*;
use crate::stream::{
    event::{Dev, Event, raw},
    names::Container,
};
use overlay_trace_common::{LOOKUP_NEGATIVE, LOOKUP_UPPER, NO_DATA_COPY};

fn add(a: &mut Aggregate, b: Vec<u8>) {
    a.add(&Event::try_from(b.as_slice()).unwrap());
}

fn key(dev: u32) -> MountKey {
    MountKey {
        dev: Dev::from_kernel(dev),
        generation: 0,
    }
}

fn container(id: &str, name: &str, role: Option<&str>) -> Container {
    Container {
        runtime: "docker".into(),
        id: id.into(),
        name: name.into(),
        image: "img".into(),
        namespace: None,
        image_id: None,
        pod: None,
        role: role.map(str::to_string),
    }
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
}

#[test]
fn rows_are_containers_and_unclaimed_mounts_with_their_totals() {
    let mut a = Aggregate::default();
    add(&mut a, raw::copy_up(1, "etc/passwd", 100, 100, 3_000));
    add(&mut a, raw::copy_up(1, "var", 0, NO_DATA_COPY, 1_000));
    add(&mut a, raw::copy_up(2, "etc/hosts", 10, 10, 500));
    add(&mut a, raw::lookup(3, "missing", LOOKUP_NEGATIVE, 4, 10));
    add(&mut a, raw::lookup(3, "here", LOOKUP_UPPER, 1, 10));
    a.set_container(key(1), container("c1", "web", None));
    a.set_container(key(2), container("c1", "web", Some("init-layer")));
    let rows = Window::default().look(&a);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let web = row(&rows, "web (docker)");
    assert_eq!((web.total.copy_ups, web.total.data_bytes), (2, 100));
    assert_eq!(web.delta, web.total, "the first look: all of it is new");
    assert_eq!(web.p99_ns, Some(3_000));
    assert_eq!(web.slowest[0].path, "/etc/passwd");
    assert_eq!(web.slowest.len(), 2);
    let init = row(&rows, "web (docker, init-layer)");
    assert_eq!(init.total.copy_ups, 1);
    let unclaimed = row(&rows, "overlay [0:3]");
    assert_eq!((unclaimed.total.lookups, unclaimed.total.negative), (2, 1));
    assert_eq!(unclaimed.negative_share(), Some(0.5));
    assert_eq!(unclaimed.p99_ns, None);
}

#[test]
fn a_second_look_shows_only_what_came_since() {
    let mut a = Aggregate::default();
    let mut w = Window::default();
    for i in 0..100 {
        add(&mut a, raw::copy_up(1, &format!("f{i}"), 10, 10, 1_000));
    }
    add(&mut a, raw::copy_up(2, "x", 1, 1, 9));
    a.set_container(key(1), container("c1", "web", None));
    w.look(&a);
    // Past the few exact values: a histogram from now on, and the next look subtracts.
    add(&mut a, raw::copy_up(1, "slow", 10, 10, 50_000_000));
    add(&mut a, raw::copy_up(1, "fast", 10, 10, 2_000));
    let rows = w.look(&a);
    let web = row(&rows, "web (docker)");
    assert_eq!(web.total.copy_ups, 102);
    assert_eq!(web.delta.copy_ups, 2);
    assert_eq!(web.delta.data_bytes, 20);
    let p99 = web.p99_ns.unwrap();
    assert!((50_000_000..50_600_000).contains(&p99), "{p99}");
    assert_eq!(web.slowest[0].path, "/slow");
    let quiet = row(&rows, "overlay [0:2]");
    assert_eq!((quiet.delta, quiet.p99_ns), (Totals::default(), None));
    let again = w.look(&a);
    assert_eq!(row(&again, "web (docker)").delta.copy_ups, 0);
    assert_eq!(row(&again, "web (docker)").p99_ns, None);
}

#[test]
fn a_gone_mounts_numbers_stay_in_its_row() {
    let mut a = Aggregate::default();
    let mut w = Window::default();
    add(&mut a, raw::copy_up(1, "a", 1, 1, 10));
    a.set_container(key(1), container("c1", "web", None));
    assert_eq!(w.look(&a)[0].state, RowState::Live);
    a.retire(key(1));
    let rows = w.look(&a);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, RowState::Gone);
    assert_eq!((rows[0].total.copy_ups, rows[0].delta.copy_ups), (1, 0));
}

#[test]
fn a_mount_that_changes_rows_brings_no_past_into_the_interval() {
    let mut a = Aggregate::default();
    let mut w = Window::default();
    for i in 0..5 {
        add(&mut a, raw::copy_up(1, &format!("f{i}"), 1, 1, 10));
    }
    let first = w.look(&a);
    assert_eq!(row(&first, "overlay [0:1]").delta.copy_ups, 5);
    // Named: the row is the container's now, and only the new copy-up is the interval's.
    a.set_container(key(1), container("c1", "web", None));
    add(&mut a, raw::copy_up(1, "late", 1, 1, 10));
    let named = w.look(&a);
    assert_eq!(named.len(), 1, "{named:?}");
    let web = row(&named, "web (docker)");
    assert_eq!((web.total.copy_ups, web.delta.copy_ups), (6, 1));
    // Folded into its group (more than GONE_DETAIL_MAX gone mounts after it): nothing new.
    a.retire(key(1));
    for dev in 2..(crate::model::aggregate::GONE_DETAIL_MAX as u32 + 3) {
        add(&mut a, raw::lookup(dev, "x", LOOKUP_UPPER, 1, 1));
        a.retire(key(dev));
    }
    let folded = w.look(&a);
    let web = row(&folded, "web (docker)");
    assert_eq!(web.state, RowState::Folded);
    assert_eq!((web.total.copy_ups, web.delta.copy_ups), (6, 0), "{web:?}");
}

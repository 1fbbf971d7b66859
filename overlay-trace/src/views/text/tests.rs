use super::*;
use crate::model::aggregate::Aggregate;
use crate::stream::event::{Dev, Event, raw};
use crate::stream::names::OverlayMount;
use crate::stream::record::EventCounts;
use crate::views::json;
use overlay_trace_common::{LOOKUP_NEGATIVE, LOOKUP_UPPER};

fn sample() -> Report {
    let mut a = Aggregate::default();
    a.add(&Event::try_from(raw::mount(52, 2_500_000).as_slice()).unwrap());
    for (p, d) in [("etc/passwd", 3_000u64), ("var/log/big.log", 9_000_000)] {
        a.add(&Event::try_from(raw::copy_up(52, p, 1 << 20, 1 << 20, d).as_slice()).unwrap());
    }
    a.add(&Event::try_from(raw::lookup(52, "nope", LOOKUP_NEGATIVE, 3, 800).as_slice()).unwrap());
    a.add(&Event::try_from(raw::lookup(52, "passwd", LOOKUP_UPPER, 1, 400).as_slice()).unwrap());
    let key = crate::stream::record::MountKey {
        dev: Dev::from_kernel(52),
        generation: 1,
    };
    a.set_mount(
        key,
        OverlayMount {
            dev: Dev::from_kernel(52),
            mount_point: "/merged".into(),
            lowerdirs: vec!["/l1".into(), "/l2".into(), "/l3".into()],
            upperdir: Some("/upper".into()),
            workdir: Some("/work".into()),
            ns_pid: None,
            userns: None,
        },
    );
    a.set_container(
        key,
        crate::stream::names::Container {
            runtime: "docker".into(),
            id: "153bf8403972b4a60b573a9e331118a8".into(),
            name: "web".into(),
            image: "base:1".into(),
            namespace: None,
            role: None,
            pod: None,
            image_id: None,
        },
    );
    Report::build(
        &a,
        "6.1.0".into(),
        2.0,
        EventCounts {
            dropped_lookup: 3,
            ..Default::default()
        },
    )
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
    assert!(
        t.contains("LOST: 0 copy-up and 3 lookup events dropped"),
        "{t}"
    );
    assert!(
        t.contains("0 missed returns (copy-up 0, lookup 0, mount 0)"),
        "{t}"
    );
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
    assert_eq!(
        json::from_str("{").unwrap_err().to_string(),
        "not valid JSON"
    );
    assert!(
        json::from_str("{\"schema_version\": 99}")
            .unwrap_err()
            .to_string()
            .contains("schema_version 99 is not supported")
    );
    assert!(
        json::from_str("{}")
            .unwrap_err()
            .to_string()
            .contains("no schema_version")
    );
    assert_eq!(
        json::from_str("{\"schema_version\": 1}")
            .unwrap_err()
            .to_string(),
        "malformed overlay-trace report"
    );
}

#[test]
fn control_characters_never_reach_the_terminal() {
    assert_eq!(escape("a\x1b[2Jb\nc\\d\u{7f}"), "a\\033[2Jb\\nc\\\\d\\177");
    let mut a = Aggregate::default();
    a.add(
        &Event::try_from(raw::copy_up(52, "evil\x1b]0;owned\x07\nLOST: none", 1, 1, 5).as_slice())
            .unwrap(),
    );
    let t = render(&Report::build(
        &a,
        "6.1.0".into(),
        1.0,
        EventCounts::default(),
    ));
    assert!(!t.bytes().any(|b| b == 0x1b || b == 0x07), "{t:?}");
    assert!(t.contains("/evil\\033]0;owned\\007\\nLOST: none"), "{t}");
    assert!(
        !t.lines().any(|l| l.starts_with("LOST")),
        "no forged line: {t}"
    );
}

#[test]
fn a_long_run_stays_readable() {
    let mut a = Aggregate::default();
    for dev in 0..40u32 {
        a.add(
            &Event::try_from(raw::copy_up(100 + dev, "f", 1, 1, 5 + dev as u64).as_slice())
                .unwrap(),
        );
    }
    for _ in 0..30 {
        a.add(&Event::try_from(raw::copy_up(7, "g", 1, 1, 5).as_slice()).unwrap());
        a.add(&Event::try_from(raw::mount(7, 9).as_slice()).unwrap());
    }
    let t = render(&Report::build(
        &a,
        "6.1.0".into(),
        1.0,
        EventCounts::default(),
    ));
    assert!(t.lines().count() < 250, "{} lines", t.lines().count());
    assert!(t.contains("... and 61 more mounts: 60 copy-ups"), "{t}");
    assert!(
        !t.contains("more mounts (gone"),
        "30 gone mounts are still in detail: {t}"
    );
}

#[test]
fn units() {
    assert_eq!(ns(999), "999 ns");
    assert_eq!(ns(1_500), "1.5 µs");
    assert_eq!(ns(2_500_000), "2.50 ms");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(16 << 20), "16.0 MiB");
}

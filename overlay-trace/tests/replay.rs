//! `report events.ndjson`: a run's events file, replayed, gives the run's report; bad files are
//! refused with their line, a cut last line is replayed up to the cut.

use overlay_trace::{
    enrich::answer::Named,
    model::{fold::Collector, replay},
    stream::{
        event::{Dev, raw},
        names::{Container, OverlayMount},
        output::EventsFile,
        record::{EventCounts, ProbeReport, Record, SCHEMA_VERSION},
    },
    views::{json, report::Report},
};
use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE};

fn replayed(p: &std::path::Path) -> anyhow::Result<(Report, Option<String>)> {
    let r = replay::replay(p)?;
    let w = r.warning.clone();
    Ok((Report::replayed(r), w))
}

/// A run as the loop makes it, events file included; then the file replayed.
#[test]
fn a_replayed_events_file_gives_the_live_report_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.ndjson");
    let mut c = Collector {
        events: Some(EventsFile::create(&path).unwrap()),
        ..Default::default()
    };
    c.events.as_mut().unwrap().record(&Record::Header {
        schema_version: SCHEMA_VERSION,
        tool_version: "test".into(),
        kernel: "6.1.0-test".into(),
    });
    // 300 generations: enough to fold gone mounts out of the detail, as a long run does.
    for g in 0..300u32 {
        let dev = 100 + g % 16;
        c.take(&raw::mount(dev, 1_000 + u64::from(g)));
        let key = c.agg.current(Dev::from_kernel(dev));
        c.apply(Named::Mount {
            key,
            mount: OverlayMount {
                dev: key.dev,
                mount_point: format!("/m/{g}"),
                lowerdirs: vec!["/l1".into(), "/l2".into()],
                upperdir: Some(format!("/u/{g}")),
                workdir: None,
                ns_pid: None,
                userns: None,
            },
        });
        if g % 3 == 0 {
            c.apply(Named::Container {
                key,
                container: Container {
                    runtime: "docker".into(),
                    id: format!("{g:064x}"),
                    name: format!("c{g}"),
                    image: "img:1".into(),
                    ..Default::default()
                },
            });
        }
        for k in 0..3u64 {
            c.take(&raw::copy_up(
                dev,
                &format!("etc/f{k}"),
                4096,
                4096,
                7_000 + k * 13 + u64::from(g),
            ));
        }
        c.take(&raw::lookup(
            dev,
            "x",
            if g % 2 == 0 {
                LOOKUP_NEGATIVE
            } else {
                LOOKUP_LOWER
            },
            2,
            900,
        ));
        if g % 2 == 1 {
            c.apply(Named::Gone { key });
        }
    }
    let counts = EventCounts {
        dropped_lookup: 3,
        missed_return_copy_up: 1,
        ..Default::default()
    };
    let mut live = Report::build(&c.agg, "6.1.0-test".into(), 12.5, counts);
    live.probes = vec![ProbeReport {
        program: "copy_up_entry".into(),
        function: "ovl_copy_up_one".into(),
        kind: "fentry".into(),
        maxactive: None,
        hits: None,
        missed: Some(0),
        fallback: Some("E2BIG".into()),
    }];
    let mut out = c.events.take().unwrap();
    out.record(&Record::End {
        traced_seconds: live.traced_seconds,
        events: live.events.clone(),
        probes: live.probes.clone(),
    });
    assert!(out.finish().is_none());
    assert!(overlay_trace::stream::input::is_events_file(&path));
    let (replayed, warning) = replayed(&path).unwrap();
    assert_eq!(warning, None);
    assert!(!live.retired.is_empty(), "the run folded mounts");
    assert_eq!(json::to_string(&replayed), json::to_string(&live));
}

#[test]
fn bad_events_files_are_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.ndjson");
    std::fs::write(&p, "{\"type\":\"copy_up\"}\n").unwrap();
    let e = replayed(&p).unwrap_err();
    assert!(
        format!("{e:#}").contains("x.ndjson:1: not an overlay-trace events file"),
        "{e:#}"
    );
    std::fs::write(
        &p,
        "{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}\n{\"type\":\"bogus\"}\n",
    )
    .unwrap();
    let e = replayed(&p).unwrap_err();
    assert!(format!("{e:#}").contains(":2: unknown record"), "{e:#}");
    assert!(e.chain().any(|c| c.is::<overlay_trace::base::BadInput>()));
    std::fs::write(
        &p,
        "{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}\n",
    )
    .unwrap();
    let (r, warning) = replayed(&p).unwrap();
    assert!(warning.unwrap().contains("no end record") && r.mounts.is_empty());

    // A run killed mid-line: everything before the cut is replayed, the line is named.
    let ev1 = "{\"type\":\"copy_up\",\"pid\":1,\"tgid\":1,\"comm\":\"x\",\"cgroup_id\":0,\"dev\":\"0:9\",\"start_ns\":1,\"duration_ns\":5,\"data\":null,\"size\":1,\"open_flags\":0,\"mode\":0,\"ret\":0,\"path\":\"/a\",\"path_truncated\":false,\"mount_gen\":0}\n";
    std::fs::write(
        &p,
        format!(
            "{{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}}\n{ev1}{ev1}{}",
            &ev1[..40]
        ),
    )
    .unwrap();
    let (r, warning) = replayed(&p).unwrap();
    let w = warning.unwrap();
    assert!(w.contains("x.ndjson:4: the last line was cut short"), "{w}");
    assert_eq!(r.mounts[0].copy_up.count, 2);
    // The same bytes in a line that is not the last are refused.
    std::fs::write(
        &p,
        format!(
            "{{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}}\n{}\n{ev1}",
            &ev1[..40]
        ),
    )
    .unwrap();
    let e = replayed(&p).unwrap_err();
    assert!(format!("{e:#}").contains(":2: not JSON"), "{e:#}");

    // Cut inside a character of a name (a path of "é"s): cut short too, not unreadable.
    let named = ev1.replace("\"/a\"", "\"/\u{e9}\u{e9}\u{e9}\"");
    let mut bytes = format!(
        "{{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}}\n{ev1}{named}"
    )
    .into_bytes();
    let cut = bytes.len() - named.len() + named.find('\u{e9}').unwrap() + 1;
    bytes.truncate(cut);
    std::fs::write(&p, &bytes).unwrap();
    let (r, warning) = replayed(&p).unwrap();
    assert!(warning.unwrap().contains(":3: the last line was cut short"));
    assert_eq!(r.mounts[0].copy_up.count, 1);

    // Hostile values: a container id that is not ASCII, durations that would overflow.
    let ev = |d: u64| {
        format!(
            "{{\"type\":\"copy_up\",\"pid\":1,\"tgid\":1,\"comm\":\"x\",\"cgroup_id\":0,\"dev\":\"0:9\",\"start_ns\":1,\"duration_ns\":{d},\"data\":null,\"size\":1,\"open_flags\":0,\"mode\":0,\"ret\":0,\"path\":\"/a\",\"path_truncated\":false,\"mount_gen\":0}}\n"
        )
    };
    let text = format!(
        "{{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}}\n{}{}{{\"type\":\"named_container\",\"dev\":\"0:9\",\"mount_gen\":0,\"container\":{{\"runtime\":\"docker\",\"id\":\"a\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\",\"name\":\"n\",\"image\":\"i\"}}}}\n",
        ev(u64::MAX),
        ev(u64::MAX)
    );
    std::fs::write(&p, text).unwrap();
    let (r, _) = replayed(&p).unwrap();
    let out = overlay_trace::views::text::render(&r);
    assert!(out.contains("container n (a\u{e9}"), "{out}");
    assert_eq!(r.mounts[0].copy_up.total_ns, u64::MAX);
}

//! `report events.ndjson`: the full report rebuilt from a recorded `--events` file, so a trace
//! taken on a production host can be analysed elsewhere. The file carries what the aggregate
//! needs besides the events, in the order the live run applied it: a header (tool, kernel), the
//! naming answers (mount table rows, containers, mounts gone) and an end record (time traced,
//! the kernel side's loss counts, the probes). Replayed through the same aggregate, they give the
//! same report.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::{
    aggregate::{Aggregate, MountKey},
    cli::BadInput,
    containers::Container,
    events::{Dev, Event},
    mounts::OverlayMount,
    probes::ProbeReport,
    report::{EventCounts, Report, SCHEMA_VERSION},
};

/// The longest line read (paths are at most a few KiB).
const LINE_MAX: u64 = 1 << 20;

/// A line of an events file that is not an event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header {
        schema_version: u32,
        tool_version: String,
        kernel: String,
    },
    NamedMount {
        dev: Dev,
        mount_gen: u32,
        mount: OverlayMount,
    },
    NamedContainer {
        dev: Dev,
        mount_gen: u32,
        container: Container,
    },
    Gone {
        dev: Dev,
        mount_gen: u32,
    },
    NamedLayers {
        dev: Dev,
        mount_gen: u32,
        layers: Vec<crate::layers::LayerInfo>,
    },
    /// A copy-up's source layer, found after its event was written.
    SourceLayer {
        dev: Dev,
        mount_gen: u32,
        #[serde(flatten)]
        copy_up: crate::aggregate::CopyUpRef,
        layer: u32,
    },
    /// A container chosen with `--container`, known before tracing began.
    Known {
        dev: Dev,
        mount_gen: u32,
        mount: Option<OverlayMount>,
        container: Container,
    },
    End {
        traced_seconds: f64,
        events: EventCounts,
        probes: Vec<ProbeReport>,
    },
}

/// Whether `path` looks like an events file (its first line is a header record).
pub fn is_events_file(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let _ = BufReader::new(f.take(LINE_MAX)).read_line(&mut first);
    first.trim_start().starts_with('{') && first.contains("\"type\":\"header\"")
}

/// Applies a naming or enrichment record: the one place such a record changes the model, for
/// the live run (its collector applies what the naming side answers, as it writes it) and for a
/// replay of what it wrote alike. The header and end records change no number.
pub fn apply(agg: &mut Aggregate, rec: Record) {
    let key = |dev, mount_gen| MountKey {
        dev,
        generation: mount_gen,
    };
    match rec {
        Record::NamedMount {
            dev,
            mount_gen,
            mount,
        } => agg.set_mount(key(dev, mount_gen), mount),
        Record::NamedContainer {
            dev,
            mount_gen,
            container,
        } => agg.set_container(key(dev, mount_gen), container),
        Record::Gone { dev, mount_gen } => agg.retire(key(dev, mount_gen)),
        Record::NamedLayers {
            dev,
            mount_gen,
            layers,
        } => agg.set_layers(key(dev, mount_gen), layers),
        Record::SourceLayer {
            dev,
            mount_gen,
            copy_up,
            layer,
        } => agg.set_source_layer(key(dev, mount_gen), copy_up, layer),
        Record::Known {
            dev,
            mount_gen,
            mount,
            container,
        } => agg.add_known(key(dev, mount_gen), mount, container),
        Record::Header { .. } | Record::End { .. } => {}
    }
}

/// The report of the run that wrote `path`, and a warning when the file is not whole: no end
/// record (an interrupted run: the loss counts and the time traced are then unknown), or a last
/// line cut short (a run killed mid-write: everything before it is replayed).
pub fn replay(path: &Path) -> Result<(Report, Option<String>)> {
    replay_with(path, |_, _| {}, |_, _, _| {})
}

/// `replay`, also handing each event (with its mount) to `on_event` and each name learned to
/// `on_name` (a container's track name with `true`, a mount point with `false`), in file order.
pub fn replay_with(
    path: &Path,
    mut on_event: impl FnMut(&Event, MountKey),
    mut on_name: impl FnMut(MountKey, String, bool),
) -> Result<(Report, Option<String>)> {
    let bad =
        |line: usize, why: String| anyhow!(BadInput(format!("{}:{line}: {why}", path.display())));
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut r = BufReader::new(f);
    let mut agg = Aggregate::default();
    let mut kernel: Option<String> = None;
    let mut end: Option<(f64, EventCounts, Vec<ProbeReport>)> = None;
    let mut line = String::new();
    let mut n = 0;
    let mut cut = None;
    loop {
        line.clear();
        let read = (&mut r)
            .take(LINE_MAX)
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        if read as u64 == LINE_MAX && !line.ends_with('\n') {
            return Err(bad(n, "a line longer than 1 MiB".into()));
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            // The last line, without its newline: the writer was killed mid-line.
            Err(_) if !line.ends_with('\n') && kernel.is_some() => {
                cut = Some(n);
                break;
            }
            Err(e) => return Err(bad(n, format!("not JSON: {e}"))),
        };
        let kind = v["type"].as_str().unwrap_or("").to_string();
        if kernel.is_none() && kind != "header" {
            return Err(bad(
                n,
                "not an overlay-trace events file (no header record first; files written \
                 before 0.1 have none)"
                    .into(),
            ));
        }
        match kind.as_str() {
            "copy_up" | "lookup" | "mount" => {
                let e: Event =
                    serde_json::from_value(v).map_err(|e| bad(n, format!("bad {kind}: {e}")))?;
                let added = agg.add(&e);
                on_event(&e, added.key);
            }
            _ => {
                let rec: Record = serde_json::from_value(v)
                    .map_err(|e| bad(n, format!("unknown record: {e}")))?;
                let key = |dev, mount_gen| MountKey {
                    dev,
                    generation: mount_gen,
                };
                match rec {
                    Record::Header {
                        schema_version,
                        kernel: ref k,
                        ..
                    } => {
                        if schema_version > SCHEMA_VERSION {
                            return Err(bad(
                                n,
                                format!(
                                    "written for schema version {schema_version}; this overlay-trace reads up to {SCHEMA_VERSION}"
                                ),
                            ));
                        }
                        kernel = Some(k.clone());
                    }
                    Record::End {
                        traced_seconds,
                        ref events,
                        ref probes,
                    } => end = Some((traced_seconds, events.clone(), probes.clone())),
                    Record::NamedMount {
                        dev,
                        mount_gen,
                        ref mount,
                    } => on_name(key(dev, mount_gen), mount.mount_point.clone(), false),
                    Record::NamedContainer {
                        dev,
                        mount_gen,
                        ref container,
                    }
                    | Record::Known {
                        dev,
                        mount_gen,
                        ref container,
                        ..
                    } => on_name(key(dev, mount_gen), container.track_name(), true),
                    _ => {}
                }
                apply(&mut agg, rec);
            }
        }
    }
    let Some(kernel) = kernel else {
        return Err(bad(0, "empty: not an overlay-trace events file".into()));
    };
    let warning = match (cut, end.is_some()) {
        (Some(line), _) => Some(format!(
            "{}:{line}: the last line was cut short (the run was killed while writing it); \
             everything before it is replayed, the time traced and the kernel side's loss \
             counts are unknown",
            path.display()
        )),
        (None, false) => Some(format!(
            "{} has no end record (the run was cut short): the time traced and the kernel \
             side's loss counts are unknown",
            path.display()
        )),
        (None, true) => None,
    };
    let (traced, counts, probes) = end.unwrap_or_default();
    let mut report = Report::build(&agg, kernel, traced, counts);
    report.probes = probes;
    Ok((report, warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::raw,
        report::json,
        run::{collector::Collector, naming::Named, outputs::EventsFile},
    };
    use overlay_trace_common::{LOOKUP_LOWER, LOOKUP_NEGATIVE};

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
            missed: None,
        }];
        let mut out = c.events.take().unwrap();
        out.record(&Record::End {
            traced_seconds: live.traced_seconds,
            events: live.events.clone(),
            probes: live.probes.clone(),
        });
        assert!(out.finish().is_none());
        assert!(is_events_file(&path));
        let (replayed, warning) = replay(&path).unwrap();
        assert_eq!(warning, None);
        assert!(!live.retired.is_empty(), "the run folded mounts");
        assert_eq!(json::to_string(&replayed), json::to_string(&live));
    }

    #[test]
    fn bad_events_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ndjson");
        std::fs::write(&p, "{\"type\":\"copy_up\"}\n").unwrap();
        let e = replay(&p).unwrap_err();
        assert!(
            format!("{e:#}").contains("x.ndjson:1: not an overlay-trace events file"),
            "{e:#}"
        );
        std::fs::write(
            &p,
            "{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}\n{\"type\":\"bogus\"}\n",
        )
        .unwrap();
        let e = replay(&p).unwrap_err();
        assert!(format!("{e:#}").contains(":2: unknown record"), "{e:#}");
        assert!(e.chain().any(|c| c.is::<BadInput>()));
        std::fs::write(
            &p,
            "{\"type\":\"header\",\"schema_version\":1,\"tool_version\":\"t\",\"kernel\":\"k\"}\n",
        )
        .unwrap();
        let (r, warning) = replay(&p).unwrap();
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
        let (r, warning) = replay(&p).unwrap();
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
        let e = replay(&p).unwrap_err();
        assert!(format!("{e:#}").contains(":2: not JSON"), "{e:#}");

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
        let (r, _) = replay(&p).unwrap();
        let out = crate::report::text::render(&r);
        assert!(out.contains("container n (a\u{e9}"), "{out}");
        assert_eq!(r.mounts[0].copy_up.total_ns, u64::MAX);
    }
}

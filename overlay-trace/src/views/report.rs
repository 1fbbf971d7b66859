//! The report: a serializable summary built from the aggregate, rendered as text or JSON.
//! `schema_version` changes whenever a field changes meaning or disappears.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::aggregate::{Aggregate, Group, MountStats};
use crate::model::stats::{CopyUpStats, LookupStats, outcome_of_key};

use crate::model::latency::Latency;

use crate::stream::names::{Container, OverlayMount};

use crate::stream::event::LookupOutcome;

use crate::stream::record::{EventCounts, ProbeReport, SCHEMA_VERSION};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: String,
    pub kernel: String,
    /// Seconds the probes were attached.
    pub traced_seconds: f64,
    pub events: EventCounts,
    /// What to change, with evidence, fix and estimated saving (`views::findings`).
    #[serde(default)]
    pub findings: Vec<crate::views::findings::Finding>,
    /// Mounts kept in detail: those alive at the end, and the most recent ones gone while
    /// tracing (aggregate.rs says how many).
    pub mounts: Vec<MountReport>,
    /// Mounts folded out of the detail (gone long ago, or beyond the caps), summed per
    /// container. Totals = `mounts` + `retired`.
    #[serde(default)]
    pub retired: Vec<GroupReport>,
    /// The probes, with the kernel's own hit and miss counts where it keeps them.
    #[serde(default)]
    pub probes: Vec<ProbeReport>,
    /// Why the `--events` file stopped before the end, if it did (the run then exits non-zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_file_error: Option<String>,
    /// Why the `--trace` timeline stopped before the end, if it did (the run then exits
    /// non-zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_file_error: Option<String>,
    /// Set by `overlay-trace bench`: what ran, where, and the spread over repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchInfo>,
    /// A replayed events file without its end record (a run killed): the time traced and the
    /// kernel side's loss counts are unknown, not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// The conditions of a benchmark run, so two reports can be compared knowingly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchInfo {
    pub scenario: String,
    /// The scenario file's content as run.
    pub scenario_source: String,
    pub mount_options: String,
    pub upper_fs: String,
    pub repeat: u32,
    /// Metric name -> median, min and max over the repeats (see `diff::METRICS`).
    pub metrics: BTreeMap<String, Spread>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountReport {
    /// Overlay superblock device, "major:minor" as in mountinfo.
    pub dev: String,
    /// Which mount of this device number (numbers are reused): 0 for one that existed before
    /// tracing, then +1 per mount seen. Events in `--events` carry the same `mount_gen`.
    pub mount_gen: u32,
    /// None when the mount was gone before it could be named.
    pub mount: Option<OverlayMount>,
    /// The container whose root this is, when a runtime claimed it.
    pub container: Option<Container>,
    /// Unmounted while tracing (or its device number taken by a newer mount).
    #[serde(default)]
    pub gone: bool,
    /// Lower layers (from the mount options).
    pub layers: Option<usize>,
    /// Time to mount this overlay (`ovl_fill_super`), when it was mounted while tracing.
    pub mount_ns: Option<u64>,
    pub copy_up: CopyUpReport,
    pub lookup: LookupReport,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyUpReport {
    pub count: u64,
    pub failed: u64,
    pub data_bytes: u64,
    pub data_ns: u64,
    /// Of `data_ns`, the syncs of the copied files (0 when not measured, or `volatile`).
    #[serde(default)]
    pub sync_ns: u64,
    pub total_ns: u64,
    pub latency: Latency,
    pub slowest: Vec<SlowCopyUpReport>,
    /// Calls that copied nothing: they waited for another thread's copy-up of the same object.
    #[serde(default)]
    pub waited: u64,
    #[serde(default)]
    pub waited_ns: u64,
    /// Copy-ups by the lower layer they came from, heaviest (total time) first. A mount's own
    /// report only (empty in folded summaries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_layer: Vec<LayerReport>,
    /// Copy-ups by what asked for them: chown, open, rename... ("unknown" where the kernel
    /// side could not read it).
    #[serde(default)]
    pub by_trigger: BTreeMap<String, TriggerReport>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerReport {
    pub count: u64,
    pub data_bytes: u64,
    pub total_ns: u64,
}

/// The copy-ups of one mount that came from one lower layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// 1 for the topmost lowerdir; 0 when the source was not found (the mount's layers were
    /// not known yet, or the path was cut short).
    pub layer: u32,
    /// The mount's number of lower layers.
    pub of: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowerdir: Option<String>,
    /// Position in the image, bottom first, and its layer count (Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_layer: Option<(u32, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The Dockerfile instruction that made the layer (Docker's image history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub count: u64,
    pub data_bytes: u64,
    pub total_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowCopyUpReport {
    pub path: String,
    /// The path's exact bytes in hex, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    pub path_truncated: bool,
    pub size: i64,
    pub mode: u32,
    /// None when no data was copied.
    pub data_bytes: Option<u64>,
    pub data_ns: Option<u64>,
    pub total_ns: u64,
    pub ret: i32,
    pub pid: u32,
    pub comm: String,
    /// The system call that asked for the copy-up, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// cgroup v2 id of the triggering task (0 or meaningless on cgroup v1).
    #[serde(default)]
    pub cgroup_id: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupReport {
    pub count: u64,
    pub latency: Latency,
    pub negative: u64,
    pub negative_share: f64,
    pub outcomes: BTreeMap<String, u64>,
    /// Layers consulted -> lookups.
    pub layers_consulted: BTreeMap<u32, u64>,
}

fn outcome_name(o: LookupOutcome) -> &'static str {
    match o {
        LookupOutcome::Upper => "upper",
        LookupOutcome::LowerOnly => "lower_only",
        LookupOutcome::Positive => "positive_layer_unknown",
        LookupOutcome::Negative => "negative",
        LookupOutcome::Error => "error",
    }
}

fn copy_up_report(c: &CopyUpStats) -> CopyUpReport {
    CopyUpReport {
        count: c.count,
        failed: c.failed,
        data_bytes: c.data_bytes,
        data_ns: c.data_ns,
        sync_ns: c.sync_ns,
        total_ns: c.total_ns,
        waited: c.waited,
        waited_ns: c.waited_ns,
        latency: Latency::of(&c.latency),
        slowest: c
            .slowest()
            .into_iter()
            .map(|s| SlowCopyUpReport {
                path: s.event.path.clone(),
                path_hex: s.event.path_hex.clone(),
                path_truncated: s.event.path_truncated,
                size: s.event.size,
                mode: s.event.mode,
                data_bytes: s.event.data.map(|d| d.bytes),
                data_ns: s.event.data.map(|d| d.ns),
                total_ns: s.duration_ns,
                ret: s.event.ret,
                pid: s.event.origin.tgid,
                comm: s.event.origin.comm.clone(),
                syscall: s.event.syscall.clone(),
                cgroup_id: s.event.origin.cgroup_id,
            })
            .collect(),
        by_layer: Vec::new(),
        by_trigger: c
            .by_trigger
            .iter()
            .map(|(k, t)| {
                (
                    k.to_string(),
                    TriggerReport {
                        count: t.count,
                        data_bytes: t.data_bytes,
                        total_ns: t.total_ns,
                    },
                )
            })
            .collect(),
    }
}

/// A mount's copy-ups by source layer, named with what the runtime says of each layer.
fn by_layer(m: &MountStats) -> Vec<LayerReport> {
    let lowerdirs = m
        .mount
        .as_ref()
        .map(|m| m.lowerdirs.as_slice())
        .unwrap_or(&[]);
    let mut out: Vec<LayerReport> = m
        .copy_ups
        .by_layer
        .iter()
        .map(|(&layer, t)| {
            let info = m.layer(layer);
            LayerReport {
                layer,
                of: lowerdirs.len() as u32,
                lowerdir: info.map(|i| i.lowerdir.clone()).or_else(|| {
                    (layer > 0)
                        .then(|| lowerdirs.get(layer as usize - 1).cloned())
                        .flatten()
                }),
                image_layer: info.and_then(|i| i.image_layer),
                digest: info.and_then(|i| i.digest.clone()),
                created_by: info.and_then(|i| i.created_by.clone()),
                count: t.count,
                data_bytes: t.data_bytes,
                total_ns: t.total_ns,
            }
        })
        .collect();
    out.sort_by(|a, b| (b.total_ns, a.layer).cmp(&(a.total_ns, b.layer)));
    out
}

fn lookup_report(l: &LookupStats) -> LookupReport {
    let negative = l.outcome(LookupOutcome::Negative);
    LookupReport {
        count: l.count,
        latency: Latency::of(&l.latency),
        negative,
        negative_share: if l.count == 0 {
            0.0
        } else {
            negative as f64 / l.count as f64
        },
        outcomes: l
            .outcomes
            .iter()
            .map(|(k, v)| (outcome_name(outcome_of_key(*k)).to_string(), *v))
            .collect(),
        layers_consulted: l.layers.clone(),
    }
}

/// Retired mounts of one container (or of no container), summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The container label, `(no container)` or `(other)` beyond the cap on summaries.
    pub group: String,
    pub container: Option<Container>,
    /// Mounts folded into this row.
    pub mounts: u64,
    /// Of those, mounts whose `ovl_fill_super` was seen, and their total time.
    pub mounts_timed: u64,
    pub mount_ns_total: u64,
    pub copy_up: CopyUpReport,
    pub lookup: LookupReport,
}

fn mount_report(key: &crate::stream::record::MountKey, m: &MountStats) -> MountReport {
    MountReport {
        dev: key.dev.to_string(),
        mount_gen: key.generation,
        mount: m.mount.clone(),
        container: m.container.clone(),
        gone: m.gone,
        layers: m.mount.as_ref().map(|m| m.lowerdirs.len()),
        mount_ns: m.mount_ns,
        copy_up: CopyUpReport {
            by_layer: by_layer(m),
            ..copy_up_report(&m.copy_ups)
        },
        lookup: lookup_report(&m.lookups),
    }
}

fn group_report(label: &str, g: &Group) -> GroupReport {
    GroupReport {
        group: label.to_string(),
        container: g.container.clone(),
        mounts: g.mounts,
        mounts_timed: g.mounts_timed,
        mount_ns_total: g.mount_ns_total,
        copy_up: copy_up_report(&g.copy_ups),
        lookup: lookup_report(&g.lookups),
    }
}

impl Report {
    /// Mounts with copy-ups come first, by total copy-up time, then by lookups; summaries too.
    /// The report of the run that wrote an events file, from its fold.
    pub fn replayed(r: crate::model::replay::Replayed) -> Self {
        let incomplete = r.end.is_none().then(|| {
            "no end record (the run was cut short): time traced and loss counts unknown".to_string()
        });
        let (traced, counts, probes) = r.end.unwrap_or_default();
        let mut report = Report::build(&r.agg, r.kernel, traced, counts);
        report.probes = probes;
        report.incomplete = incomplete;
        report
    }

    pub fn build(
        agg: &Aggregate,
        kernel: String,
        traced_seconds: f64,
        mut events: EventCounts,
    ) -> Self {
        events.copy_up = agg.copy_up_events;
        events.lookup = agg.lookup_events;
        events.mount = agg.mount_events;
        events.rename_refused = agg.rename_events;
        let mut mounts: Vec<MountReport> =
            agg.mounts.iter().map(|(k, m)| mount_report(k, m)).collect();
        mounts.sort_by(|a, b| {
            (b.copy_up.total_ns, b.lookup.count).cmp(&(a.copy_up.total_ns, a.lookup.count))
        });
        let mut retired: Vec<GroupReport> = agg
            .retired
            .iter()
            .map(|(l, g)| group_report(l, g))
            .collect();
        retired.sort_by(|a, b| {
            (b.copy_up.total_ns, b.lookup.count).cmp(&(a.copy_up.total_ns, a.lookup.count))
        });
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel,
            traced_seconds,
            events,
            findings: crate::views::findings::findings(agg, traced_seconds),
            mounts,
            retired,
            probes: Vec::new(),
            events_file_error: None,
            trace_file_error: None,
            incomplete: None,
            bench: None,
        }
    }
}

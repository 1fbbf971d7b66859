//! Findings: what to change, read from the model's evidence (`model::evidence`), each with its
//! evidence, its fix and an estimate of what the fix saves. One definition for the live report
//! and `report events.ndjson` (both build the report from the same fold).
//!
//! Thresholds (the README states them): `metadata-copy` from `METADATA_COPY_BYTES` copied on one
//! mount; `big-file-copy` for each file of `BIG_FILE_BYTES` or more; `deep-layers` from
//! `DEEP_LOOKUPS` negative lookups of `DEEP_LOOKUP_LAYERS` layers or more on one mount;
//! `lower-dir-rename` from one refused rename; `copy-up-sync` from `SYNC_NS` of syncs that are
//! `SYNC_SHARE` of the mount's copy-up time.

use serde::{Deserialize, Serialize};

use crate::{
    base::escape::escape,
    model::{
        aggregate::Aggregate,
        evidence::{BIG_FILE_BYTES, DEEP_LOOKUP_LAYERS, Item, Tally},
    },
    views::text::{bytes, ns},
};

/// Data copied on one mount for changes of metadata alone, from which it is a finding.
pub const METADATA_COPY_BYTES: u64 = 1 << 20;
/// Deep negative lookups on one mount from which they are a finding.
pub const DEEP_LOOKUPS: u64 = 100;
/// Sync time inside one mount's copy-ups from which it is a finding: this much, and this share
/// of the copy-up time.
pub const SYNC_NS: u64 = 10_000_000;
pub const SYNC_SHARE: f64 = 0.25;

/// Every finding id, for `--fail-on`.
pub const IDS: &[&str] = &[
    "metadata-copy",
    "big-file-copy",
    "deep-layers",
    "lower-dir-rename",
    "copy-up-sync",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    /// The mount it is about: its mount point (or device number) and container, if any.
    pub mount: String,
    /// Its device number and which mount of it (as records and the JSON's mounts say).
    #[serde(default)]
    pub dev: String,
    #[serde(default)]
    pub mount_gen: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// One line: what happened.
    pub summary: String,
    pub count: u64,
    pub bytes: u64,
    pub time_ns: u64,
    /// `time_ns` as a share of the traced span and of the mount's copy-up time.
    pub share_of_traced: f64,
    pub share_of_copy_up_time: f64,
    /// The objects that weigh most, with who touched them and where they came from.
    pub top: Vec<Evidence>,
    pub fix: String,
    /// What the fix would save, estimated from the evidence.
    pub saving_ns: u64,
    pub saving_bytes: u64,
    /// The fix tried (`report --verify`): the recorded start replayed by the bench with and
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

/// A fix that is a mount option, measured on the bench's overlay: the copy-ups the finding is
/// about (for `metadata-copy`, those asked for by a change of metadata alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub mount_option: String,
    pub without: Measured,
    pub with: Measured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub copy_ups: u64,
    pub data_bytes: u64,
    pub total_ns: u64,
}

/// The mount option that fixes finding `id`, if one does.
pub fn mount_option_fix(id: &str) -> Option<&'static str> {
    (id == "metadata-copy").then_some("metacopy=on")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub path: String,
    pub bytes: u64,
    pub time_ns: u64,
    pub process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// Source layer (1: topmost lowerdir) and what made it (a Dockerfile line), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// The findings of every mount in detail, most time first.
pub fn findings(agg: &Aggregate, traced_seconds: f64) -> Vec<Finding> {
    let traced_ns = (traced_seconds * 1e9).max(1.0);
    let name = |c: Option<&crate::stream::names::Container>| {
        c.map(|c| format!("{} ({}, {})", c.name, c.short_id(), c.runtime))
    };
    let mut out = Vec::new();
    for (key, m) in &agg.mounts {
        let created_by = |i: &Item| {
            i.layer
                .and_then(|l| m.layer(l))
                .and_then(|l| l.created_by.clone())
        };
        let subject = Subject {
            evidence: &m.evidence,
            copy_up_ns: m.copy_ups.total_ns,
            layers: m.mount.as_ref().map_or(0, |o| o.lowerdirs.len()),
            mount_ns: m.mount_ns,
            created_by: &created_by,
        };
        for mut f in of(&subject) {
            f.mount = m.mount.as_ref().map_or_else(
                || format!("dev {} #{}", key.dev, key.generation),
                |o| o.mount_point.clone(),
            );
            (f.dev, f.mount_gen) = (key.dev.to_string(), key.generation);
            f.container = name(m.container.as_ref());
            out.push(f);
        }
    }
    // Mounts folded out of the detail keep their findings, per group.
    for (label, g) in &agg.retired {
        let subject = Subject {
            evidence: &g.evidence,
            copy_up_ns: g.copy_ups.total_ns,
            layers: 0,
            mount_ns: None,
            created_by: &|i: &Item| i.created_by.clone(),
        };
        for mut f in of(&subject) {
            f.mount = format!("{} mounts folded: {label}", g.mounts);
            f.container = name(g.container.as_ref());
            out.push(f);
        }
    }
    // Unknown (0) without a time traced: a replayed run cut short.
    if traced_seconds > 0.0 {
        for f in &mut out {
            f.share_of_traced = f.time_ns as f64 / traced_ns;
        }
    }
    out.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(a.id.cmp(&b.id)));
    out
}

/// What findings are read from: one mount in detail, or a group of folded mounts.
struct Subject<'a> {
    evidence: &'a crate::model::evidence::Evidence,
    copy_up_ns: u64,
    /// Lower layers (0: not known, a group).
    layers: usize,
    mount_ns: Option<u64>,
    created_by: &'a dyn Fn(&Item) -> Option<String>,
}

fn of(m: &Subject) -> Vec<Finding> {
    let e = m.evidence;
    let copy_up_ns = m.copy_up_ns.max(1) as f64;
    let mut out = Vec::new();
    let finding = |id: &str, t: &Tally, summary: String, fix: &str, saving_ns: u64| Finding {
        id: id.into(),
        mount: String::new(),
        dev: String::new(),
        mount_gen: 0,
        container: None,
        summary,
        count: t.count,
        bytes: t.bytes,
        time_ns: t.total_ns,
        share_of_traced: 0.0,
        share_of_copy_up_time: t.total_ns as f64 / copy_up_ns,
        top: t.items.iter().map(|i| evidence(m, i)).collect(),
        fix: fix.into(),
        saving_ns,
        saving_bytes: t.bytes,
        verified: None,
    };
    let meta = &e.metadata_copy;
    if meta.bytes >= METADATA_COPY_BYTES {
        out.push(finding(
            "metadata-copy",
            meta,
            format!(
                "{} copied whole ({}) to change only their metadata (chmod, chown, touch, xattrs, \
                 rename, link)",
                files(meta.count),
                bytes(meta.bytes)
            ),
            "mount with metacopy=on (only the metadata is copied until a write; the kernel's \
             documentation warns against it with lower layers from untrusted sources), or set \
             the owner and mode at build time (COPY --chown, chmod in the RUN that makes them)",
            // metacopy skips the data copy: its time is what goes.
            meta.data_ns,
        ));
    }
    let big = &e.big_files;
    if big.count > 0 {
        out.push(finding(
            "big-file-copy",
            big,
            format!(
                "{} of {} or more from the image copied up whole to be written ({})",
                files(big.count),
                bytes(BIG_FILE_BYTES),
                bytes(big.bytes)
            ),
            "keep files written at run time out of the image: a volume (or tmpfs) for logs and \
             data, or create the file at start",
            big.total_ns,
        ));
    }
    let deep = &e.deep_lookups;
    if deep.count >= DEEP_LOOKUPS {
        let layers = m.layers;
        let avg = deep.layers as f64 / deep.count as f64;
        // Squashed, each would consult one layer: time scales with layers consulted.
        let saving = (deep.total_ns as f64 * (1.0 - 1.0 / avg.max(1.0))) as u64;
        out.push(Finding {
            id: "deep-layers".into(),
            mount: String::new(),
            dev: String::new(),
            mount_gen: 0,
            container: None,
            summary: format!(
                "{} negative lookups consulted {DEEP_LOOKUP_LAYERS} layers or more ({avg:.1} on \
                 average{}{})",
                deep.count,
                if layers > 0 {
                    format!("; {layers} lower layers")
                } else {
                    String::new()
                },
                m.mount_ns
                    .map(|t| format!(", mounted in {}", ns(t)))
                    .unwrap_or_default()
            ),
            count: deep.count,
            bytes: 0,
            time_ns: deep.total_ns,
            share_of_traced: 0.0,
            share_of_copy_up_time: 0.0,
            top: Vec::new(),
            fix: "squash the image into fewer layers (a multi-stage build copying the result into \
                  one layer), or shorten search paths (PATH, PYTHONPATH) to where names are"
                .into(),
            saving_ns: saving,
            saving_bytes: 0,
            verified: None,
        });
    }
    if e.sync_ns >= SYNC_NS && e.sync_ns as f64 >= SYNC_SHARE * copy_up_ns {
        let mut f = finding(
            "copy-up-sync",
            &e.synced,
            format!(
                "{} spent syncing the {} copied up (overlayfs fsyncs each one to its upper \
                 filesystem)",
                ns(e.sync_ns),
                files(e.synced.count)
            ),
            "mount the overlay with volatile where the runtime lets you add mount options \
             (no syncs; after a crash the upper and work directories must be thrown away, \
             which suits containers recreated from their image), or put the upper directory on \
             a filesystem whose syncs are cheap",
            e.sync_ns,
        );
        (f.time_ns, f.saving_bytes) = (e.sync_ns, 0);
        f.share_of_copy_up_time = e.sync_ns as f64 / copy_up_ns;
        out.push(f);
    }
    let ren = &e.refused_renames;
    if ren.count > 0 {
        let mut f = finding(
            "lower-dir-rename",
            ren,
            format!(
                "{} rename{} of a directory from a lower layer refused by overlayfs (EXDEV): the \
                 caller (mv) copied each tree itself, file by file",
                ren.count,
                if ren.count == 1 { "" } else { "s" }
            ),
            "mount with redirect_dir=on (the directory is then renamed in place; Docker's \
             overlay2 does not set it; not with untrusted lower layers, the kernel's \
             documentation warns), or make the directory where it is needed at build time",
            0,
        );
        // The copy is the caller's, in userspace: its cost is not seen here.
        f.share_of_copy_up_time = 0.0;
        out.push(f);
    }
    out
}

fn files(n: u64) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}

fn evidence(m: &Subject, i: &Item) -> Evidence {
    Evidence {
        path: i.path.clone(),
        bytes: i.bytes,
        time_ns: i.total_ns,
        process: format!("{}[{}]", i.comm, i.tgid),
        syscall: i.syscall.clone(),
        layer: i.layer,
        created_by: (m.created_by)(i),
    }
}

/// The findings `--fail-on` names (`any` names them all), as one line each for stderr.
pub fn failing(findings: &[Finding], fail_on: &[String]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| fail_on.iter().any(|id| id == "any" || *id == f.id))
        .map(|f| {
            format!(
                "overlay-trace: finding {} on {} (--fail-on)",
                f.id,
                escape(&f.mount)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;

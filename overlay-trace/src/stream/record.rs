//! Records: everything that changes a number. Kernel events (`event`) and the answers of the
//! naming and enrichment side, as the events file carries them and the model applies them; the
//! keys they name mounts and copy-ups by; the loss counts and probes a run ends with.

use serde::{Deserialize, Serialize};

use crate::stream::{
    event::{CopyUp, Dev},
    names::{Container, OverlayMount},
};

pub const SCHEMA_VERSION: u32 = 1;

/// One overlay superblock's life. Anonymous device numbers are reused as soon as a mount goes
/// away (Docker mounts each container's init layer briefly, then its root, often on the same
/// number), so each mount seen being made (`ovl_fill_super`) starts a new generation of its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MountKey {
    pub dev: Dev,
    /// 0 for a mount that existed before tracing started; +1 per mount of this device seen.
    pub generation: u32,
}

/// A copy-up as a later answer about it (its source layer) names it: its arrival number, and
/// what it adds to its layer's tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyUpRef {
    pub seq: u64,
    pub data_bytes: u64,
    pub duration_ns: u64,
}

impl CopyUpRef {
    pub fn of(c: &CopyUp, seq: u64) -> Self {
        Self {
            seq,
            data_bytes: c.data.map_or(0, |d| d.bytes),
            duration_ns: c.duration_ns,
        }
    }
}

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
        layers: Vec<crate::stream::names::LayerInfo>,
    },
    /// A copy-up's source layer, found after its event was written.
    SourceLayer {
        dev: Dev,
        mount_gen: u32,
        #[serde(flatten)]
        copy_up: crate::stream::record::CopyUpRef,
        layer: u32,
    },
    /// A refused rename's source layer (the layer of the directory it could not move), found
    /// after its event was written; `seq` is the rename's arrival number.
    RenameLayer {
        dev: Dev,
        mount_gen: u32,
        seq: u64,
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

/// What was seen and what was lost: nothing is dropped silently.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub copy_up: u64,
    pub lookup: u64,
    pub mount: u64,
    /// Renames overlayfs refused with -EXDEV (the only renames recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rename_refused: u64,
    /// Ring buffer full: events the kernel could not hand over.
    pub dropped_copy_up: u64,
    pub dropped_lookup: u64,
    pub dropped_mount: u64,
    /// Calls whose start could not be recorded (in-flight table full, or nested too deep).
    pub untracked_calls: u64,
    /// Calls whose return was never seen (the kernel missed it, e.g. beyond a kretprobe's
    /// maxactive, or the call was still running when tracing stopped): not reported.
    #[serde(default)]
    pub missed_return_copy_up: u64,
    #[serde(default)]
    pub missed_return_lookup: u64,
    #[serde(default)]
    pub missed_return_mount: u64,
    /// Data copies whose return was never seen: their copy-up is reported without that time.
    #[serde(default)]
    pub missed_return_data: u64,
    /// Returns of calls that began before the probes were attached (not a loss).
    #[serde(default)]
    pub orphan_returns: u64,
    /// Calls the kernel never let us see start: their fentry program was skipped (its
    /// recursion guard held, `bpf_prog_info.recursion_misses`). Not reported: lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_calls: u64,
    /// Other fentry/fexit runs the kernel skipped: returns (also found as missed returns) and
    /// details (a data copy's time, a lookup's layer, whether a copy-up owned its copy).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_runs: u64,
    /// Kernel reads that failed (fields left zero in an event that was still sent).
    pub kernel_read_errors: u64,
    /// Process starts the ring buffer could not take (`--trace` only: the timeline lacks them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_exec: u64,
    /// Refused renames (`rename` events) the ring buffer could not take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_rename: u64,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    /// Enrichment work (a copy-up's source layer, a mount's name) abandoned after its time
    /// budget: a path that did not answer (FUSE, NFS). Its copy-ups stay "layer unknown".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enrich_abandoned: u64,
    /// Enrichment work not attempted: its mount had work abandoned, too many were stuck at
    /// once, or the queue was full. Numbers are unaffected; only names and layers are missing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enrich_skipped: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl EventCounts {
    /// Saturating, as every sum here: counts from a file may be anything, and a wrapped sum
    /// would read "no events lost".
    pub fn lost(&self) -> u64 {
        [
            self.dropped_copy_up,
            self.dropped_lookup,
            self.dropped_mount,
            self.untracked_calls,
            self.skipped_calls,
            self.decode_errors,
            self.missed_returns(),
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }

    pub fn missed_returns(&self) -> u64 {
        self.missed_return_copy_up
            .saturating_add(self.missed_return_lookup)
            .saturating_add(self.missed_return_mount)
    }
}

/// One probe as the report shows it, with the kernel's own counts where it keeps them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeReport {
    pub program: String,
    pub function: String,
    /// "kprobe" or "kretprobe".
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxactive: Option<u32>,
    /// The kernel's counts (`kprobe_profile`), when the probe was made through tracefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// Why this function has a kprobe although `--probes auto` planned fentry/fexit for it: the
    /// kernel's refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

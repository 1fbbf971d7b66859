//! The fold of a recorded stream: an events file (`stream::input`) folded into the same model a
//! live run builds, through the same steps: `Aggregate::add` for each event, `apply` for each
//! record, in the order the live run took them. So `report events.ndjson` gives the live
//! report, field for field.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{
    model::aggregate::Aggregate,
    stream::{
        event::Event,
        input::{self, Item},
        record::{EventCounts, MountKey, ProbeReport, Record},
    },
};

/// Applies a naming or enrichment record: the one place such a record changes the model, for
/// the live run (its fold applies what the naming side answers, as it writes it) and for a
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
        Record::RenameLayer {
            dev,
            mount_gen,
            seq,
            layer,
        } => agg.set_rename_layer(key(dev, mount_gen), seq, layer),
        Record::Known {
            dev,
            mount_gen,
            mount,
            container,
        } => agg.add_known(key(dev, mount_gen), mount, container),
        Record::Header { .. } | Record::End { .. } => {}
    }
}

/// An events file, folded.
pub struct Replayed {
    pub agg: Aggregate,
    pub kernel: String,
    /// The end record: time traced, the kernel side's loss counts, the probes.
    pub end: Option<(f64, EventCounts, Vec<ProbeReport>)>,
    /// Why the file is not whole, when it is not: no end record (an interrupted run), or a last
    /// line cut short (a run killed mid-write: everything before it is replayed).
    pub warning: Option<String>,
}

pub fn replay(path: &Path) -> Result<Replayed> {
    replay_with(path, |_, _| {}, |_, _, _| {})
}

/// `replay`, also handing each event (with its mount) to `on_event` and each name learned to
/// `on_name` (a container's track name with `true`, a mount point with `false`), in file order.
pub fn replay_with(
    path: &Path,
    on_event: impl FnMut(&Event, MountKey),
    on_name: impl FnMut(MountKey, String, bool),
) -> Result<Replayed> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    replay_from(path, f, on_event, on_name)
}

/// `replay_with` of what `r` holds (a pipe's bytes, read once); `path` names it in messages.
pub fn replay_from(
    path: &Path,
    r: impl std::io::Read,
    mut on_event: impl FnMut(&Event, MountKey),
    mut on_name: impl FnMut(MountKey, String, bool),
) -> Result<Replayed> {
    let mut agg = Aggregate::default();
    let mut kernel = String::new();
    let mut end = None;
    let cut = input::read_from(path, r, |item| {
        match item {
            Item::Event(e) => {
                let added = agg.add(&e);
                on_event(&e, added.key);
            }
            Item::Record(rec) => {
                let key = |dev, mount_gen| MountKey {
                    dev,
                    generation: mount_gen,
                };
                match &rec {
                    Record::Header { kernel: k, .. } => kernel = k.clone(),
                    Record::End {
                        traced_seconds,
                        events,
                        probes,
                    } => end = Some((*traced_seconds, events.clone(), probes.clone())),
                    Record::NamedMount {
                        dev,
                        mount_gen,
                        mount,
                    } => on_name(key(*dev, *mount_gen), mount.mount_point.clone(), false),
                    Record::NamedContainer {
                        dev,
                        mount_gen,
                        container,
                    }
                    | Record::Known {
                        dev,
                        mount_gen,
                        container,
                        ..
                    } => on_name(key(*dev, *mount_gen), container.track_name(), true),
                    _ => {}
                }
                apply(&mut agg, rec);
            }
        }
        Ok(())
    })?;
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
    Ok(Replayed {
        agg,
        kernel,
        end,
        warning,
    })
}

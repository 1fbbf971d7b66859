//! Turns ring buffer records into the aggregate's numbers and the `--events` lines, and applies
//! what the naming thread found out. Bookkeeping; its only I/O besides the output files is
//! finding a copied-up object's source layer (see `source_layer_of`).

use std::{collections::HashMap, time::Instant};

use crate::{
    aggregate::{Aggregate, MountKey},
    events::Event,
    replay::Record,
    run::{kernel_side::MountClock, naming::Named, outputs::EventsFile, timeline::TraceFile},
    serve::metrics::Shared,
};

#[derive(Default)]
pub struct Collector {
    pub agg: Aggregate,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    pub events: Option<EventsFile>,
    /// `--trace`: the Chrome trace timeline.
    pub trace: Option<TraceFile>,
    /// `serve`'s numbers, fed with the same events.
    pub metrics: Option<Shared>,
    /// Paths copied up on mounts not named yet, for the naming thread (`Naming::copied_up`);
    /// the loop empties it after each record.
    pub copied_unnamed: Vec<(MountKey, String)>,
    /// Lowerdirs of mounts copied up on before the naming thread answered, read from mountinfo
    /// at their first copy-up (None: not found there).
    pub early_lowerdirs: HashMap<MountKey, Option<Vec<String>>>,
    /// With each mount's `alive_ns`, what tells it from a later mount of its device number.
    pub clock: MountClock,
}

/// A mount seen for the first time: the naming thread's `Request::Name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMount {
    pub key: MountKey,
    /// The process that touched it.
    pub tgid: u32,
    /// A moment it was alive (`MountStats::alive_ns`).
    pub alive_ns: u64,
}

/// Mounts whose early lowerdirs are remembered (beyond, the memory starts over).
const EARLY_MAX: usize = 4096;

impl Collector {
    /// Takes one record. Returns the mount to name when this is its first event.
    pub fn take(&mut self, record: &[u8]) -> Option<NewMount> {
        if let Some(o) = crate::events::decode_exec(record) {
            if let Some(t) = self.trace.as_mut() {
                t.exec(&o);
            }
            return None;
        }
        let Ok(mut e) = Event::try_from(record) else {
            self.decode_errors += 1;
            return None;
        };
        if let Event::CopyUp(c) = &mut e {
            // The source layer, while the lower layers are at hand (they are read-only, so
            // looking now or at the copy-up is the same). Not for a path that is cut short or
            // not UTF-8: its name below is not known exactly.
            if !c.waited && !c.path_truncated && c.path_hex.is_none() {
                let key = self.agg.current(c.origin.dev);
                if self.agg.mounts.get(&key).is_none_or(|m| m.mount.is_none()) {
                    self.copied_unnamed.push((key, c.path.clone()));
                }
                c.layer = self.source_layer_of(key, c.origin.tgid, &c.path);
            }
        }
        let before = self.agg.current(e.origin().dev);
        let added = self.agg.add(&e);
        if let Some(out) = self.events.as_mut() {
            out.write(&e, added.key.generation);
        }
        if let Some(t) = self.trace.as_mut() {
            t.write(&e, added.key);
        }
        if let Some(m) = &self.metrics {
            let now = Instant::now();
            let mut m = lock(m);
            // A new mount on this device number: the one before is gone, whether or not the
            // naming thread saw it leave (it may have lived in another mount namespace).
            if added.key != before {
                m.gone(before, now);
            }
            m.observe(added.key, &e, now);
        }
        if !added.new_mount {
            return None;
        }
        Some(NewMount {
            key: added.key,
            tgid: e.origin().tgid,
            alive_ns: e.origin().start_ns,
        })
    }

    /// Which lowerdir of `key` holds `path`. The lowerdirs, from `/`: the runtime's view once
    /// named (mountinfo may show them relative to the runtime's layer directory), else
    /// mountinfo's; for a mount not named yet (a runtime often copies up at once), mountinfo
    /// read now, ours or the process's, once per mount.
    fn source_layer_of(&mut self, key: MountKey, tgid: u32, path: &str) -> Option<u32> {
        use crate::layers::source_layer;
        if let Some(m) = self.agg.mounts.get(&key) {
            if !m.layers.is_empty() {
                return source_layer(m.layers.iter().map(|l| l.lowerdir.as_str()), path);
            }
            if let Some(mount) = &m.mount {
                return source_layer(mount.lowerdirs.iter().map(String::as_str), path);
            }
        }
        if !self.early_lowerdirs.contains_key(&key) {
            let found = self
                .clock
                .while_recording(|| {
                    crate::mounts::read_overlay_mounts()
                        .ok()
                        .and_then(|mut all| all.remove(&key.dev))
                        .or_else(|| crate::run::naming::foreign_mount(tgid, key.dev))
                })
                .flatten()
                // Not a later mount of the device number (its lowerdirs may differ); asked
                // after mountinfo was read.
                .filter(|_| {
                    let alive = self.agg.mounts.get(&key).map_or(0, |m| m.alive_ns);
                    !self.clock.superseded(key.dev, alive)
                })
                .map(|m| m.lowerdirs);
            if self.early_lowerdirs.len() >= EARLY_MAX {
                self.early_lowerdirs.clear();
            }
            self.early_lowerdirs.insert(key, found);
        }
        let dirs = self.early_lowerdirs.get(&key)?.as_ref()?;
        source_layer(dirs.iter().map(String::as_str), path)
    }

    /// Applies an answer of the naming thread; returns a warning to show, if any.
    pub fn apply(&mut self, n: Named) -> Option<String> {
        if let Some(m) = &self.metrics {
            let now = Instant::now();
            match &n {
                Named::Container { key, container } => lock(m).named(*key, container, now),
                Named::Unclaimed { key } => lock(m).unclaimed(*key, now),
                Named::Gone { key } => lock(m).gone(*key, now),
                _ => {}
            }
        }
        if let Some(t) = self.trace.as_mut() {
            match &n {
                Named::Container { key, container } => t.name(*key, container.track_name(), true),
                Named::Mount { key, mount } => t.name(*key, mount.mount_point.clone(), false),
                _ => {}
            }
        }
        if let Some(out) = self.events.as_mut() {
            let record = match &n {
                Named::Mount { key, mount } => Some(Record::NamedMount {
                    dev: key.dev,
                    mount_gen: key.generation,
                    mount: mount.clone(),
                }),
                Named::Container { key, container } => Some(Record::NamedContainer {
                    dev: key.dev,
                    mount_gen: key.generation,
                    container: container.clone(),
                }),
                Named::Gone { key } => Some(Record::Gone {
                    dev: key.dev,
                    mount_gen: key.generation,
                }),
                Named::Layers { key, layers } => Some(Record::NamedLayers {
                    dev: key.dev,
                    mount_gen: key.generation,
                    layers: layers.clone(),
                }),
                _ => None,
            };
            if let Some(r) = record {
                out.record(&r);
            }
        }
        match n {
            Named::Mount { key, mount } => self.agg.set_mount(key, mount),
            Named::Container { key, container } => self.agg.set_container(key, container),
            Named::Gone { key } => self.agg.retire(key),
            Named::Layers { key, layers } => self.agg.set_layers(key, layers),
            Named::Warning(w) => return Some(w),
            Named::Unclaimed { .. } | Named::Done => {}
        }
        None
    }
}

/// The metrics, even when a thread panicked while holding them (numbers stay usable).
pub fn lock(m: &Shared) -> std::sync::MutexGuard<'_, crate::serve::metrics::Metrics> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

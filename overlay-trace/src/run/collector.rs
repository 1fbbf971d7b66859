//! Turns ring buffer records into the aggregate's numbers and the `--events` lines, and applies
//! what the naming thread found out. Pure bookkeeping: no I/O besides the events file.

use std::time::Instant;

use crate::{
    aggregate::{Aggregate, MountKey},
    events::Event,
    replay::Record,
    run::{naming::Named, outputs::EventsFile, timeline::TraceFile},
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
}

impl Collector {
    /// Takes one record. Returns the mount to name when this is its first event, with the
    /// process that touched it.
    pub fn take(&mut self, record: &[u8]) -> Option<(MountKey, u32)> {
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
                if let Some(m) = self.agg.mounts.get(&key) {
                    // The runtime's view of the layers has them from `/`; mountinfo's may be
                    // relative to the runtime's layer directory.
                    if !m.layers.is_empty() {
                        let dirs: Vec<String> =
                            m.layers.iter().map(|l| l.lowerdir.clone()).collect();
                        c.layer = crate::layers::source_layer(&dirs, &c.path);
                    } else if let Some(mount) = m.mount.as_ref() {
                        c.layer = crate::layers::source_layer(&mount.lowerdirs, &c.path);
                    }
                }
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
        added.new_mount.then_some((added.key, e.origin().tgid))
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
                Named::Container { key, container } => t.name(
                    *key,
                    format!(
                        "{} ({}{})",
                        container.name,
                        container.runtime,
                        container
                            .role
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    ),
                    true,
                ),
                Named::Mount { key, mount } => t.name(*key, mount.mount_point.clone(), false),
                _ => {}
            }
        }
        if let Some(out) = self.events.as_mut() {
            let (dev, mount_gen) = match &n {
                Named::Mount { key, .. }
                | Named::Container { key, .. }
                | Named::Layers { key, .. }
                | Named::Gone { key } => (key.dev, key.generation),
                _ => (crate::events::Dev { major: 0, minor: 0 }, 0),
            };
            match &n {
                Named::Mount { mount, .. } => out.record(&Record::NamedMount {
                    dev,
                    mount_gen,
                    mount: mount.clone(),
                }),
                Named::Container { container, .. } => out.record(&Record::NamedContainer {
                    dev,
                    mount_gen,
                    container: container.clone(),
                }),
                Named::Gone { .. } => out.record(&Record::Gone { dev, mount_gen }),
                Named::Layers { layers, .. } => out.record(&Record::NamedLayers {
                    dev,
                    mount_gen,
                    layers: layers.clone(),
                }),
                _ => {}
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

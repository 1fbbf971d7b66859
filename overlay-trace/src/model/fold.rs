//! Turns ring buffer records into the aggregate's numbers and the `--events` lines, and applies
//! what the naming side found out. Pure bookkeeping on the drain's thread: nothing here opens a
//! path or waits on anything outside the process; what needs the filesystem (a copy-up's source
//! layer, a mount's name) is asked of the enrichment threads and comes back as a record.

use crate::enrich::answer::NewMount;
use std::time::Instant;

use crate::model::aggregate::Aggregate;

use crate::stream::record::{CopyUpRef, MountKey, Record};

use crate::enrich::source_layers::LayerAsk;

use crate::stream::event::Event;

use crate::enrich::answer::Named;

use crate::stream::output::EventsFile;

use crate::model::series::Shared;

#[derive(Default)]
pub struct Collector {
    pub agg: Aggregate,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    pub events: Option<EventsFile>,
    /// `serve`'s numbers, fed with the same events.
    pub metrics: Option<Shared>,
    /// Paths copied up (successfully) on mounts not named yet, for the naming thread
    /// (`Naming::copied_up`); the loop empties it after each record.
    pub copied_unnamed: Vec<(MountKey, String, u32)>,
    /// Copy-ups whose source layer is to be looked up; the loop empties it after each record.
    pub layer_asks: Vec<LayerAsk>,
}

/// An event the fold took.
pub struct Taken {
    /// The mount it went to.
    pub key: MountKey,
    /// Set on the mount's first event: the mount to name while it still exists.
    pub new_mount: Option<NewMount>,
}

impl Collector {
    /// Takes one kernel event (None: a record that is not one, counted when undecodable).
    pub fn take(&mut self, record: &[u8]) -> Option<Taken> {
        self.take_and(record, |_, _| {})
    }

    /// As `take`; `also` sees the event after the fold (the Chrome trace), before its path moves
    /// on to the source-layer ask: the event is never copied.
    pub fn take_and(
        &mut self,
        record: &[u8],
        also: impl FnOnce(&Event, MountKey),
    ) -> Option<Taken> {
        let Ok(e) = Event::try_from(record) else {
            self.decode_errors += 1;
            return None;
        };
        let added = self.agg.add(&e);
        if let Some(before) = added.superseded {
            // A newer mount took the device number: the one before is gone.
            self.layer_asks.push(LayerAsk::Forget { key: before });
        }
        if let Some(out) = self.events.as_mut() {
            out.write(&e, added.key.generation);
        }
        if let Some(m) = &self.metrics {
            let now = Instant::now();
            let mut m = lock(m);
            // A new mount on this device number: the one before is gone, whether or not the
            // naming thread saw it leave (it may have lived in another mount namespace).
            if let Some(before) = added.superseded {
                m.gone(before, now);
            }
            m.observe(added.key, &e, now);
        }
        also(&e, added.key);
        let new_mount = added.new_mount.then(|| NewMount {
            key: added.key,
            tgid: e.origin().tgid,
            alive_ns: e.origin().start_ns,
        });
        match e {
            // Its source layer, looked up beside the drain; not for a wait (it copied nothing)
            // nor a path cut short or not UTF-8 (its name below is not known exactly).
            Event::CopyUp(c) if !c.is_wait() && !c.path_truncated && c.path_hex.is_none() => {
                // Only what was copied is evidence of which mount this is (a failed copy-up
                // may have left nothing in the upper dir).
                if !added.named && c.ret == 0 {
                    self.copied_unnamed
                        .push((added.key, c.path.clone(), c.origin.tgid));
                }
                self.layer_asks.push(LayerAsk::CopyUp {
                    key: added.key,
                    copy_up: CopyUpRef::of(&c, added.seq),
                    path: c.path,
                });
            }
            // A refused rename's directory: its layer names the Dockerfile line that made it.
            // Asked only for the renames the evidence keeps (the first few of a mount): a
            // tenant renaming in a loop costs the lookup thread nothing more.
            Event::Rename(r)
                if !r.path_truncated
                    && r.path_hex.is_none()
                    && self.agg.keeps_rename(added.key, added.seq) =>
            {
                self.layer_asks.push(LayerAsk::Rename {
                    key: added.key,
                    seq: added.seq,
                    path: r.path,
                });
            }
            _ => {}
        }
        Some(Taken {
            key: added.key,
            new_mount,
        })
    }

    /// A record that changes the model (a naming or enrichment answer, or a container known
    /// before tracing): written to `--events` as it is applied, so a replay applies the same.
    pub fn record(&mut self, r: Record) {
        if let Some(out) = self.events.as_mut() {
            out.record(&r);
        }
        crate::model::replay::apply(&mut self.agg, r);
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
        let record = match n {
            Named::Mount { key, mount } => Record::NamedMount {
                dev: key.dev,
                mount_gen: key.generation,
                mount,
            },
            Named::Container { key, container } => Record::NamedContainer {
                dev: key.dev,
                mount_gen: key.generation,
                container,
            },
            Named::Gone { key } => {
                self.layer_asks.push(LayerAsk::Forget { key });
                Record::Gone {
                    dev: key.dev,
                    mount_gen: key.generation,
                }
            }
            Named::Layers { key, layers } => Record::NamedLayers {
                dev: key.dev,
                mount_gen: key.generation,
                layers,
            },
            Named::SourceLayer {
                key,
                copy_up,
                layer,
            } => Record::SourceLayer {
                dev: key.dev,
                mount_gen: key.generation,
                copy_up,
                layer,
            },
            Named::RenameLayer { key, seq, layer } => Record::RenameLayer {
                dev: key.dev,
                mount_gen: key.generation,
                seq,
                layer,
            },
            Named::Warning(w) => return Some(w),
            Named::Unclaimed { .. } | Named::Done => return None,
        };
        self.record(record);
        None
    }
}

/// The metrics, even when a thread panicked while holding them (numbers stay usable).
pub fn lock(m: &Shared) -> std::sync::MutexGuard<'_, crate::model::series::Metrics> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::event::raw;
    use overlay_trace_common::COPY_UP_COPIED;

    #[test]
    fn only_what_was_copied_is_evidence_of_which_mount_this_is() {
        let mut c = Collector::default();
        // A full upper disk: the copy-up failed and left nothing in the upper dir.
        c.take(&raw::copy_up_ending(
            7,
            "a/full",
            1,
            1,
            10,
            -28,
            COPY_UP_COPIED,
        ));
        assert!(
            c.copied_unnamed.is_empty(),
            "a failed copy-up is no evidence"
        );
        c.take(&raw::copy_up(7, "a/ok", 1, 1, 10));
        assert_eq!(
            c.copied_unnamed
                .iter()
                .map(|(_, p, _)| p.as_str())
                .collect::<Vec<_>>(),
            ["/a/ok"]
        );
        // Both still counted, and the failed one as failed.
        let m = &c.agg.mounts[&c.agg.current(crate::stream::event::Dev::from_kernel(7))];
        assert_eq!((m.copy_ups.count, m.copy_ups.failed), (2, 1));
        // Both asked for their source layer.
        assert_eq!(c.layer_asks.len(), 2);
    }
}

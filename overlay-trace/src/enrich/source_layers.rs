//! The source layer of each copy-up (and of each refused rename's directory), found off the
//! drain's thread: the drain asks (mount, the event's arrival number, its path), the naming side
//! says where the mount's lowerdirs are (and in which mount namespace), and this thread looks the
//! path up beneath each lowerdir with a time budget per lookup (`Budgeted`). Each answer is a
//! `Named::SourceLayer` (or `Named::RenameLayer`) record that the model applies, live and in a
//! replay alike.
//!
//! A lookup that overruns its budget is abandoned (its thread may be stuck in the kernel for
//! good) and its mount's later copy-ups are not looked up at all: they stay "layer unknown",
//! counted as skipped. Everything is bounded: mounts remembered, asks waiting for a mount's
//! lowerdirs, and the queue from the drain (a full queue is counted, never waited on).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use tokio::sync::mpsc::UnboundedSender;

use crate::stream::record::{CopyUpRef, MountKey};

use crate::enrich::budget::{Budgeted, EnrichCounts, Outcome};

use crate::enrich::answer::{MountRoot, Named};

/// Time one lookup (a few `openat2` calls) may take before it is abandoned.
pub const LOOKUP_BUDGET: Duration = Duration::from_secs(1);
/// Messages queued from the drain and the naming threads.
const QUEUE_MAX: usize = 65_536;
/// Mounts whose lowerdirs (and root, an open file) are remembered; asks waiting for lowerdirs,
/// in all.
const MOUNTS_MAX: usize = 512;
const WAITING_MAX: usize = 65_536;
/// Asks of one mount waiting for its lowerdirs.
const WAITING_PER_MOUNT: usize = 4096;

/// What a path's layer is looked up for.
#[derive(Clone, Copy, Debug)]
enum Asked {
    CopyUp(CopyUpRef),
    Rename(u64),
}

pub enum LayerAsk {
    /// A copy-up whose source layer is wanted.
    CopyUp {
        key: MountKey,
        copy_up: CopyUpRef,
        path: String,
    },
    /// A refused rename whose directory's layer is wanted (`seq`: its arrival number).
    Rename {
        key: MountKey,
        seq: u64,
        path: String,
    },
    /// A mount's lowerdirs (topmost first) and the root they are resolved from.
    Lowerdirs {
        key: MountKey,
        root: MountRoot,
        dirs: Vec<String>,
    },
    /// The mount is gone (unmounted, or its device number taken by a newer mount): its asks and
    /// its root are let go.
    Forget { key: MountKey },
    /// The last ask has come: say `Named::Done` (asks still waiting for lowerdirs stay unknown).
    Finish,
}

/// The drain's and the naming threads' end of the source-layer thread.
#[derive(Clone)]
pub struct LayerAsks {
    tx: SyncSender<LayerAsk>,
    counts: Arc<EnrichCounts>,
}

impl LayerAsks {
    /// Never blocks: a full queue (the thread far behind) counts the ask as skipped.
    pub fn ask(&self, a: LayerAsk) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(a) {
            self.counts.skip();
        }
    }

    /// For the naming threads, whose messages must not be lost (`Finish`, lowerdirs): waits
    /// for room (the thread answers within a lookup's budget).
    pub fn tell(&self, a: LayerAsk) {
        let _ = self.tx.send(a);
    }
}

/// Starts the thread; it answers on `out`.
pub fn start(out: UnboundedSender<Named>, counts: Arc<EnrichCounts>) -> LayerAsks {
    let (tx, rx) = sync_channel(QUEUE_MAX);
    let worker = Budgeted::new("layers", counts.clone());
    let finder = LayerFinder {
        out,
        worker,
        counts: counts.clone(),
        mounts: HashMap::new(),
        order: VecDeque::new(),
        waiting: HashMap::new(),
        waiting_total: 0,
        stuck: HashSet::new(),
    };
    let spawned = std::thread::Builder::new()
        .name("layers".into())
        .spawn(move || finder.run(rx));
    if spawned.is_err() {
        // No thread: every ask is skipped (counted) and the final pass answers nothing.
        counts.skip();
    }
    LayerAsks { tx, counts }
}

struct LayerFinder {
    out: UnboundedSender<Named>,
    worker: Budgeted,
    counts: Arc<EnrichCounts>,
    /// Mount -> (root, lowerdirs).
    mounts: HashMap<MountKey, (MountRoot, Arc<Vec<String>>)>,
    order: VecDeque<MountKey>,
    /// Asks of mounts whose lowerdirs are not known yet.
    waiting: HashMap<MountKey, Vec<(Asked, String)>>,
    waiting_total: usize,
    /// Mounts one of whose lookups was abandoned: not looked up again.
    stuck: HashSet<MountKey>,
}

impl LayerFinder {
    fn run(mut self, rx: Receiver<LayerAsk>) {
        for a in rx {
            match a {
                LayerAsk::CopyUp { key, copy_up, path } => {
                    self.ask(key, Asked::CopyUp(copy_up), path)
                }
                LayerAsk::Rename { key, seq, path } => self.ask(key, Asked::Rename(seq), path),
                LayerAsk::Lowerdirs { key, root, dirs } => self.lowerdirs(key, root, dirs),
                LayerAsk::Forget { key } => self.forget(key),
                LayerAsk::Finish => {
                    let _ = self.out.send(Named::Done);
                    return;
                }
            }
        }
    }

    fn ask(&mut self, key: MountKey, asked: Asked, path: String) {
        if self.stuck.contains(&key) {
            self.counts.skip();
            return;
        }
        if self.mounts.contains_key(&key) {
            self.look_up(key, asked, path);
            return;
        }
        let waiting = self.waiting.entry(key).or_default();
        if self.waiting_total < WAITING_MAX && waiting.len() < WAITING_PER_MOUNT {
            waiting.push((asked, path));
            self.waiting_total += 1;
        } else {
            self.counts.skip();
        }
    }

    fn forget(&mut self, key: MountKey) {
        if let Some(w) = self.waiting.remove(&key) {
            self.waiting_total -= w.len();
        }
        // Its root (an open file) goes now; its place in `order` when its turn comes.
        self.mounts.remove(&key);
        self.stuck.remove(&key);
    }

    fn lowerdirs(&mut self, key: MountKey, root: MountRoot, dirs: Vec<String>) {
        if !self.mounts.contains_key(&key) {
            if self.order.len() >= MOUNTS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.mounts.remove(&old);
                    self.stuck.remove(&old);
                }
            }
            self.order.push_back(key);
        }
        self.mounts.insert(key, (root, Arc::new(dirs)));
        for (asked, path) in self.waiting.remove(&key).unwrap_or_default() {
            self.waiting_total -= 1;
            self.ask(key, asked, path);
        }
    }

    fn look_up(&mut self, key: MountKey, asked: Asked, path: String) {
        let Some((root, dirs)) = self.mounts.get(&key).cloned() else {
            return;
        };
        let found = self.worker.attempt(LOOKUP_BUDGET, move || {
            let dirs = dirs.iter().map(String::as_str);
            match asked {
                Asked::CopyUp(_) => crate::enrich::origin::source_layer(&root, dirs, &path),
                // A renamed directory: the layer that made it, not the last to add to it.
                Asked::Rename(_) => crate::enrich::origin::dir_origin_layer(&root, dirs, &path),
            }
        });
        match found {
            Outcome::Done(Some(layer)) => {
                let _ = self.out.send(match asked {
                    Asked::CopyUp(copy_up) => Named::SourceLayer {
                        key,
                        copy_up,
                        layer,
                    },
                    Asked::Rename(seq) => Named::RenameLayer { key, seq, layer },
                });
            }
            Outcome::Done(None) | Outcome::Skipped => {}
            // This mount's paths do not answer: not looked up again.
            Outcome::Abandoned => {
                self.stuck.insert(key);
            }
        }
    }
}

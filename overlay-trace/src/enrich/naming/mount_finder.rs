//! The mount finder: reads mountinfo for new mounts (ours, else that of the processes that
//! touched them) and watches named ones go away. Never waits on a runtime; what it opens (upper
//! dirs, a namespace's root) it opens with a budget.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use tokio::{
    sync::mpsc::{Sender, UnboundedReceiver, UnboundedSender, error::TrySendError},
    time::Instant,
};

use super::{Found, RETRY_FIRST, RETRY_MAX, Request, TRIES_MAX, WATCH_EVERY, foreign_mount};
use crate::{
    enrich::{
        answer::{MountRoot, Named, NewMount},
        budget::Budgeted,
        containers::IO_BUDGET,
        mountinfo::read_overlay_mounts,
        source_layers::{LayerAsk, LayerAsks},
    },
    kernel::session::MountClock,
    stream::{event::Dev, names::OverlayMount, record::MountKey},
};

/// Processes remembered per pending mount whose mountinfo may show it.
const TGIDS_PER_MOUNT: usize = 4;

struct Pending {
    key: MountKey,
    /// Processes that did something on it, first one first: the mount's own namespace is
    /// theirs (the one that mounted it may have exited already; a writer lives on).
    tgids: Vec<u32>,
    /// A moment it was alive (see `NewMount::alive_ns`).
    alive_ns: u64,
    tries: u32,
    due: Instant,
}

/// Reads mountinfo for new mounts and watches named ones go away. Never waits on a runtime.
pub(super) struct MountFinder {
    out: UnboundedSender<Named>,
    found: Sender<Found>,
    clock: MountClock,
    layers: LayerAsks,
    /// Opens upper dirs (paths another user may control) with a budget.
    io: Budgeted,
    pending: Vec<Pending>,
    /// Named mounts seen in our own mountinfo: dev -> (key, mount point), checked for going away.
    watched: HashMap<Dev, (MountKey, String)>,
    /// Paths copied up on pending mounts, a few per mount.
    copied: HashMap<MountKey, Vec<String>>,
}

/// Paths kept per pending mount, and pending mounts with paths kept.
const COPIED_PER_MOUNT: usize = 2;
const COPIED_MOUNTS_MAX: usize = 4096;

/// Could `m` be the mount `paths` were copied up on? Its upper dir holds at least one of them
/// (copied-up objects stay there: as themselves, or as a whiteout once deleted). The second
/// check, after the kernel's `MountClock`, for a mount of a device number reused by the time
/// mountinfo is read (Docker mounts a container's init layer, unmounts it, and mounts the root
/// on the same number within milliseconds). The upper dir is looked up in the mount's own
/// namespace, with a budget; one that cannot be opened, does not answer in time, or is given
/// relative to the mounter's directory, is not held against it.
fn plausible(m: &OverlayMount, root: &MountRoot, paths: &[String], io: &mut Budgeted) -> bool {
    let Some(upper) = m.upperdir.clone() else {
        return paths.is_empty();
    };
    if paths.is_empty() || !upper.starts_with('/') {
        return true;
    }
    let (root, paths) = (root.clone(), paths.to_vec());
    io.run(IO_BUDGET, move || {
        let dir = crate::base::safe_fs::open_dir_in_root(&root, &upper).ok()?;
        Some(paths.iter().any(|p| {
            let rel = p.trim_start_matches('/');
            crate::base::safe_fs::is_confined(rel)
                && crate::base::safe_fs::entry_exists_beneath(&dir, std::path::Path::new(rel))
        }))
    })
    .flatten()
    .unwrap_or(true)
}

fn mount_root(m: &OverlayMount, io: &mut Budgeted) -> Option<MountRoot> {
    let path = m.root();
    io.run(IO_BUDGET, move || {
        crate::base::safe_fs::open_dir(&path).ok()
    })
    .flatten()
    .map(Arc::new)
}

impl MountFinder {
    pub(super) fn new(
        out: UnboundedSender<Named>,
        found: Sender<Found>,
        clock: MountClock,
        layers: LayerAsks,
        io: Budgeted,
    ) -> Self {
        Self {
            out,
            found,
            clock,
            layers,
            io,
            pending: Vec::new(),
            watched: HashMap::new(),
            copied: HashMap::new(),
        }
    }

    /// Serves `requests` until the final pass; `finishing` is set the moment it is asked for.
    pub(super) async fn run(
        mut self,
        mut requests: UnboundedReceiver<Request>,
        finishing: tokio::sync::watch::Sender<bool>,
    ) {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            let next_due = self.pending.iter().map(|p| p.due).min();
            // Requests first: a newer mount of a device supersedes an older one still pending
            // before mountinfo (which may already show the newer) is read for it.
            tokio::select! {
                biased;
                r = requests.recv() => {
                    // Everything already queued first: a newer mount of a device, or what was
                    // copied up on a pending one, must be known before mountinfo is read for it.
                    let mut next = r;
                    let mut added = false;
                    loop {
                        match next {
                            Some(Request::Name(m)) => {
                                self.add(m);
                                added = true;
                            }
                            Some(Request::CopiedUp { key, path, tgid }) => {
                                self.note_copied(key, path, tgid)
                            }
                            Some(Request::Finish { deadline, mounts }) => {
                                let _ = finishing.send(true);
                                self.name_pending(Some(mounts));
                                let _ = self.found.send(Found::Finish(deadline)).await;
                                return;
                            }
                            None => return,
                        }
                        match requests.try_recv() {
                            Ok(r) => next = Some(r),
                            Err(_) => break,
                        }
                    }
                    if added {
                        self.name_pending(None);
                    }
                }
                _ = async { tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)).await }, if next_due.is_some() => {
                    self.name_pending(None);
                }
                _ = watch.tick() => self.watch(),
            }
        }
    }

    fn note_copied(&mut self, key: MountKey, path: String, tgid: u32) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.key == key) {
            if p.tgids.len() < TGIDS_PER_MOUNT && !p.tgids.contains(&tgid) {
                p.tgids.push(tgid);
            }
        }
        if self.pending.iter().any(|p| p.key == key)
            && (self.copied.len() < COPIED_MOUNTS_MAX || self.copied.contains_key(&key))
        {
            let v = self.copied.entry(key).or_default();
            if v.len() < COPIED_PER_MOUNT {
                v.push(path);
            }
        }
    }

    fn send(&self, n: Named) {
        let _ = self.out.send(n);
    }

    fn add(
        &mut self,
        NewMount {
            key,
            tgid,
            alive_ns,
        }: NewMount,
    ) {
        // A newer mount of the same device number: the older one can no longer be named.
        let (older, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.key.dev == key.dev);
        self.pending = others;
        for p in older {
            self.send(Named::Unclaimed { key: p.key });
        }
        self.copied.retain(|k, _| k.dev != key.dev);
        self.watched.remove(&key.dev);
        self.pending.push(Pending {
            key,
            tgids: vec![tgid],
            alive_ns,
            tries: 0,
            due: Instant::now(),
        });
    }

    /// Looks for the due pending mounts in mountinfo (ours, then the triggering process's),
    /// read only while the probes record mounts (see `MountClock`). `at_detach`: the final pass,
    /// every pending mount looked for in our mountinfo as read before the probes were detached,
    /// none retried afterwards.
    fn name_pending(&mut self, at_detach: Option<BTreeMap<Dev, OverlayMount>>) {
        let now = Instant::now();
        let all = at_detach.is_some();
        if !self.pending.iter().any(|p| all || p.due <= now) {
            return;
        }
        let ours = match at_detach {
            Some(m) => m,
            None => match self.clock.while_recording(read_overlay_mounts) {
                Some(m) => m.unwrap_or_default(),
                // Detached: the final pass names them; until it comes, nothing is due.
                None => {
                    for p in &mut self.pending {
                        p.due = now + RETRY_MAX;
                    }
                    return;
                }
            },
        };
        let mut still = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            if !all && p.due > now {
                still.push(p);
                continue;
            }
            let copied = self.copied.get(&p.key).map(Vec::as_slice).unwrap_or(&[]);
            let io = &mut self.io;
            let (found, in_ours, root) = match ours.get(&p.key.dev) {
                Some(m) => (Some(m.clone()), true, mount_root(m, io)),
                None => {
                    // The first process whose namespace shows it and whose root can still be
                    // held (the mounter may exit between the two).
                    let mut hit = (None, None);
                    for t in &p.tgids {
                        let Some(m) = self
                            .clock
                            .while_recording(|| foreign_mount(*t, p.key.dev))
                            .flatten()
                        else {
                            continue;
                        };
                        let root = mount_root(&m, io);
                        let held = root.is_some();
                        hit = (Some(m), root);
                        if held {
                            break;
                        }
                    }
                    // Found beside us (attached after our mountinfo was read): ours.
                    let in_ours = hit.0.as_ref().is_some_and(|m| m.ns_pid.is_none());
                    (hit.0, in_ours, hit.1)
                }
            };
            // Found, but no process of its namespace could be held (they exited): asked again
            // later, when a process that copies up on it may have been heard of.
            let found =
                found.filter(|_| in_ours || root.is_some() || all || p.tries + 1 >= TRIES_MAX);
            let found = found.filter(|m| root.as_ref().is_none_or(|r| plausible(m, r, copied, io)));
            // Asked only now that mountinfo was read: if no newer mount of the number had
            // begun, what mountinfo showed for it is this mount. Once one has, this mount can
            // never be named.
            let superseded = self.clock.superseded(p.key.dev, p.alive_ns);
            let found = found.filter(|_| !superseded);
            if let Some(m) = found.as_ref().filter(|_| in_ours) {
                self.watched
                    .insert(p.key.dev, (p.key, m.mount_point.clone()));
            }
            if found.is_some() || superseded || all || p.tries + 1 >= TRIES_MAX {
                self.copied.remove(&p.key);
            }
            match found {
                Some(m) => {
                    self.send(Named::Mount {
                        key: p.key,
                        mount: m.clone(),
                    });
                    // Its copy-ups' source layers, from its lowerdirs as its namespace sees
                    // them; relative ones (long Docker layer lists) wait for the runtime's.
                    if let Some(root) =
                        root.filter(|_| m.lowerdirs.iter().all(|d| d.starts_with('/')))
                    {
                        self.layers.tell(LayerAsk::Lowerdirs {
                            key: p.key,
                            root,
                            dirs: m.lowerdirs.clone(),
                        });
                    }
                    // Bounded when a runtime hangs: beyond, a mount stays unclaimed.
                    if let Err(TrySendError::Full(Found::Mount(key, _))) =
                        self.found.try_send(Found::Mount(p.key, m))
                    {
                        self.send(Named::Unclaimed { key });
                    }
                }
                None if !superseded && !all && p.tries + 1 < TRIES_MAX => {
                    p.tries += 1;
                    p.due = now + (RETRY_FIRST * 2u32.saturating_pow(p.tries)).min(RETRY_MAX);
                    still.push(p);
                }
                // Never seen: reported by device number only.
                None => self.send(Named::Unclaimed { key: p.key }),
            }
        }
        self.pending = still;
    }

    /// Named mounts that left our mountinfo (or whose device number now holds another mount).
    fn watch(&mut self) {
        if self.watched.is_empty() {
            return;
        }
        let now = read_overlay_mounts().unwrap_or_default();
        let gone: Vec<Dev> = self
            .watched
            .iter()
            .filter(|(dev, (_, point))| now.get(dev).is_none_or(|m| &m.mount_point != point))
            .map(|(dev, _)| *dev)
            .collect();
        for dev in gone {
            if let Some((key, _)) = self.watched.remove(&dev) {
                // Not yet resolved: it will not be now that it is gone, but the saved mount
                // still matches an exited container's metadata; the container finder keeps it.
                self.send(Named::Gone { key });
            }
        }
    }
}

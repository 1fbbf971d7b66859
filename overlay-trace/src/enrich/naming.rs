//! Naming mounts, beside the drain and never in its way: a thread of its own (with its own
//! runtime) turns each new mount into its mount point and layers (mountinfo) and then into its
//! container (runtime APIs and metadata on disk: slow, blocking, possibly hung), and reports
//! mounts that went away so the aggregate can fold them.
//!
//! Two threads, one way: the mount finder reads mountinfo the moment a mount is seen (a
//! short-lived mount, Docker's init layer, lives milliseconds), and hands what it found to the
//! container finder, whose runtime lookups (API calls, metadata on disk) may take seconds
//! without holding it up.
//!
//! Every step is bounded: a per-mount time budget for container lookups, mountinfo retries with
//! backoff and a give-up for mounts that never show there (another mount namespace), no repeated
//! lookups of a mount that no runtime claimed until the final pass, and a final pass with a
//! deadline. The drain loop only ever sends requests and applies answers.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::Duration,
};

use tokio::{
    sync::mpsc::{
        Receiver, Sender, UnboundedReceiver, UnboundedSender, channel, error::TrySendError,
        unbounded_channel,
    },
    time::Instant,
};

use std::sync::Arc;

use crate::stream::record::MountKey;

use crate::stream::names::{Container, OverlayMount};

use crate::enrich::containers::{IO_BUDGET, Resolver};

use crate::enrich::budget::{Budgeted, EnrichCounts};

use crate::enrich::source_layers::{self, LayerAsk, LayerAsks};

use crate::stream::event::Dev;

use crate::enrich::mountinfo::{parse_mountinfo, read_overlay_mounts};

use crate::kernel::session::MountClock;

/// Time allowed to find one mount's container.
const NAME_BUDGET: Duration = Duration::from_secs(4);
/// Retries of a mount not yet in mountinfo: the first after 2 ms, doubled each time up to
/// `RETRY_MAX`. The mount event fires as fill_super returns, a moment before the mount is
/// attached where mountinfo shows it; a mount that lives milliseconds (Docker's init layer) must
/// be read again at once, not after the first read raced its attaching.
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Tries before a mount is given up on (about 20 s in all).
const TRIES_MAX: u32 = 16;
/// Mounts no runtime claimed, kept to be asked again in the final pass.
const UNCLAIMED_MAX: usize = 1024;
/// A mount no runtime claims yet is asked again this many times, 1 s, 2 s, 4 s... later: a
/// runtime mounts a container's root before its API or metadata shows the container.
const CLAIM_RETRIES: u32 = 4;
const CLAIM_RETRY_FIRST: Duration = Duration::from_secs(1);
/// How often named mounts are checked for having gone away.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A mount seen for the first time: the naming thread's `Request::Name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMount {
    pub key: MountKey,
    /// The process that touched it.
    pub tgid: u32,
    /// A moment it was alive (`MountStats::alive_ns`).
    pub alive_ns: u64,
}

pub enum Request {
    /// A mount seen for the first time; its `tgid` did something on it (its mountinfo is read
    /// when the tracer's own does not show the mount).
    Name(NewMount),
    /// A path copied up on a mount not named yet: the mount's upper dir must hold it, which
    /// tells a mount from a newer one on the same device number (see `plausible`).
    CopiedUp {
        key: MountKey,
        path: String,
        tgid: u32,
    },
    /// Name what can be named before `deadline`, then answer `Done`. The probes are detached by
    /// now: mounts still pending are named from `mounts`, our mountinfo read before they were.
    Finish {
        deadline: Instant,
        mounts: BTreeMap<Dev, OverlayMount>,
    },
}

pub enum Named {
    Mount {
        key: MountKey,
        mount: OverlayMount,
    },
    Container {
        key: MountKey,
        container: Container,
    },
    /// The mount's lower layers named after image layers (Docker).
    Layers {
        key: MountKey,
        layers: Vec<crate::stream::names::LayerInfo>,
    },
    /// No runtime claims this mount, or it was never found in any mountinfo (asked again only
    /// in the final pass of a run).
    Unclaimed {
        key: MountKey,
    },
    /// No longer mounted (or its device number now belongs to another mount).
    Gone {
        key: MountKey,
    },
    /// The source layer (1 = topmost lowerdir) of a copy-up.
    SourceLayer {
        key: MountKey,
        copy_up: crate::stream::record::CopyUpRef,
        layer: u32,
    },
    Warning(String),
    Done,
}

/// The drain loop's end of the naming thread.
pub struct Naming {
    pub requests: UnboundedSender<Request>,
    pub answers: UnboundedReceiver<Named>,
    /// Source-layer lookups of copy-ups (`enrich::source_layers`).
    pub layers: LayerAsks,
    /// How enrichment fell short: work abandoned or skipped (shared with its threads).
    pub counts: Arc<EnrichCounts>,
}

impl Naming {
    pub fn start(resolver: Resolver, clock: MountClock, counts: Arc<EnrichCounts>) -> Self {
        let (req_tx, req_rx) = unbounded_channel();
        let (ans_tx, ans_rx) = unbounded_channel();
        let (found_tx, found_rx) = channel(UNCLAIMED_MAX);
        let layers = source_layers::start(ans_tx.clone(), counts.clone());
        let out = ans_tx.clone();
        let (l, c) = (layers.clone(), counts.clone());
        spawn_on_runtime("naming", ans_tx.clone(), move || {
            MountFinder::new(out, found_tx, clock, l, Budgeted::new("naming", c)).run(req_rx)
        });
        let out = ans_tx.clone();
        let (l, c) = (layers.clone(), counts.clone());
        spawn_on_runtime("containers", ans_tx, move || {
            ContainerFinder::new(resolver, out, l, Budgeted::new("containers", c)).run(found_rx)
        });
        Self {
            requests: req_tx,
            answers: ans_rx,
            layers,
            counts,
        }
    }

    pub fn name(&self, m: NewMount) {
        let _ = self.requests.send(Request::Name(m));
    }

    pub fn copied_up(&self, key: MountKey, path: String, tgid: u32) {
        let _ = self.requests.send(Request::CopiedUp { key, path, tgid });
    }
}

/// Runs the task `make` returns on a thread of its own with a current-thread runtime. Without a
/// runtime it says so and answers `Done`, so the run ends, unnamed.
fn spawn_on_runtime<F, Fut>(name: &str, out: UnboundedSender<Named>, make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(make()),
                Err(e) => {
                    let _ = out.send(Named::Warning(format!(
                        "cannot start a naming thread ({e}): mounts are not named"
                    )));
                    let _ = out.send(Named::Done);
                }
            }
        })
        .expect("spawning a thread");
}

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

/// What the mount finder hands the container finder.
enum Found {
    Mount(MountKey, OverlayMount),
    /// The final pass: what is queued, then everything unclaimed, before the deadline.
    Finish(Instant),
}

/// Reads mountinfo for new mounts and watches named ones go away. Never waits on a runtime.
struct MountFinder {
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

/// Asks the runtimes which container a found mount belongs to.
struct ContainerFinder {
    resolver: Resolver,
    out: UnboundedSender<Named>,
    layers: LayerAsks,
    io: Budgeted,
    to_resolve: VecDeque<(MountKey, OverlayMount)>,
    /// Mounts no runtime claimed yet, to be asked again: (due, tries so far, key, mount).
    retries: Vec<(Instant, u32, MountKey, OverlayMount)>,
    /// Mounts no runtime claimed after the retries: asked again only in the final pass.
    unclaimed: BTreeMap<MountKey, OverlayMount>,
    warned: HashSet<String>,
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

/// The root a mount's paths are resolved from, held open: ours, or that of the process in whose
/// mountinfo it was found (opened now, while that process lives; the mounter is often gone a
/// moment later, its namespace kept by others).
pub type MountRoot = Arc<std::os::fd::OwnedFd>;

fn mount_root(m: &OverlayMount, io: &mut Budgeted) -> Option<MountRoot> {
    let path = m.root();
    io.run(IO_BUDGET, move || {
        crate::base::safe_fs::open_dir(&path).ok()
    })
    .flatten()
    .map(Arc::new)
}

impl MountFinder {
    fn new(
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

    async fn run(mut self, mut requests: UnboundedReceiver<Request>) {
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
                    (hit.0, false, hit.1)
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

impl ContainerFinder {
    fn new(
        resolver: Resolver,
        out: UnboundedSender<Named>,
        layers: LayerAsks,
        io: Budgeted,
    ) -> Self {
        Self {
            resolver,
            out,
            layers,
            io,
            to_resolve: VecDeque::new(),
            retries: Vec::new(),
            unclaimed: BTreeMap::new(),
            warned: HashSet::new(),
        }
    }

    async fn run(mut self, mut found: Receiver<Found>) {
        loop {
            let next_retry = self.retries.iter().map(|r| r.0).min();
            tokio::select! {
                biased;
                f = found.recv() => match f {
                    Some(Found::Mount(key, m)) => self.queue(key, m),
                    Some(Found::Finish(deadline)) => {
                        self.finish(deadline).await;
                        return;
                    }
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)).await }, if next_retry.is_some() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut self.retries).into_iter().partition(|r| r.0 <= now);
                    self.retries = later;
                    for (_, tries, key, m) in due {
                        self.resolve(key, m, NAME_BUDGET, tries).await;
                    }
                }
                _ = std::future::ready(()), if !self.to_resolve.is_empty() => {
                    if let Some((key, m)) = self.to_resolve.pop_front() {
                        self.resolve(key, m, NAME_BUDGET, 0).await;
                    }
                }
            }
        }
    }

    fn send(&self, n: Named) {
        let _ = self.out.send(n);
    }

    /// Queues a found mount. Bounded when a runtime hangs (each lookup may take NAME_BUDGET):
    /// the oldest waits for the final pass.
    fn queue(&mut self, key: MountKey, m: OverlayMount) {
        if self.to_resolve.len() >= UNCLAIMED_MAX {
            if let Some((k, old)) = self.to_resolve.pop_front() {
                self.send(Named::Unclaimed { key: k });
                self.keep_unclaimed(k, old);
            }
        }
        self.to_resolve.push_back((key, m));
    }

    /// Bounded for a tracer that runs for weeks: the oldest are not asked again.
    fn keep_unclaimed(&mut self, key: MountKey, m: OverlayMount) {
        if self.unclaimed.len() >= UNCLAIMED_MAX {
            self.unclaimed.pop_first();
        }
        self.unclaimed.insert(key, m);
    }

    /// Asks the runtimes for the mount's container; `tries` earlier asks found none.
    async fn resolve(&mut self, key: MountKey, m: OverlayMount, budget: Duration, tries: u32) {
        match tokio::time::timeout(budget, self.resolver.resolve(&m, &mut self.io)).await {
            Ok(Some(c)) => {
                let layers = self
                    .resolver
                    .layers_job(&m, &c)
                    .and_then(|job| self.io.run(IO_BUDGET, job))
                    .unwrap_or_default();
                self.send(Named::Container { key, container: c });
                if !layers.is_empty() {
                    // The runtime's view of the lowerdirs, from `/`.
                    if let Ok(root) = crate::base::safe_fs::open_dir(std::path::Path::new("/")) {
                        self.layers.tell(LayerAsk::Lowerdirs {
                            key,
                            root: Arc::new(root),
                            dirs: layers.iter().map(|l| l.lowerdir.clone()).collect(),
                        });
                    }
                    self.send(Named::Layers { key, layers });
                }
            }
            _ if tries < CLAIM_RETRIES && self.retries.len() < UNCLAIMED_MAX => {
                let due = Instant::now() + CLAIM_RETRY_FIRST * 2u32.pow(tries);
                self.retries.push((due, tries + 1, key, m));
            }
            _ => {
                self.send(Named::Unclaimed { key });
                self.keep_unclaimed(key, m);
            }
        }
        if let Some(w) = self.resolver.docker_warning().map(str::to_string) {
            if self.warned.insert(w.clone()) {
                self.send(Named::Warning(w));
            }
        }
    }

    /// The last pass: mounts found but not yet looked up, and containers still to find (a
    /// runtime may have been slow while the container started), all before `deadline`. The
    /// mount finder's last finds come before `Finish` on the same channel.
    async fn finish(&mut self, deadline: Instant) {
        self.resolver.final_pass();
        let mut work: Vec<(MountKey, OverlayMount)> = self.to_resolve.drain(..).collect();
        work.extend(self.retries.drain(..).map(|(_, _, key, m)| (key, m)));
        work.extend(std::mem::take(&mut self.unclaimed));
        for (key, m) in work {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.resolve(key, m, left.min(NAME_BUDGET), CLAIM_RETRIES)
                .await;
        }
        // The source-layer thread says `Done` once it has answered what was asked before.
        self.layers.tell(LayerAsk::Finish);
    }
}

/// The mount of `dev` as process `tgid` sees it, or as one of its ancestors does (a mount
/// namespace other than ours). Inside a container the root is mounted at "/", which names
/// nothing; the process that made the mount (containerd's shim, for instance) sees it where it
/// made it, e.g. `.../io.containerd.runtime.v2.task/<namespace>/<id>/rootfs`.
pub fn foreign_mount(tgid: u32, dev: Dev) -> Option<OverlayMount> {
    let mut pid = tgid;
    let mut at_root = None;
    for _ in 0..8 {
        if pid <= 1 {
            break;
        }
        if let Some(m) = crate::base::safe_fs::read_small_file(std::path::Path::new(&format!(
            "/proc/{pid}/mountinfo"
        )))
        .and_then(|t| parse_mountinfo(&t).remove(&dev))
        .map(|m| OverlayMount {
            ns_pid: Some(pid),
            ..m
        }) {
            if m.mount_point != "/" {
                return Some(m);
            }
            at_root.get_or_insert(m);
        }
        pid = parent_of(pid)?;
    }
    at_root
}

/// The parent of process `pid` (field 4 of /proc/PID/stat, after the command in parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat =
        crate::base::safe_fs::read_small_file(std::path::Path::new(&format!("/proc/{pid}/stat")))?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

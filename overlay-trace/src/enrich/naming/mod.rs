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
//!
//! `mount_finder` and `container_finder` are the two threads; this module starts them and holds
//! what they share.

mod container_finder;
mod mount_finder;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    sync::mpsc::{UnboundedReceiver, UnboundedSender, channel, unbounded_channel},
    time::Instant,
};

use crate::{
    enrich::{
        answer::{Named, NewMount},
        budget::{Budgeted, EnrichCounts},
        containers::Resolver,
        mountinfo::parse_mountinfo,
        source_layers::{self, LayerAsks},
    },
    kernel::session::MountClock,
    stream::{event::Dev, names::OverlayMount, record::MountKey},
};
use container_finder::ContainerFinder;
use mount_finder::MountFinder;

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
    pub fn start(mut resolver: Resolver, clock: MountClock, counts: Arc<EnrichCounts>) -> Self {
        // Set by the mount finder when the final pass is asked for: the container finder may be
        // waiting on a runtime API then, and the final pass must not wait behind it.
        let (finishing, finishing_rx) = tokio::sync::watch::channel(false);
        resolver.interrupt_on(finishing_rx);
        let (req_tx, req_rx) = unbounded_channel();
        let (ans_tx, ans_rx) = unbounded_channel();
        let (found_tx, found_rx) = channel(UNCLAIMED_MAX);
        let layers = source_layers::start(ans_tx.clone(), counts.clone());
        let out = ans_tx.clone();
        let (l, c) = (layers.clone(), counts.clone());
        spawn_on_runtime("naming", ans_tx.clone(), move || {
            MountFinder::new(out, found_tx, clock, l, Budgeted::new("naming", c))
                .run(req_rx, finishing)
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
    let warn = out.clone();
    let spawned = std::thread::Builder::new()
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
        });
    // No thread (a pids limit): the run goes on, unnamed, and says so.
    if let Err(e) = spawned {
        let _ = warn.send(Named::Warning(format!(
            "cannot start a naming thread ({e}): mounts are not named"
        )));
        let _ = warn.send(Named::Done);
    }
}

/// What the mount finder hands the container finder.
pub(crate) enum Found {
    Mount(MountKey, OverlayMount),
    /// The final pass: what is queued, then everything unclaimed, before the deadline.
    Finish(Instant),
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
        // The namespace is asked before and after its mountinfo is read: a pid reused meanwhile
        // by a process of another namespace gives no owner (and so no runtime's labels).
        let before = mount_namespace(pid);
        if let Some(m) = crate::base::safe_fs::read_small_file(std::path::Path::new(&format!(
            "/proc/{pid}/mountinfo"
        )))
        .and_then(|t| parse_mountinfo(&t).remove(&dev))
        .map(|m| {
            let same = before.filter(|b| mount_namespace(pid) == Some(*b));
            // Our own namespace (the mounter is beside us: the mount was attached after our
            // mountinfo was read): the mount is ours, with host paths and a runtime's layers.
            if same.is_some_and(|(ns, _)| Some(ns) == own_mount_namespace()) && same_root(pid) {
                return OverlayMount {
                    ns_pid: None,
                    userns: None,
                    ..m
                };
            }
            OverlayMount {
                ns_pid: Some(pid),
                userns: same.map(|(_, owner)| owner),
                ..m
            }
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

/// Whether process `pid` sees `/` where we do (not chrooted): its mountinfo's paths are then ours.
fn same_root(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    id(&format!("/proc/{pid}/root")).is_some_and(|r| Some(r) == id("/"))
}

/// Our mount namespace's inode number.
/// Read once, on first use: the tracer's namespace is set before tracing begins (the bench
/// makes its own first), as `may_be_a_runtimes` reads our user namespace once.
fn own_mount_namespace() -> Option<u64> {
    static OURS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self/ns/mnt").ok().map(|m| m.ino())
    })
}

/// Process `pid`'s mount namespace and the user namespace that owns it, as inode numbers: the
/// owner is the one whose privilege made that namespace (`NS_GET_USERNS`, Linux 4.9).
fn mount_namespace(pid: u32) -> Option<(u64, u64)> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    use std::os::unix::fs::MetadataExt as _;
    // _IO(0xb7, 0x1)
    const NS_GET_USERNS: u32 = (0xb7 << 8) | 0x1;
    let mnt = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    let fd = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return None;
    }
    let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Some((mnt.metadata().ok()?.ino(), owner.metadata().ok()?.ino()))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn our_mount_namespace_is_owned_by_our_user_namespace() {
        let (mnt, owner) = super::mount_namespace(std::process::id()).expect("NS_GET_USERNS");
        assert_eq!(mnt, std::fs::metadata("/proc/self/ns/mnt").unwrap().ino());
        assert_eq!(
            owner,
            std::fs::metadata("/proc/self/ns/user").unwrap().ino()
        );
        assert_eq!(super::mount_namespace(u32::MAX), None);
    }
}

//! Naming overlay mounts after the containers they belong to. Each runtime has its own resolver;
//! a mount no runtime claims is still reported by mount point and upperdir.

pub mod containerd;
pub mod docker;
pub mod podman;

use crate::stream::names::Container;
use std::collections::BTreeMap;

use crate::stream::event::Dev;

use crate::stream::names::OverlayMount;

/// Time a read of a path named by a mount's text may take (see `Resolver::resolve`).
pub const IO_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers remembered by `Resolver` (beyond, it starts over).
const KNOWN_MAX: usize = 4096;

/// Whether a runtime may have made `m`. Trust comes from the kernel, not from paths: a mount
/// seen only in another process's mount namespace is a runtime's only if that namespace is owned
/// by our user namespace, so that making it took the privilege a runtime has (containerd's shim
/// mounts a task's root in a namespace of its own). A namespace an unprivileged user makes
/// (`unshare -Urm`) is owned by a user namespace of its own: there it could choose every path a
/// runtime is recognised by (a containerd task directory with its own `config.json`, an upperdir
/// ending in a real container's layer id), and the kernel never propagates its mounts to ours.
pub fn may_be_a_runtimes(m: &OverlayMount) -> bool {
    static OURS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let ours = OURS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self/ns/user")
            .ok()
            .map(|m| m.ino())
    });
    m.ns_pid.is_none() || (m.userns.is_some() && m.userns == *ours)
}

/// Maps mounts to containers, asking each runtime in turn, and remembers every answer so a
/// container that exits before the report keeps its name.
pub struct Resolver {
    docker: docker::Docker,
    podman: podman::Podman,
    /// Answers by device and mount point: device numbers alone are reused across mounts.
    known: BTreeMap<(Dev, String), Container>,
}

impl Resolver {
    /// Fails only on a `DOCKER_HOST` that cannot be honoured.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            docker: docker::Docker::new()?,
            podman: podman::Podman::new(),
            known: BTreeMap::new(),
        })
    }

    /// `io` runs what opens a path the mount's text names (a containerd bundle beside its mount
    /// point), with a budget: such a path may lie on a filesystem that never answers.
    pub async fn resolve(
        &mut self,
        m: &OverlayMount,
        io: &mut crate::enrich::budget::Budgeted,
    ) -> Option<Container> {
        if !may_be_a_runtimes(m) {
            return None;
        }
        let key = (m.dev, m.mount_point.clone());
        if let Some(c) = self.known.get(&key) {
            return Some(c.clone());
        }
        let found = match self.docker.resolve(m).await {
            Some(c) => Some(c),
            None => {
                let point = m.mount_point.clone();
                io.run(IO_BUDGET, move || containerd::from_mount_point(&point))
                    .flatten()
                    .or_else(|| self.podman.resolve(m))
            }
        };
        if let Some(c) = &found {
            // A cache, bounded for a tracer that runs for weeks.
            if self.known.len() >= KNOWN_MAX {
                self.known.clear();
            }
            self.known.insert(key, c.clone());
        }
        found
    }

    /// The work of naming the mount's lower layers after the runtime's (Docker: image layer and
    /// instruction; podman: layer digest), to be run with a budget: it opens the lowerdirs,
    /// whose paths come from mountinfo.
    pub fn layers_job(
        &mut self,
        m: &OverlayMount,
        c: &Container,
    ) -> Option<impl FnOnce() -> Vec<crate::stream::names::LayerInfo> + Send + 'static> {
        enum Job {
            Docker(std::path::PathBuf, String),
            Podman(std::path::PathBuf),
        }
        let job = match (c.runtime.as_str(), c.image_id.as_deref()) {
            ("docker", Some(image)) => Job::Docker(self.docker.data_root(), image.to_string()),
            ("podman", _) => Job::Podman(podman::storage_root_of(m)?),
            _ => return None,
        };
        let lowerdirs = m.lowerdirs.clone();
        Some(move || match job {
            Job::Docker(root, image) => {
                crate::enrich::layers::docker_layers(&root, &image, &lowerdirs)
            }
            Job::Podman(root) => crate::enrich::layers::podman_layers(&root, &lowerdirs),
        })
    }

    /// Containers whose root filesystem is mounted now, with their superblock.
    pub async fn running(
        &mut self,
        mounts: &BTreeMap<Dev, OverlayMount>,
        io: &mut crate::enrich::budget::Budgeted,
    ) -> Vec<(Dev, Container)> {
        let mut out = Vec::new();
        for m in mounts.values() {
            if let Some(c) = self.resolve(m, io).await {
                out.push((m.dev, c));
            }
        }
        out
    }

    /// `finishing` turns true as the final pass begins: runtime API calls in flight stop then.
    pub fn interrupt_on(&mut self, finishing: tokio::sync::watch::Receiver<bool>) {
        self.docker.interrupt_on(finishing);
    }

    /// The last naming pass of a run: no more waiting on an API that failed to answer.
    pub fn final_pass(&mut self) {
        self.docker.final_pass();
    }

    /// Why Docker could not be asked, if it could not (shown once as a warning).
    pub fn docker_warning(&self) -> Option<&str> {
        self.docker.warning()
    }
}

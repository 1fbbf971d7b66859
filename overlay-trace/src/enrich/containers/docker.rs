//! Docker with the overlay2 graph driver. First the Engine API on /var/run/docker.sock (bollard,
//! every call under a timeout so a hung daemon never hangs the tracer), matching a mount by its
//! upperdir (`GraphDriver.Data.UpperDir`); when the API does not answer, Docker's on-disk
//! metadata: `image/overlay2/layerdb/mounts/<container>/mount-id` holds the overlay2 directory
//! name and `containers/<container>/config.v2.json` the name and image.
//! Docker with the containerd image store mounts at `<root>/rootfs/overlayfs/<container-id>`.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::query_parameters::ListContainersOptions;
use serde_json::Value;

use crate::base::safe_fs;
use crate::stream::names::Container;
use crate::stream::names::OverlayMount;

const API_TIMEOUT: Duration = Duration::from_secs(3);
/// After the API failed to answer, it is left alone this long (on-disk metadata meanwhile): a
/// daemon that accepts and never answers costs one timeout, not one per container.
const API_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_ROOT: &str = "/var/lib/docker";
/// Containers inspected per ask at most, newest first (see `Docker::ask_api`).
const INSPECT_PER_ASK: usize = 64;
/// Inspected containers kept at most (beyond, the on-disk metadata names the rest).
const INSPECTED_MAX: usize = 20_000;

/// What a Docker container looks like to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerContainer {
    pub container: Container,
    /// Absolute upperdir, or None (containerd image store).
    pub upperdir: Option<String>,
}

pub struct Docker {
    api: Option<bollard::Docker>,
    /// Inspected containers by id (inspect results never change for a given container).
    inspected: HashMap<String, DockerContainer>,
    warning: Option<String>,
    api_down_until: Option<std::time::Instant>,
    /// The API failed to answer at least once in this run.
    api_failed: bool,
    /// Set for the last naming pass: an API that failed before is not waited for again.
    final_pass: bool,
    /// The data root, once known (from the API, or from a trusted dockerd).
    root: Option<PathBuf>,
    /// Becomes true when the run's final pass begins: an API call in flight is cut short then,
    /// so a daemon that does not answer delays the report by one final-pass budget at most.
    finishing: Option<tokio::sync::watch::Receiver<bool>>,
    /// Containers read from disk, by id: each one's metadata is read once, not once per mount.
    on_disk: OnDisk,
}

/// What became of an API call.
enum Call<T> {
    Answered(T),
    TimedOut,
    /// Cut short by the final pass (which asks again, with its own deadline).
    Interrupted,
}

/// The `<id>` of an overlay2 upperdir `<root>/overlay2/<id>/diff` (also when relative: `<id>/diff`).
pub fn overlay2_id(upperdir: &str) -> Option<&str> {
    let p = upperdir.strip_suffix("/diff")?;
    Some(p.rsplit('/').next().unwrap_or(p)).filter(|s| !s.is_empty())
}

/// The Docker socket: `$DOCKER_HOST` when it is a `unix://` socket, the default one when it is
/// unset. Any other scheme is refused rather than silently replaced.
pub fn socket_path() -> anyhow::Result<String> {
    match std::env::var("DOCKER_HOST") {
        Err(_) => Ok("/var/run/docker.sock".to_string()),
        Ok(h) if h.is_empty() => Ok("/var/run/docker.sock".to_string()),
        Ok(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(p.to_string()),
            _ => Err(crate::base::BadInput(format!(
                "DOCKER_HOST={:?} is not supported: overlay-trace reads container names from a local unix:// \
                 socket only (unset DOCKER_HOST or set it to unix:///path/to/docker.sock)",
                crate::base::escape::escape(&h)
            ))
            .into()),
        },
    }
}

/// Is process `pid` a dockerd we can trust with our data root: running as root, from an
/// executable owned by root that nobody else may write? Any local user can start a program named
/// `dockerd` with `--data-root` pointing at files of their choosing.
fn trusted_dockerd(pid: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let runs_as_root = safe_fs::read_small_file(&pid.join("status")).is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|u| u.split_whitespace().all(|id| id == "0"))
    });
    let exe_owned_by_root =
        fs::metadata(pid.join("exe")).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0);
    runs_as_root && exe_owned_by_root
}

/// Data root from a trusted running dockerd's command line, /etc/docker/daemon.json, or the
/// default. (The Engine API's `DockerRootDir` comes first when the API answers: see `Docker`.)
pub fn data_root() -> PathBuf {
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(cmd) = safe_fs::read_small_file(&p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&str> = cmd.split('\0').collect();
            if !args.first().is_some_and(|a| a.ends_with("dockerd")) || !trusted_dockerd(&p.path())
            {
                continue;
            }
            for (i, a) in args.iter().enumerate() {
                if let Some(v) = a.strip_prefix("--data-root=") {
                    return PathBuf::from(v);
                }
                if *a == "--data-root" {
                    if let Some(v) = args.get(i + 1) {
                        return PathBuf::from(v);
                    }
                }
            }
        }
    }
    safe_fs::read_small_file(Path::new("/etc/docker/daemon.json"))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["data-root"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// Converts an inspect response (API JSON) into our view of the container.
pub fn from_inspect(v: &bollard::models::ContainerInspectResponse) -> Option<DockerContainer> {
    let id = v.id.clone()?;
    Some(DockerContainer {
        container: Container {
            runtime: "docker".into(),
            id,
            name: v
                .name
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            image: v
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            namespace: None,
            role: None,
            pod: None,
            image_id: v.image.clone(),
        },
        upperdir: v
            .graph_driver
            .as_ref()
            .and_then(|g| g.data.get("UpperDir").cloned()),
    })
}

/// Does `c` own mount `m`? By overlay2 directory name (works for relative upperdirs and for a
/// data root seen under another path), or by the containerd-store mount point.
pub fn owns(c: &DockerContainer, m: &OverlayMount) -> bool {
    if let (Some(cu), Some(mu)) = (c.upperdir.as_deref(), m.upperdir.as_deref()) {
        if cu == mu || (overlay2_id(cu).is_some() && overlay2_id(cu) == overlay2_id(mu)) {
            return true;
        }
    }
    m.mount_point.contains("/rootfs/overlayfs/") && m.mount_point.ends_with(&c.container.id)
}

/// The container whose root (or init layer) `m` is.
pub fn find<'a>(
    all: impl Iterator<Item = &'a DockerContainer> + Clone,
    m: &OverlayMount,
) -> Option<Container> {
    if let Some(c) = all.clone().find(|c| owns(c, m)) {
        return Some(c.container.clone());
    }
    all.into_iter()
        .find(|c| owns_init_layer(c, m))
        .map(|c| Container {
            role: Some("init-layer".into()),
            pod: None,
            ..c.container.clone()
        })
}

/// Is `m` the init layer (`<overlay2 id>-init`) of `c`, mounted while Docker creates it?
pub fn owns_init_layer(c: &DockerContainer, m: &OverlayMount) -> bool {
    match (
        c.upperdir.as_deref().and_then(overlay2_id),
        m.upperdir.as_deref().and_then(overlay2_id),
    ) {
        (Some(cid), Some(mid)) => mid.strip_suffix("-init") == Some(cid),
        _ => false,
    }
}

impl Docker {
    /// Fails only on a `DOCKER_HOST` we cannot honour.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self::at(&socket_path()?))
    }

    /// The API at the unix socket `path` (used when it exists).
    pub fn at(path: &str) -> Self {
        let (api, warning) = if Path::new(&path).exists() {
            match bollard::Docker::connect_with_unix(
                path,
                API_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            ) {
                Ok(d) => (Some(d), None),
                Err(e) => (
                    None,
                    Some(format!("cannot use the Docker API at {path}: {e}")),
                ),
            }
        } else {
            (None, None)
        };
        Self {
            api,
            inspected: HashMap::new(),
            warning,
            api_down_until: None,
            api_failed: false,
            final_pass: false,
            root: None,
            finishing: None,
            on_disk: OnDisk::default(),
        }
    }

    /// Docker's data root, as the resolver uses it.
    pub fn data_root(&mut self) -> PathBuf {
        self.root()
    }

    /// Docker's data root: the API's `DockerRootDir` once it answered, otherwise `data_root()`.
    fn root(&mut self) -> PathBuf {
        self.root.get_or_insert_with(data_root).clone()
    }

    /// The last naming pass of a run: an API that failed to answer before is not asked again.
    pub fn final_pass(&mut self) {
        self.final_pass = true;
    }

    /// `finishing` turns true when the final pass is about to begin (see `Docker::finishing`).
    pub fn interrupt_on(&mut self, finishing: tokio::sync::watch::Receiver<bool>) {
        self.finishing = Some(finishing);
    }

    /// `fut` with API_TIMEOUT, cut short (before the final pass) when the final pass begins.
    async fn call<F: std::future::Future>(&self, fut: F) -> Call<F::Output> {
        let finishing = self.finishing.clone().filter(|_| !self.final_pass);
        let interrupt = async move {
            if let Some(mut f) = finishing {
                if f.wait_for(|now| *now).await.is_ok() {
                    return;
                }
            }
            // Nothing to wait for (or its sender gone): never interrupts.
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = tokio::time::timeout(API_TIMEOUT, fut) => match r {
                Ok(v) => Call::Answered(v),
                Err(_) => Call::TimedOut,
            },
            _ = interrupt => Call::Interrupted,
        }
    }

    /// Records that the API failed: left alone for API_BACKOFF, and in the final pass.
    fn api_down(&mut self, warning: String) {
        self.warning = Some(warning);
        self.api_failed = true;
        self.api_down_until = Some(std::time::Instant::now() + API_BACKOFF);
    }

    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The container that owns `m`, asking the API. Containers not inspected before are
    /// inspected newest first (a new mount's container is being started), stopping at the owner
    /// and after `INSPECT_PER_ASK` (the rest wait for the next ask, on-disk metadata meanwhile):
    /// a daemon with thousands of exited containers costs one listing, not thousands of
    /// inspections. None when the API is absent, fails, times out, or names no owner.
    async fn ask_api(&mut self, m: &OverlayMount) -> Option<Container> {
        if self
            .api_down_until
            .is_some_and(|t| std::time::Instant::now() < t)
            || (self.final_pass && self.api_failed)
        {
            return None;
        }
        let api = self.api.clone()?;
        let list = self
            .call(api.list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            })))
            .await;
        let list = match list {
            Call::Answered(Ok(l)) => l,
            Call::Answered(Err(e)) => {
                self.api_down(format!("Docker API: {e}; using Docker's on-disk metadata"));
                return None;
            }
            Call::TimedOut => {
                self.api_down(
                    "Docker API did not answer in 3 s; using Docker's on-disk metadata".into(),
                );
                return None;
            }
            Call::Interrupted => return None,
        };
        if self.root.is_none() {
            if let Call::Answered(Ok(info)) = self.call(api.info()).await {
                self.root = info.docker_root_dir.map(PathBuf::from);
            }
        }
        let mut list: Vec<(i64, String)> = list
            .into_iter()
            .filter_map(|s| Some((s.created.unwrap_or(0), s.id?)))
            .collect();
        list.sort_unstable_by_key(|(created, _)| std::cmp::Reverse(*created));
        // Containers the daemon no longer lists are forgotten: the cache never outgrows the list.
        {
            let listed: std::collections::HashSet<&str> =
                list.iter().map(|(_, id)| id.as_str()).collect();
            self.inspected.retain(|id, _| listed.contains(id.as_str()));
        }
        let mut asked = 0;
        for (_, id) in list {
            if self.inspected.contains_key(&id) {
                continue;
            }
            if asked == INSPECT_PER_ASK || self.inspected.len() >= INSPECTED_MAX {
                break;
            }
            asked += 1;
            match self.call(api.inspect_container(&id, None)).await {
                Call::Answered(Ok(v)) => {
                    if let Some(c) = from_inspect(&v) {
                        let owner = find(std::iter::once(&c), m);
                        self.inspected.insert(id, c);
                        if owner.is_some() {
                            return owner;
                        }
                    }
                }
                Call::Answered(Err(_)) => {}
                Call::TimedOut => {
                    self.api_failed = true;
                    self.api_down_until = Some(std::time::Instant::now() + API_BACKOFF);
                    break;
                }
                Call::Interrupted => break,
            }
        }
        None
    }

    pub async fn resolve(&mut self, m: &OverlayMount) -> Option<crate::stream::names::Container> {
        if let Some(c) = find(self.inspected.values(), m) {
            return Some(c);
        }
        // The API can miss a container that is being started (inspect waits for its lock and
        // times out): Docker's on-disk metadata exists from creation on.
        if let Some(c) = self.ask_api(m).await {
            return Some(c);
        }
        let root = self.root();
        find(self.on_disk.read(&root).iter(), m)
    }
}

mod disk;
pub use disk::{OnDisk, from_disk};

#[cfg(test)]
mod tests;

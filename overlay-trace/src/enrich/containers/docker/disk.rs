//! Docker's on-disk metadata: what names a container when the API does not answer.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::DockerContainer;
use crate::base::safe_fs;
use crate::stream::names::Container;

/// Containers read from one data root at most (a host with more is named partly, never slowly).
const IDS_MAX: usize = 20_000;

/// Containers already read, by id, so a lookup reads only the new ones: a host with thousands
/// of exited containers costs a directory listing per lookup, not thousands of files. An entry
/// whose layer was not known yet (being created) is read again next time.
#[derive(Default)]
pub struct OnDisk {
    root: PathBuf,
    read: HashMap<String, DockerContainer>,
}

impl OnDisk {
    /// Every container under `root` now.
    pub fn read(&mut self, root: &Path) -> Vec<DockerContainer> {
        if self.root != root {
            self.root = root.to_path_buf();
            self.read.clear();
        }
        let ids = container_ids(root);
        let mut all = Vec::with_capacity(ids.len());
        let mut kept = HashMap::with_capacity(ids.len());
        for id in ids {
            let Some(c) = self
                .read
                .remove(&id)
                .or_else(|| read_container(root, id.clone()))
            else {
                continue;
            };
            // Without its layer yet (or with the containerd image store, which names none),
            // read again next time.
            if c.upperdir.is_some() {
                kept.insert(id, c.clone());
            }
            all.push(c);
        }
        // Containers gone from disk are forgotten: the cache never outgrows the directory.
        self.read = kept;
        all
    }
}

/// Reads every container from Docker's on-disk metadata under `root`.
pub fn from_disk(root: &Path) -> Vec<DockerContainer> {
    container_ids(root)
        .into_iter()
        .filter_map(|id| read_container(root, id))
        .collect()
}

/// The ids of the containers under `root` (at most `IDS_MAX`).
fn container_ids(root: &Path) -> Vec<String> {
    let Ok(dirs) = fs::read_dir(root.join("containers")) else {
        return Vec::new();
    };
    dirs.flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        // Container ids are hex; anything else is not Docker's.
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .take(IDS_MAX)
        .collect()
}

/// One container's metadata, or None when it cannot be read (yet).
fn read_container(root: &Path, id: String) -> Option<DockerContainer> {
    // Regular files beneath the data root only, size-capped, never blocking.
    let text = safe_fs::read_metadata(
        root,
        &Path::new("containers").join(&id).join("config.v2.json"),
    )?;
    let cfg = serde_json::from_str::<Value>(&text).ok()?;
    let mount_id = safe_fs::read_metadata(
        root,
        &Path::new("image/overlay2/layerdb/mounts")
            .join(&id)
            .join("mount-id"),
    )
    .map(|s| s.trim().to_string())
    .filter(|m| !m.is_empty() && !m.contains('/'));
    Some(DockerContainer {
        container: Container {
            runtime: "docker".into(),
            id: id.clone(),
            name: cfg["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            image: cfg["Config"]["Image"].as_str().unwrap_or("").to_string(),
            namespace: None,
            role: None,
            pod: None,
            image_id: cfg["Image"].as_str().map(str::to_string),
        },
        upperdir: mount_id.map(|m| {
            root.join("overlay2")
                .join(m)
                .join("diff")
                .display()
                .to_string()
        }),
    })
}

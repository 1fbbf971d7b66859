//! What names a mount: its mount point and layers (from mountinfo), its container (from a
//! runtime), its layers as the runtime names them. Plain data, as records carry it.

use serde::{Deserialize, Serialize};

use crate::stream::event::Dev;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMount {
    pub dev: Dev,
    pub mount_point: String,
    /// Topmost lower layer first, as in the mount options.
    pub lowerdirs: Vec<String>,
    pub upperdir: Option<String>,
    pub workdir: Option<String>,
    /// The process in whose mountinfo the mount was found, when it is not in ours (a mount
    /// namespace of its own): its paths are resolved there, through `/proc/<pid>/root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// With `ns_pid`: the user namespace (its inode number) that owns that process's mount
    /// namespace. Unless it is ours, the mount is never given a runtime's labels (see
    /// `enrich::containers::may_be_a_runtimes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<u64>,
}

impl OverlayMount {
    /// The root its paths are resolved from: ours, or that of a process in its namespace.
    pub fn root(&self) -> std::path::PathBuf {
        match self.ns_pid {
            Some(pid) => format!("/proc/{pid}/root").into(),
            None => "/".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// "docker", "containerd" or "podman".
    pub runtime: String,
    pub id: String,
    pub name: String,
    pub image: String,
    /// containerd namespace (e.g. "k8s.io" for Kubernetes) where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The image's id (Docker), which names its layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The Kubernetes pod, for a container the CRI plugin made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Set when the mount is not the container's root but part of making it: "init-layer"
    /// (Docker mounts the init layer briefly to write /etc/hosts and friends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Container {
    /// The first 12 characters (ids from a file or another runtime need not be hex).
    pub fn short_id(&self) -> &str {
        let end = self
            .id
            .char_indices()
            .nth(12)
            .map_or(self.id.len(), |(i, _)| i);
        &self.id[..end]
    }

    /// How timelines name its track: `name (runtime)`, or `name (runtime, role)`.
    pub fn track_name(&self) -> String {
        match &self.role {
            Some(r) => format!("{} ({}, {r})", self.name, self.runtime),
            None => format!("{} ({})", self.name, self.runtime),
        }
    }

    /// `--container` accepts a name (with or without Docker's leading '/'), a full id or an id
    /// prefix of at least 4 characters.
    pub fn matches(&self, wanted: &str) -> bool {
        let wanted = wanted.trim_start_matches('/');
        self.name == wanted
            || self.id == wanted
            || (wanted.len() >= 4 && self.id.starts_with(wanted))
    }
}

/// One lower layer of a mount, as the report names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Position in the mount's lowerdir list: 1 for the topmost.
    pub index: u32,
    /// The lowerdir, from `/` (mountinfo may show it relative to the runtime's layer directory).
    pub lowerdir: String,
    /// Position in the image, bottom first, and the image's layer count (Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_layer: Option<(u32, u32)>,
    /// The layer's digest (Docker: its diff id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What made it: the Dockerfile instruction (image history `created_by`), or "init layer"
    /// for the layer Docker writes /etc/hosts and friends into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

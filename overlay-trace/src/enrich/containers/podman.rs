//! podman (containers/storage): a container's root is `<storage>/overlay/<layer-id>/merged`
//! (upperdir `<storage>/overlay/<layer-id>/diff`), and
//! `<storage>/overlay-containers/containers.json` maps layer ids to container ids and names.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::stream::names::Container;
use crate::stream::names::OverlayMount;

const ROOTS: &[&str] = &["/var/lib/containers/storage"];

#[derive(Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    layer: String,
    /// A JSON document in a string; podman puts the image's name there (`image-name`).
    #[serde(default)]
    metadata: String,
}

/// The storage root a podman mount's layers live in (the root its upperdir is under).
pub fn storage_root_of(m: &OverlayMount) -> Option<PathBuf> {
    let upper = m.upperdir.as_deref()?;
    ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|r| Path::new(upper).starts_with(r.join("overlay")))
}

pub struct Podman {
    roots: Vec<PathBuf>,
}

/// The containers listed in a containers.json text, keyed by their layer id.
pub fn parse_containers_json(text: &str) -> Vec<(String, Container)> {
    let entries: Vec<Entry> = serde_json::from_str(text).unwrap_or_default();
    entries
        .into_iter()
        .map(|e| {
            let name = e
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| e.id.chars().take(12).collect());
            (
                e.layer,
                Container {
                    runtime: "podman".into(),
                    id: e.id,
                    name,
                    // The name the image was run by; the id when podman recorded none.
                    image: serde_json::from_str::<serde_json::Value>(&e.metadata)
                        .ok()
                        .and_then(|m| {
                            m["image-name"]
                                .as_str()
                                .filter(|n| !n.is_empty())
                                .map(str::to_string)
                        })
                        .unwrap_or(e.image),
                    namespace: None,
                    role: None,
                    pod: None,
                    image_id: None,
                },
            )
        })
        .collect()
}

/// The layer id of a containers/storage overlay mount.
pub fn layer_of(m: &OverlayMount) -> Option<String> {
    let from = |p: &str, leaf: &str| -> Option<String> {
        let dir = p.strip_suffix(leaf)?;
        let (parent, id) = dir.rsplit_once('/')?;
        parent.ends_with("/overlay").then(|| id.to_string())
    };
    m.upperdir
        .as_deref()
        .and_then(|u| from(u, "/diff"))
        .or_else(|| from(&m.mount_point, "/merged"))
}

impl Podman {
    pub fn new() -> Self {
        Self {
            roots: ROOTS.iter().map(PathBuf::from).collect(),
        }
    }

    pub fn resolve(&self, m: &OverlayMount) -> Option<Container> {
        let layer = layer_of(m)?;
        self.roots.iter().find_map(|r| {
            let text = crate::base::safe_fs::read_metadata(
                r,
                Path::new("overlay-containers/containers.json"),
            )?;
            parse_containers_json(&text)
                .into_iter()
                .find(|(l, _)| *l == layer)
                .map(|(_, c)| c)
        })
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::event::Dev;

    // The shape containers/storage writes (fields we do not read trimmed).
    const CONTAINERS_JSON: &str = r#"[{"id":"5c7a2b1d9e8f00112233445566778899aabbccddeeff00112233445566778899",
        "names":["api"],"image":"d1c2b3a4","layer":"8e8d8c8b8a898887868584838281807f7e7d7c7b7a797877767574737271706f",
        "metadata":"{\"image-name\":\"localhost/api:latest\"}","created":"2026-11-01T10:00:00Z"}]"#;

    #[test]
    fn layer_maps_to_container() {
        let layer = "8e8d8c8b8a898887868584838281807f7e7d7c7b7a797877767574737271706f";
        let m = OverlayMount {
            dev: Dev {
                major: 0,
                minor: 70,
            },
            mount_point: format!("/var/lib/containers/storage/overlay/{layer}/merged"),
            lowerdirs: vec![],
            upperdir: Some(format!("/var/lib/containers/storage/overlay/{layer}/diff")),
            workdir: None,
            ns_pid: None,
            userns: None,
        };
        assert_eq!(layer_of(&m).as_deref(), Some(layer));
        let all = parse_containers_json(CONTAINERS_JSON);
        assert_eq!(all[0].0, layer);
        assert_eq!(all[0].1.name, "api");
        assert!(parse_containers_json("not json").is_empty());
    }

    #[test]
    fn image_name_from_the_metadata_podman_writes() {
        // An entry as podman 4.3 wrote it in the VM test.
        let text = r#"[{"id":"09dd2e60041f44e09ba7b30a5f9658289e9e2ec01d5848aba73f0fe8cd9a6b52","names":["pa"],"image":"0e51f40a91f1bc86830a7d4c55f159d95e7c2ec6e66a27bfaa8cb193ab371b32","layer":"686fb38efba06954b8bc92eb2858b87e16a943add2ad4e92ce82bd94340b027f","metadata":"{\"image-name\":\"localhost/bb:1\",\"image-id\":\"0e51f40a91f1bc86830a7d4c55f159d95e7c2ec6e66a27bfaa8cb193ab371b32\",\"name\":\"pa\",\"created-at\":1795822148}","created":"2026-11-27T23:29:08.8537549Z","flags":{"MountLabel":"","ProcessLabel":""}}]"#;
        let all = parse_containers_json(text);
        assert_eq!(all[0].1.image, "localhost/bb:1");
        assert_eq!(all[0].1.name, "pa");
    }
}

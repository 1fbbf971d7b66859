//! Which image layer each lowerdir is (`enrich::origin` finds a path's lowerdir), and, for
//! Docker, the Dockerfile instruction that made it (`overlay2/<cache-id>` ->
//! layerdb's `diff` id -> the image config's `rootfs.diff_ids` and `history`).
//!
//! Lowerdirs come from mountinfo and the metadata from the runtime's data root: both are read
//! as untrusted (beneath their root, no symlinks followed, size-capped).

use crate::stream::names::LayerInfo;
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::base::safe_fs;

/// Image-layer metadata directories read when mapping a container's layers.
const LAYERDB_MAX: usize = 20_000;

/// A lowerdir as a path from `/`: runtimes mount long layer lists with paths relative to their
/// layer directory (`l/<short>`), which mountinfo then shows as given.
fn absolute(base: &Path, lowerdir: &str) -> String {
    let p = Path::new(lowerdir);
    if p.is_relative() {
        base.join(p).display().to_string()
    } else {
        lowerdir.to_string()
    }
}

/// The overlay2 directory (cache id) behind a Docker lowerdir: `.../overlay2/<id>/diff`, or a
/// short link `.../overlay2/l/<short>` (-> `../<id>/diff`), relative ones taken from `overlay2`.
fn cache_id(overlay2: &Path, lowerdir: &str) -> Option<String> {
    let p = Path::new(lowerdir);
    let p = if p.is_relative() {
        overlay2.join(p)
    } else {
        p.to_path_buf()
    };
    let target: PathBuf = match p.parent().and_then(|d| d.file_name()) {
        Some(l) if l == "l" => fs::read_link(&p).ok()?,
        _ => p.clone(),
    };
    // `<id>/diff`: the id is the directory holding `diff`.
    if target.file_name()? != "diff" {
        return None;
    }
    let id = target.parent()?.file_name()?.to_str()?.to_string();
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// A Docker container's lowerdirs named: image layer, diff id and instruction, from `root`
/// (Docker's data root) and the container's image id.
pub fn docker_layers(root: &Path, image_id: &str, lowerdirs: &[String]) -> Vec<LayerInfo> {
    let overlay2 = root.join("overlay2");
    // cache id -> diff id, from layerdb.
    let layerdb = Path::new("image/overlay2/layerdb/sha256");
    let mut diff_of: HashMap<String, String> = HashMap::new();
    if let Ok(dirs) = fs::read_dir(root.join(layerdb)) {
        for d in dirs.flatten().take(LAYERDB_MAX) {
            let name = d.file_name();
            let chain = layerdb.join(&name);
            let read = |f: &str| {
                safe_fs::read_metadata(root, &chain.join(f)).map(|s| s.trim().to_string())
            };
            if let (Some(cache), Some(diff)) = (read("cache-id"), read("diff")) {
                diff_of.insert(cache, diff);
            }
        }
    }
    // The image: diff ids bottom first, and the history entries that made a layer.
    let hex = image_id.trim_start_matches("sha256:");
    let config = (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            safe_fs::read_metadata(
                root,
                &Path::new("image/overlay2/imagedb/content/sha256").join(hex),
            )
        })
        .flatten()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let diff_ids: Vec<String> = config
        .as_ref()
        .and_then(|c| c["rootfs"]["diff_ids"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let made: Vec<String> = config
        .as_ref()
        .and_then(|c| c["history"].as_array())
        .map(|h| {
            h.iter()
                .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
                .map(|e| e["created_by"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    lowerdirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let mut info = LayerInfo {
                index: i as u32 + 1,
                lowerdir: absolute(&overlay2, dir),
                ..Default::default()
            };
            let id = cache_id(&overlay2, dir);
            if id.as_deref().is_some_and(|id| id.ends_with("-init")) {
                info.created_by =
                    Some("init layer (Docker: /etc/hosts, /etc/resolv.conf...)".into());
                return info;
            }
            let Some(diff) = id.and_then(|id| diff_of.get(&id).cloned()) else {
                return info;
            };
            if let Some(pos) = diff_ids.iter().position(|d| *d == diff) {
                info.image_layer = Some((pos as u32 + 1, diff_ids.len() as u32));
                // History and layers line up only when the image's history is complete.
                if made.len() == diff_ids.len() {
                    info.created_by = Some(clean_instruction(&made[pos]));
                }
            }
            info.digest = Some(diff);
            info
        })
        .collect()
}

/// A podman (containers/storage) container's lowerdirs named with their layer digest, from
/// `<root>/overlay-layers/layers.json` (layer id -> `diff-digest`); their position in the image
/// from their order (podman stacks the image's layers alone, topmost first).
pub fn podman_layers(root: &Path, lowerdirs: &[String]) -> Vec<LayerInfo> {
    let overlay = root.join("overlay");
    let digests: HashMap<String, String> =
        safe_fs::read_metadata(root, Path::new("overlay-layers/layers.json"))
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                Some((
                    l["id"].as_str()?.to_string(),
                    l["diff-digest"].as_str()?.to_string(),
                ))
            })
            .collect();
    let n = lowerdirs.len() as u32;
    lowerdirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let digest = cache_id(&overlay, dir).and_then(|id| digests.get(&id).cloned());
            LayerInfo {
                index: i as u32 + 1,
                lowerdir: absolute(&overlay, dir),
                image_layer: digest.as_ref().map(|_| (n - i as u32, n)),
                digest,
                created_by: None,
            }
        })
        .collect()
}

/// `/bin/sh -c #(nop)  COPY file:... in /` -> `COPY file:... in /`; `/bin/sh -c echo` -> `RUN
/// echo` (the legacy builder's spelling; BuildKit writes `RUN /bin/sh -c ...` itself).
fn clean_instruction(s: &str) -> String {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("/bin/sh -c #(nop) ") {
        return rest.trim().to_string();
    }
    if let Some(rest) = s.strip_prefix("/bin/sh -c ") {
        return format!("RUN {}", rest.trim());
    }
    if let Some(rest) = s.strip_prefix("RUN /bin/sh -c ") {
        return format!("RUN {}", rest.trim().trim_end_matches("# buildkit").trim());
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_lowerdirs_get_their_layer_digests() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for id in ["base", "top"] {
            fs::create_dir_all(root.join("overlay").join(id).join("diff")).unwrap();
        }
        fs::create_dir_all(root.join("overlay/l")).unwrap();
        std::os::unix::fs::symlink("../top/diff", root.join("overlay/l/T")).unwrap();
        fs::create_dir_all(root.join("overlay-layers")).unwrap();
        fs::write(
            root.join("overlay-layers/layers.json"),
            r#"[{"id":"base","diff-digest":"sha256:b"},{"id":"top","parent":"base","diff-digest":"sha256:t"}]"#,
        )
        .unwrap();
        let lowers = vec![
            root.join("overlay/l/T").display().to_string(),
            root.join("overlay/base/diff").display().to_string(),
        ];
        let l = podman_layers(root, &lowers);
        assert_eq!(l[0].digest.as_deref(), Some("sha256:t"));
        assert_eq!(l[0].image_layer, Some((2, 2)));
        assert_eq!(l[1].digest.as_deref(), Some("sha256:b"));
        assert_eq!(l[1].image_layer, Some((1, 2)));
    }

    #[test]
    fn docker_lowerdirs_map_to_image_layers_and_instructions() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let o2 = root.join("overlay2");
        for id in ["aaa", "bbb", "ccc-init"] {
            fs::create_dir_all(o2.join(id).join("diff")).unwrap();
        }
        fs::create_dir_all(o2.join("l")).unwrap();
        std::os::unix::fs::symlink("../bbb/diff", o2.join("l/SHORTB")).unwrap();
        let db = root.join("image/overlay2/layerdb/sha256");
        for (chain, cache, diff) in [("c1", "aaa", "sha256:d1"), ("c2", "bbb", "sha256:d2")] {
            fs::create_dir_all(db.join(chain)).unwrap();
            fs::write(db.join(chain).join("cache-id"), cache).unwrap();
            fs::write(db.join(chain).join("diff"), diff).unwrap();
        }
        let img = root.join("image/overlay2/imagedb/content/sha256");
        fs::create_dir_all(&img).unwrap();
        fs::write(
            img.join("abcd"),
            r#"{"rootfs":{"diff_ids":["sha256:d1","sha256:d2"]},"history":[
                {"created_by":"/bin/sh -c #(nop) ADD file:x in / "},
                {"created_by":"/bin/sh -c #(nop)  ENV A=1","empty_layer":true},
                {"created_by":"/bin/sh -c pip install -r requirements.txt"}]}"#,
        )
        .unwrap();
        let lowers = vec![
            o2.join("ccc-init/diff").display().to_string(),
            o2.join("l/SHORTB").display().to_string(),
            o2.join("aaa/diff").display().to_string(),
        ];
        let l = docker_layers(root, "sha256:abcd", &lowers);
        assert!(
            l[0].created_by
                .as_deref()
                .unwrap()
                .starts_with("init layer")
        );
        assert_eq!(l[1].image_layer, Some((2, 2)));
        assert_eq!(l[1].digest.as_deref(), Some("sha256:d2"));
        assert_eq!(
            l[1].created_by.as_deref(),
            Some("RUN pip install -r requirements.txt")
        );
        assert_eq!(l[2].image_layer, Some((1, 2)));
        assert_eq!(l[2].created_by.as_deref(), Some("ADD file:x in /"));
        // A forged image id names nothing.
        assert!(
            docker_layers(root, "../../x", &lowers)[1]
                .created_by
                .is_none()
        );
    }
}

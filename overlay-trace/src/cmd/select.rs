//! `--container`: the superblocks of the running containers a user named.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

use crate::{
    enrich::{budget::Budgeted, containers::Resolver},
    stream::{
        event::Dev,
        names::{Container, OverlayMount},
    },
};

/// Resolves `--container` arguments to the superblocks of running containers. An argument that
/// matches none is an error listing what is running.
pub(super) async fn select_containers(
    wanted: &[String],
    mounts: &BTreeMap<Dev, OverlayMount>,
    resolver: &mut Resolver,
    io: &mut Budgeted,
) -> Result<Vec<(Dev, Option<Container>)>> {
    use crate::base::escape::escape;
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let running = resolver.running(mounts, io).await;
    let mut out = Vec::new();
    for w in wanted {
        let hits: Vec<(Dev, Option<Container>)> = running
            .iter()
            .filter(|(_, c)| c.matches(w))
            .map(|(d, c)| (*d, Some(c.clone())))
            .collect();
        if hits.is_empty() {
            let list: Vec<String> = running
                .iter()
                .map(|(_, c)| format!("{} ({})", escape(&c.name), c.short_id()))
                .collect();
            return Err(anyhow!(
                "no running container matches {:?}; running containers: {}",
                escape(w),
                if list.is_empty() {
                    "none found".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
        out.extend(hits);
    }
    Ok(out)
}

/// The upper dirs of the selected containers' roots, as the kernel identifies them (its `s_dev`
/// encoding and the inode number): their roots mounted again after a restart are traced too.
/// A path that cannot be read is left out, and one on a filesystem whose `stat` device is not
/// its superblock's (a btrfs subvolume) never matches: that container is then not followed.
pub(super) fn upper_dirs(
    selected: &[(Dev, Option<Container>)],
    mounts: &BTreeMap<Dev, OverlayMount>,
) -> Vec<overlay_trace_common::UpperDir> {
    use std::os::unix::fs::MetadataExt as _;
    selected
        .iter()
        .filter(|(_, c)| c.is_some())
        .filter_map(|(dev, _)| mounts.get(dev)?.upperdir.clone())
        // Docker's, containerd's and podman's upper dirs: host paths under their data roots. A
        // relative one (Docker's, when the options are too long for a page) means nothing from
        // here: not followed, and said.
        .filter(|dir| {
            let absolute = dir.starts_with('/');
            if !absolute {
                eprintln!(
                    "warning: a selected container's upper dir is given relative to its \
                     runtime's directory ({}): a restart of it is not followed",
                    crate::base::escape::escape(dir)
                );
            }
            absolute
        })
        .filter_map(|dir| std::fs::metadata(dir).ok())
        .map(|m| overlay_trace_common::UpperDir {
            ino: m.ino(),
            dev: Dev {
                major: libc::major(m.dev()),
                minor: libc::minor(m.dev()),
            }
            .to_kernel(),
            _pad: 0,
        })
        .collect()
}

/// Says why selected containers that restart will not be followed, when they will not.
pub(super) fn warn_if_not_followed(
    offsets_known: bool,
    probes: &[crate::stream::record::ProbeReport],
) {
    if !offsets_known {
        eprintln!(
            "warning: this kernel's BTF lacks overlay's own types: a selected container that \
             restarts is not traced again"
        );
    }
    if !probes.iter().any(|p| p.function == "ovl_fill_super") {
        eprintln!(
            "warning: mounts are not traced: a selected container that restarts is not \
             followed, and an overlay that takes its device number would be traced"
        );
    }
}

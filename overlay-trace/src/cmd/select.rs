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

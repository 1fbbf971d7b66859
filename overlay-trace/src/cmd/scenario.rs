//! `overlay-trace scenario events.ndjson`: a recorded start as a bench scenario. Each object one
//! mount copied up is put at its path in its source layer, with its size and type, and one step
//! asks for its copy-up the way the recording says it was asked for (an append, a chown, a
//! rename...). File contents are never recorded: the scenario writes sizes of filler.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Result, bail};

use crate::{
    base::{BadInput, escape::escape},
    cmd::bench::scenario::{FileSpec, Kind, Op, Scenario, Step},
    model::aggregate::Aggregate,
    stream::{
        event::{CopyUp, Event},
        input::{self, Item},
        names::{Container, OverlayMount},
        record::{MountKey, Record},
        trigger::Trigger,
    },
};

/// The bench's bound on lower layers; deeper recordings fold their bottom layers into the last.
const LAYERS_MAX: usize = 64;
/// Copy-ups of one mount kept (the bench's bound on a scenario's objects).
const COPY_UPS_MAX: usize = 1_000_000;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// One mount of the recording: its copy-ups (with their source layer), in order.
#[derive(Default)]
pub struct Recorded {
    pub mount: Option<OverlayMount>,
    pub container: Option<Container>,
    pub copy_ups: Vec<(CopyUp, Option<u32>)>,
    /// Copy-ups beyond `COPY_UPS_MAX`, not kept.
    pub left_out: u64,
}

impl Recorded {
    pub fn label(&self, key: &MountKey) -> String {
        match (&self.container, &self.mount) {
            (Some(c), _) => format!("container {} ({})", c.name, c.short_id()),
            (None, Some(m)) => format!("mount {}", m.mount_point),
            (None, None) => format!("mount dev {} #{}", key.dev, key.generation),
        }
    }

    pub fn matches(&self, what: &str) -> bool {
        !what.is_empty()
            && self
                .container
                .as_ref()
                .is_some_and(|c| c.name == what || c.id.starts_with(what))
            || self.mount.as_ref().is_some_and(|m| m.mount_point == what)
    }
}

/// Every mount of events file `path` that copied something up.
pub fn read(path: &Path) -> Result<BTreeMap<MountKey, Recorded>> {
    let mut agg = Aggregate::default();
    let mut mounts: BTreeMap<MountKey, Recorded> = BTreeMap::new();
    let mut seqs: BTreeMap<u64, (MountKey, usize)> = BTreeMap::new();
    let key = |dev, mount_gen| MountKey {
        dev,
        generation: mount_gen,
    };
    input::read(path, |item| {
        match item {
            Item::Event(e) => {
                let added = agg.add(&e);
                if let Event::CopyUp(c) = e {
                    if !c.is_wait() && c.ret == 0 && !c.path_truncated {
                        let r = mounts.entry(added.key).or_default();
                        // A scenario holds at most that many objects: the rest are counted.
                        if r.copy_ups.len() >= COPY_UPS_MAX {
                            r.left_out += 1;
                        } else {
                            seqs.insert(added.seq, (added.key, r.copy_ups.len()));
                            r.copy_ups.push((c, None));
                        }
                    }
                }
            }
            Item::Record(Record::NamedMount {
                dev,
                mount_gen,
                mount,
            }) => mounts.entry(key(dev, mount_gen)).or_default().mount = Some(mount),
            Item::Record(Record::NamedContainer {
                dev,
                mount_gen,
                container,
            }) => {
                mounts.entry(key(dev, mount_gen)).or_default().container = Some(container);
            }
            Item::Record(Record::Known {
                dev,
                mount_gen,
                mount,
                container,
            }) => {
                let r = mounts.entry(key(dev, mount_gen)).or_default();
                r.mount = mount;
                r.container = Some(container);
            }
            Item::Record(Record::SourceLayer { copy_up, layer, .. }) => {
                if let Some((k, i)) = seqs.get(&copy_up.seq) {
                    if let Some(c) = mounts.get_mut(k).and_then(|r| r.copy_ups.get_mut(*i)) {
                        c.1 = Some(layer);
                    }
                }
            }
            Item::Record(_) => {}
        }
        Ok(())
    })?;
    mounts.retain(|_, r| !r.copy_ups.is_empty());
    Ok(mounts)
}

/// `overlay-trace scenario`: the scenario of one mount of `events` (`mount`: a container name,
/// id prefix or mount point; by default the one whose copy-ups took longest), as TOML.
pub fn scenario(events: &Path, mount: Option<&str>) -> Result<String> {
    let mounts = read(events)?;
    // A container's root, not the mounts made on the way (Docker's init layer).
    let root = |r: &Recorded| r.container.as_ref().is_none_or(|c| c.role.is_none());
    let chosen = match mount {
        Some(what) => {
            let hits: Vec<_> = mounts
                .iter()
                .filter(|(_, r)| r.matches(what) && root(r))
                .collect();
            if hits.len() > 1 {
                let names: Vec<String> = hits.iter().map(|(k, r)| escape(&r.label(k))).collect();
                bail!(BadInput(format!(
                    "{}: {} names {} mounts with copy-ups ({}): give a longer id or the mount point",
                    events.display(),
                    escape(what),
                    hits.len(),
                    names.join(", ")
                )));
            }
            hits.into_iter().next()
        }
        None => mounts.iter().filter(|(_, r)| root(r)).max_by_key(|(_, r)| {
            r.copy_ups
                .iter()
                .map(|c| c.0.duration_ns)
                .fold(0, u64::saturating_add)
        }),
    };
    let Some((key, r)) = chosen else {
        let known: Vec<String> = mounts.iter().map(|(k, r)| r.label(k)).collect();
        bail!(BadInput(format!(
            "{}: no copy-ups{}{}",
            events.display(),
            mount.map(|m| format!(" on {m:?}")).unwrap_or_default(),
            if known.is_empty() {
                String::new()
            } else {
                format!(" (mounts with copy-ups: {})", known.join(", "))
            }
        )));
    };
    let (s, folded) = derive(r, &r.label(key));
    // Names from the recording are escaped: a newline in one cannot add a key to the file.
    let mut out = format!(
        "# Recorded by overlay-trace from {}: {}, {} copy-ups.\n# File contents are not \
         recorded: files hold filler of their recorded size.\n",
        escape(&events.display().to_string()),
        escape(&r.label(key)),
        r.copy_ups.len()
    );
    if r.left_out > 0 {
        out.push_str(&format!(
            "# {} more copy-ups left out: a scenario holds at most {COPY_UPS_MAX}.\n",
            r.left_out
        ));
    }
    if folded > 0 {
        out.push_str(&format!(
            "# The mount had {} lower layers: the bottom {} are folded into layer {}.\n",
            folded + LAYERS_MAX,
            folded + 1,
            LAYERS_MAX - 1
        ));
    }
    out.push_str(&toml::to_string(&s).map_err(|e| anyhow::anyhow!("cannot write TOML: {e}"))?);
    Ok(out)
}

/// The scenario of `r`, and how many of its layers were folded into the last one.
pub fn derive(r: &Recorded, label: &str) -> (Scenario, usize) {
    let recorded_layers = r
        .mount
        .as_ref()
        .map_or(0, |m| m.lowerdirs.len())
        .max(r.copy_ups.iter().filter_map(|c| c.1).max().unwrap_or(1) as usize)
        .max(1);
    let layers = recorded_layers.min(LAYERS_MAX);
    // 1-based source layer (topmost first) to the bench's 0-based one; unknown: the bottom.
    let layer_of =
        |l: Option<u32>| l.map_or(layers - 1, |l| (l.max(1) as usize - 1).min(layers - 1));
    let paths: Vec<&str> = r
        .copy_ups
        .iter()
        .map(|c| c.0.path.trim_start_matches('/'))
        .collect();
    let mut files = Vec::new();
    let mut steps = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, ((c, layer), rel)) in r.copy_ups.iter().zip(&paths).enumerate() {
        // `{i}` would be expanded by the bench; an object is copied up once.
        if rel.is_empty() || rel.contains("{i}") || !seen.insert(*rel) {
            continue;
        }
        let layer = layer_of(*layer);
        let kind = match c.mode & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            _ => Kind::File,
        };
        let size = match kind {
            Kind::File => c.data.map_or(c.size.max(0) as u64, |d| d.bytes),
            _ => 0,
        };
        files.push(FileSpec {
            layer,
            path: rel.to_string(),
            count: 1,
            size,
            kind,
        });
        // A directory copied up on the way to something beneath it (the next copy-up, asked for
        // the same way: overlayfs copies the parents first) is copied up again by that step.
        let prefix = format!("{rel}/");
        let next = r.copy_ups.get(i + 1).zip(paths.get(i + 1));
        if kind == Kind::Dir
            && next.is_some_and(|((n, _), p)| p.starts_with(&prefix) && n.trigger() == c.trigger())
        {
            continue;
        }
        let step = |op: Op, path: String, to: Option<String>| Step {
            op,
            path,
            to,
            count: 1,
            recursive: false,
        };
        let trigger = c.trigger();
        steps.push(match (kind, trigger) {
            (Kind::Symlink, Some(Trigger::Chown)) => step(Op::Chown, rel.to_string(), None),
            (Kind::Symlink, _) => step(Op::Link, rel.to_string(), Some(beside(rel, "link", i))),
            (Kind::Dir, Some(Trigger::Chmod)) => step(Op::Chmod, rel.to_string(), None),
            (Kind::Dir, Some(Trigger::Chown)) => step(Op::Chown, rel.to_string(), None),
            (Kind::Dir, Some(Trigger::Utimes)) => step(Op::Touch, rel.to_string(), None),
            (Kind::Dir, Some(Trigger::Xattr)) => step(Op::Setxattr, rel.to_string(), None),
            (Kind::Dir, Some(Trigger::Remove)) => {
                let gone = format!("{rel}/.ot-gone");
                files.push(FileSpec {
                    layer,
                    path: gone.clone(),
                    count: 1,
                    size: 0,
                    kind: Kind::File,
                });
                step(Op::Remove, gone, None)
            }
            (Kind::Dir, Some(Trigger::Open)) => step(Op::Create, format!("{rel}/.ot-new"), None),
            (Kind::Dir, _) => step(Op::Mkdir, format!("{rel}/.ot-new"), None),
            (Kind::File, Some(Trigger::Chmod)) => step(Op::Chmod, rel.to_string(), None),
            (Kind::File, Some(Trigger::Chown)) => step(Op::Chown, rel.to_string(), None),
            (Kind::File, Some(Trigger::Utimes)) => step(Op::Touch, rel.to_string(), None),
            (Kind::File, Some(Trigger::Xattr)) => step(Op::Setxattr, rel.to_string(), None),
            (Kind::File, Some(Trigger::Truncate)) => step(Op::Resize, rel.to_string(), None),
            (Kind::File, Some(Trigger::Link)) => {
                step(Op::Link, rel.to_string(), Some(beside(rel, "link", i)))
            }
            (Kind::File, Some(Trigger::Rename)) => {
                step(Op::Rename, rel.to_string(), Some(beside(rel, "moved", i)))
            }
            (Kind::File, _) if c.open_flags & libc::O_TRUNC as u32 != 0 => {
                step(Op::Truncate, rel.to_string(), None)
            }
            (Kind::File, _) => step(Op::Append, rel.to_string(), None),
        });
    }
    let s = Scenario {
        name: "recorded".into(),
        description: format!("{label}: {} copy-ups as recorded", r.copy_ups.len()),
        layers,
        mount_options: String::new(),
        files,
        steps,
    };
    (s, recorded_layers - layers)
}

/// A short new name in `rel`'s directory (a suffix could make a long name too long).
fn beside(rel: &str, what: &str, i: usize) -> String {
    match rel.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/.ot-{what}-{i}"),
        None => format!(".ot-{what}-{i}"),
    }
}

#[cfg(test)]
mod tests;

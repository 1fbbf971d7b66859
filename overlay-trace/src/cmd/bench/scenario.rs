//! Benchmark scenarios: small TOML files a user can copy and edit (see scenarios/ in the repo).
//! A scenario says what the lower layers hold and what the workload does on the merged view.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::base::BadInput;

use crate::base::safe_fs::{is_confined, read_user_file};

/// The scenarios shipped with overlay-trace, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "container-start",
        include_str!("../../../../scenarios/container-start.toml"),
    ),
    (
        "package-install",
        include_str!("../../../../scenarios/package-install.toml"),
    ),
    (
        "log-append",
        include_str!("../../../../scenarios/log-append.toml"),
    ),
    (
        "chmod-r",
        include_str!("../../../../scenarios/chmod-r.toml"),
    ),
    (
        "rename-dirs",
        include_str!("../../../../scenarios/rename-dirs.toml"),
    ),
];

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Number of lower layers; layer 0 is the topmost.
    pub layers: usize,
    /// Extra overlay mount options (e.g. "redirect_dir=on", "metacopy=on").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_options: String,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub layer: usize,
    /// `{i}` is replaced by 0..count.
    pub path: String,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Kind::is_file")]
    pub kind: Kind,
}

/// What a `FileSpec` makes: a file of `size` bytes, a directory, or a symlink (to "target").
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn is_file(&self) -> bool {
        *self == Kind::File
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Append one line (copies the file up).
    Append,
    /// Open with O_TRUNC and write one line.
    Truncate,
    /// chmod 0640 (copies up; with data unless metacopy=on).
    Chmod,
    /// Create a new file (copies up its parent directories).
    Create,
    /// rename(2) `path` to `to`.
    Rename,
    /// stat (a lookup; missing names are fine).
    Stat,
    /// Read the whole file (lookups, no copy-up).
    Read,
    /// fchownat to its own owner (copies up; with data unless metacopy=on).
    Chown,
    /// Set the xattr `trusted.overlay-trace` (copies up; with data unless metacopy=on).
    Setxattr,
    /// Set its times to now (utimensat; copies up, with data unless metacopy=on).
    Touch,
    /// truncate(2) to its own size (copies up with its data).
    Resize,
    /// Hard link `path` to `to` (copies `path` up; with data unless metacopy=on).
    Link,
    /// Make the directory `path` (copies up its parent directories).
    Mkdir,
    /// unlink `path` (copies up its parent directories, leaves a whiteout).
    Remove,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub op: Op,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: usize,
    /// chmod: the whole tree under `path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A scenario's paths must stay inside the overlay; it runs as root.
fn check_path(key: &str, p: &str) -> Result<()> {
    if !is_confined(p) {
        bail!(BadInput(format!(
            "bad scenario: {key} {:?} must be a relative path inside the overlay (no leading '/', no '..')",
            crate::base::escape::escape(p)
        )));
    }
    Ok(())
}

/// Files, and steps, one scenario may make (counts included).
const OBJECTS_MAX: usize = 1_000_000;
/// The bytes a scenario's files may hold (all on tmpfs, in memory).
const BYTES_MAX: u64 = 16 << 30;
/// The largest scenario file read (a million objects is about 100 MiB of TOML).
const SCENARIO_MAX: u64 = 256 << 20;

impl Scenario {
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| BadInput(format!("bad scenario: {e}")))?;
        for (i, f) in s.files.iter().enumerate() {
            check_path(&format!("files[{i}].path"), &f.path)?;
        }
        for (i, st) in s.steps.iter().enumerate() {
            check_path(&format!("steps[{i}].path"), &st.path)?;
            if let Some(to) = &st.to {
                check_path(&format!("steps[{i}].to"), to)?;
            }
        }
        super::check_mount_options(
            "bad scenario: mount_options",
            &s.mount_options,
            super::OVERLAY_OPTIONS,
        )?;
        // Paths are made up front: a count is bounded so a typo cannot exhaust memory.
        let files: usize = s
            .files
            .iter()
            .map(|f| f.count)
            .fold(0, usize::saturating_add);
        let steps: usize = s
            .steps
            .iter()
            .map(|st| st.count)
            .fold(0, usize::saturating_add);
        if files > OBJECTS_MAX || steps > OBJECTS_MAX {
            bail!(BadInput(format!(
                "bad scenario: {} files and {} steps; at most {OBJECTS_MAX} of each",
                files, steps
            )));
        }
        // The layers are filled on tmpfs, in this host's memory.
        let bytes = s
            .files
            .iter()
            .map(|f| f.size.saturating_mul(f.count as u64))
            .fold(0, u64::saturating_add);
        if bytes > BYTES_MAX {
            bail!(BadInput(format!(
                "bad scenario: its files hold {bytes} bytes; at most {} GiB",
                BYTES_MAX >> 30
            )));
        }
        if s.layers == 0 || s.layers > 64 {
            bail!(BadInput("bad scenario: layers must be 1 to 64".into()));
        }
        if let Some(f) = s.files.iter().find(|f| f.layer >= s.layers) {
            bail!(BadInput(format!(
                "bad scenario: file {} is in layer {} of {}",
                crate::base::escape::escape(&f.path),
                f.layer,
                s.layers
            )));
        }
        if let Some(st) = s
            .steps
            .iter()
            .find(|st| matches!(st.op, Op::Rename | Op::Link) && st.to.is_none())
        {
            bail!(BadInput(format!(
                "bad scenario: {:?} of {} has no `to`",
                st.op,
                crate::base::escape::escape(&st.path)
            )));
        }
        Ok(s)
    }

    /// A built-in name or a path to a TOML file; returns the scenario and its source text.
    pub fn load(name_or_path: &str) -> Result<(Self, String)> {
        let text = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => t.to_string(),
            None => read_user_file(Path::new(name_or_path), SCENARIO_MAX).map_err(|e| {
                let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                BadInput(format!(
                    "no scenario {name_or_path:?}: not a readable file ({e:#}), nor one of {}",
                    names.join(", ")
                ))
            })?,
        };
        Ok((
            Self::parse(&text).with_context(|| name_or_path.to_string())?,
            text,
        ))
    }
}

fn expand(path: &str, count: usize) -> Vec<String> {
    if path.contains("{i}") {
        (0..count)
            .map(|i| path.replace("{i}", &i.to_string()))
            .collect()
    } else {
        vec![path.to_string(); count.min(1)]
    }
}

mod work;
pub use work::{populate, run_steps};

#[cfg(test)]
mod tests;

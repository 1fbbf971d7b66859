//! Benchmark scenarios: small TOML files a user can copy and edit (see scenarios/ in the repo).
//! A scenario says what the lower layers hold and what the workload does on the merged view.

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    os::{fd::OwnedFd, unix::fs::PermissionsExt as _},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::base::BadInput;

use crate::base::safe_fs::{create_dirs_beneath, is_confined, open_beneath, open_dir};

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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Number of lower layers; layer 0 is the topmost.
    pub layers: usize,
    /// Extra overlay mount options (e.g. "redirect_dir=on", "metacopy=on").
    #[serde(default)]
    pub mount_options: String,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub layer: usize,
    /// `{i}` is replaced by 0..count.
    pub path: String,
    #[serde(default = "one")]
    pub count: usize,
    #[serde(default)]
    pub size: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
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
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub op: Op,
    pub path: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default = "one")]
    pub count: usize,
    /// chmod: the whole tree under `path`.
    #[serde(default)]
    pub recursive: bool,
}

fn one() -> usize {
    1
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
        if s.layers == 0 || s.layers > 64 {
            bail!(BadInput("bad scenario: layers must be 1 to 64".into()));
        }
        if let Some(f) = s.files.iter().find(|f| f.layer >= s.layers) {
            bail!(
                "bad scenario: file {} is in layer {} of {}",
                f.path,
                f.layer,
                s.layers
            );
        }
        if let Some(st) = s
            .steps
            .iter()
            .find(|st| st.op == Op::Rename && st.to.is_none())
        {
            bail!("bad scenario: rename of {} has no `to`", st.path);
        }
        Ok(s)
    }

    /// A built-in name or a path to a TOML file; returns the scenario and its source text.
    pub fn load(name_or_path: &str) -> Result<(Self, String)> {
        let text = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => t.to_string(),
            None => fs::read_to_string(name_or_path).with_context(|| {
                let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                format!(
                    "no scenario {name_or_path:?}: not a file, nor one of {}",
                    names.join(", ")
                )
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

/// Creates `rel` (and its directories) beneath `dir` for writing.
fn create_beneath(dir: &OwnedFd, rel: &Path) -> Result<File> {
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs_beneath(dir, parent)?;
    }
    let fd = open_beneath(
        dir,
        rel,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        0o644,
    )
    .with_context(|| format!("cannot create {}", rel.display()))?;
    Ok(File::from(fd))
}

/// Fills the lower layers (`lower(i)` is layer i), every file opened beneath its layer (no
/// symlink or `..` leads out). Stops early when `stop` is set.
pub fn populate(
    s: &Scenario,
    lower: impl Fn(usize) -> std::path::PathBuf,
    stop: &AtomicBool,
) -> Result<()> {
    // Real data, not a sparse file: copy-up cost depends on it.
    let chunk = vec![0x5au8; 1 << 20];
    for f in &s.files {
        let dir = open_dir(&lower(f.layer))?;
        for rel in expand(&f.path, f.count) {
            let mut w = std::io::BufWriter::new(create_beneath(&dir, Path::new(&rel))?);
            let mut left = f.size;
            while left > 0 {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let n = left.min(chunk.len() as u64) as usize;
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            w.flush()?;
        }
    }
    Ok(())
}

fn open_at(dir: &OwnedFd, rel: &Path, flags: i32) -> std::io::Result<File> {
    open_beneath(dir, rel, flags, 0).map(File::from)
}

/// chmod -R beneath `dir`: directories 0750, files 0640.
fn chmod_tree(dir: &OwnedFd, rel: &Path) -> Result<()> {
    let f = open_at(dir, rel, libc::O_RDONLY | libc::O_NOFOLLOW)?;
    let is_dir = f.metadata()?.is_dir();
    f.set_permissions(fs::Permissions::from_mode(if is_dir {
        0o750
    } else {
        0o640
    }))?;
    if is_dir {
        use std::os::fd::AsRawFd as _;
        // The names, through our own descriptor of the directory.
        for e in fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))? {
            chmod_tree(dir, &rel.join(e?.file_name()))?;
        }
    }
    Ok(())
}

/// Opens the parent directory of `rel` beneath `dir`, and returns it with the last component.
fn parent_of(dir: &OwnedFd, rel: &Path) -> Result<(OwnedFd, std::ffi::CString)> {
    use std::os::unix::ffi::OsStrExt as _;
    let name = rel
        .file_name()
        .with_context(|| format!("{}: no file name", rel.display()))?;
    let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => open_beneath(dir, p, libc::O_PATH | libc::O_DIRECTORY, 0)?,
        None => dir.try_clone()?,
    };
    Ok((parent, std::ffi::CString::new(name.as_bytes())?))
}

/// Runs the workload on `merged` (in the process the tracer runs as its command); every path is
/// resolved beneath it.
pub fn run_steps(s: &Scenario, merged: &Path) -> Result<()> {
    let dir = open_dir(merged)?;
    for st in &s.steps {
        for (i, rel) in expand(&st.path, st.count).into_iter().enumerate() {
            let p = Path::new(&rel);
            let ctx = || format!("{:?} {}", st.op, p.display());
            match st.op {
                Op::Append => open_at(&dir, p, libc::O_WRONLY | libc::O_APPEND)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Truncate => open_at(&dir, p, libc::O_WRONLY | libc::O_TRUNC)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Create => create_beneath(&dir, p)
                    .and_then(|mut f| Ok(f.write_all(b"new\n")?))
                    .with_context(ctx)?,
                Op::Chmod if st.recursive => chmod_tree(&dir, p).with_context(ctx)?,
                Op::Chmod => open_at(&dir, p, libc::O_RDONLY)
                    .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o640)))
                    .with_context(ctx)?,
                Op::Rename => {
                    let to = expand(st.to.as_deref().unwrap_or(""), st.count)
                        .into_iter()
                        .nth(i)
                        .unwrap_or_default();
                    let (from_dir, from_name) = parent_of(&dir, p).with_context(ctx)?;
                    let (to_dir, to_name) = parent_of(&dir, Path::new(&to)).with_context(ctx)?;
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: valid descriptors and C strings.
                    let r = unsafe {
                        libc::renameat(
                            from_dir.as_raw_fd(),
                            from_name.as_ptr(),
                            to_dir.as_raw_fd(),
                            to_name.as_ptr(),
                        )
                    };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error()).with_context(ctx);
                    }
                }
                Op::Stat => {
                    let _ = open_at(&dir, p, libc::O_PATH | libc::O_NOFOLLOW);
                }
                Op::Read => {
                    let mut buf = Vec::new();
                    open_at(&dir, p, libc::O_RDONLY)
                        .and_then(|mut f| f.read_to_end(&mut buf))
                        .with_context(ctx)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Benchmark scenarios: small TOML files a user can copy and edit (see scenarios/ in the repo).
//! A scenario says what the lower layers hold and what the workload does on the merged view.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// The scenarios shipped with overlay-trace, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "container-start",
        include_str!("../../../scenarios/container-start.toml"),
    ),
    (
        "package-install",
        include_str!("../../../scenarios/package-install.toml"),
    ),
    (
        "log-append",
        include_str!("../../../scenarios/log-append.toml"),
    ),
    ("chmod-r", include_str!("../../../scenarios/chmod-r.toml")),
    (
        "rename-dirs",
        include_str!("../../../scenarios/rename-dirs.toml"),
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

impl Scenario {
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text).context("bad scenario")?;
        if s.layers == 0 || s.layers > 64 {
            bail!("bad scenario: layers must be 1 to 64");
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

/// Fills the lower layers (`lower(i)` is layer i).
pub fn populate(s: &Scenario, lower: impl Fn(usize) -> std::path::PathBuf) -> Result<()> {
    for f in &s.files {
        for rel in expand(&f.path, f.count) {
            let p = lower(f.layer).join(&rel);
            fs::create_dir_all(p.parent().unwrap())?;
            let file = fs::File::create(&p).with_context(|| p.display().to_string())?;
            // Real data, not a sparse file: copy-up cost depends on it.
            let chunk = vec![0x5au8; 1 << 20];
            let mut left = f.size;
            let mut w = std::io::BufWriter::new(file);
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            w.flush()?;
        }
    }
    Ok(())
}

fn chmod_tree(p: &Path) -> Result<()> {
    fs::set_permissions(
        p,
        fs::Permissions::from_mode(if p.is_dir() { 0o750 } else { 0o640 }),
    )?;
    if p.is_dir() {
        for e in fs::read_dir(p)? {
            chmod_tree(&e?.path())?;
        }
    }
    Ok(())
}

/// Runs the workload on `merged` (in the process the tracer runs as its command).
pub fn run_steps(s: &Scenario, merged: &Path) -> Result<()> {
    for st in &s.steps {
        for (i, rel) in expand(&st.path, st.count).into_iter().enumerate() {
            let p = merged.join(&rel);
            let ctx = || format!("{:?} {}", st.op, p.display());
            match st.op {
                Op::Append => OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Truncate => OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Create => {
                    fs::create_dir_all(p.parent().unwrap()).with_context(ctx)?;
                    fs::write(&p, b"new\n").with_context(ctx)?;
                }
                Op::Chmod if st.recursive => chmod_tree(&p).with_context(ctx)?,
                Op::Chmod => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).with_context(ctx)?
                }
                Op::Rename => {
                    let to = expand(st.to.as_deref().unwrap_or(""), st.count)
                        .into_iter()
                        .nth(i)
                        .unwrap_or_default();
                    fs::rename(&p, merged.join(to)).with_context(ctx)?
                }
                Op::Stat => {
                    let _ = fs::symlink_metadata(&p);
                }
                Op::Read => {
                    fs::read(&p).with_context(ctx)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&s.name, name);
            assert!(!s.steps.is_empty());
        }
    }

    #[test]
    fn bad_scenarios_are_clear() {
        let e = |t: &str| format!("{:#}", Scenario::parse(t).unwrap_err());
        assert!(e("name = 1").contains("bad scenario"));
        assert!(e("name='x'\nlayers=1\nsteps=[]\nbogus=1").contains("unknown field `bogus`"));
        assert!(e("name='x'\nlayers=0\nsteps=[]").contains("layers must be 1 to 64"));
        assert!(
            e("name='x'\nlayers=1\nsteps=[]\n[[files]]\nlayer=3\npath='a'")
                .contains("in layer 3 of 1")
        );
        assert!(e("name='x'\nlayers=1\n[[steps]]\nop='rename'\npath='a'").contains("has no `to`"));
        assert!(
            e("name='x'\nlayers=1\n[[steps]]\nop='explode'\npath='a'").contains("unknown variant")
        );
        let err = format!("{:#}", Scenario::load("no-such-scenario").unwrap_err());
        assert!(
            err.contains("not a file, nor one of container-start"),
            "{err}"
        );
    }

    #[test]
    fn workload_runs_on_a_plain_directory() {
        // The steps do the same on any directory; the VM test runs them on a real overlay.
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Scenario::load("rename-dirs").unwrap();
        populate(&s, |_| d.path().to_path_buf()).unwrap();
        run_steps(&s, d.path()).unwrap();
        assert!(d.path().join("opt/moved49/file").exists() && !d.path().join("opt/dir0").exists());
    }
}

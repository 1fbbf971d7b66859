//! Output files (`--json`, `--events`, pictures). Each is written to a temporary file beside its
//! target and renamed into place only when complete: a failed, refused or interrupted run leaves
//! the previous file as it was, and a symlink at the path is replaced, never followed.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;

use crate::events::Event;

/// A file being written; it replaces `path` on `commit`, and disappears if dropped before.
pub struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl PendingFile {
    pub fn create(path: &Path, what: &str) -> Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("cannot write {what} to {}: not a file name", path.display()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("cannot write {what} to {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::new(file)),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out
            .as_mut()
            .expect("a pending file has a writer until committed")
    }

    /// Flushes and renames the file into place (replacing a symlink there, not its target).
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("committed once");
        let r = out
            .into_inner()
            .map_err(|e| anyhow!("cannot write {}: {}", self.path.display(), e.error()))
            .and_then(|f| {
                f.sync_all()
                    .with_context(|| format!("cannot write {}", self.path.display()))
            })
            .and_then(|()| {
                fs::rename(&self.tmp, &self.path)
                    .with_context(|| format!("cannot write {}", self.path.display()))
            });
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }

    /// Puts in place whatever reached the file, after a write failed.
    pub fn commit_partial(mut self) -> Result<()> {
        drop(self.out.take());
        let r = fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()));
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` through a pending file.
pub fn write_file(path: &Path, what: &str, bytes: &[u8]) -> Result<()> {
    let mut f = PendingFile::create(path, what)?;
    f.writer()
        .write_all(bytes)
        .with_context(|| format!("cannot write {what} to {}", path.display()))?;
    f.commit()
}

/// One line of `--events`: the event and which mount of its device it belongs to.
#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a Event,
    mount_gen: u32,
}

/// The `--events` file. A write that fails stops the file (what was written is kept), records
/// why, and tracing goes on: the report says so and the run exits non-zero.
pub struct EventsFile {
    file: Option<PendingFile>,
    path: PathBuf,
    pub error: Option<String>,
}

impl EventsFile {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self {
            file: Some(PendingFile::create(path, "events")?),
            path: path.to_path_buf(),
            error: None,
        })
    }

    pub fn write(&mut self, event: &Event, mount_gen: u32) {
        self.line(&EventLine { event, mount_gen });
    }

    /// A record replay needs besides the events (see `replay`).
    pub fn record(&mut self, record: &crate::replay::Record) {
        self.line(record);
    }

    fn line(&mut self, value: &impl Serialize) {
        let Some(f) = self.file.as_mut() else { return };
        let w = f.writer();
        let r = serde_json::to_writer(&mut *w, value)
            .map_err(std::io::Error::from)
            .and_then(|()| w.write_all(b"\n"));
        if let Err(e) = r {
            self.stop(format!(
                "writing {} failed: {e}; events after that point are missing",
                self.path.display()
            ));
        }
    }

    fn stop(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        // Keep what was written, if it can still be put in place.
        if let Some(f) = self.file.take() {
            let _ = f.commit_partial();
        }
    }

    /// Puts the file in place; returns the error that stopped it early, if any.
    pub fn finish(mut self) -> Option<String> {
        if let Some(f) = self.file.take() {
            if let Err(e) = f.commit() {
                self.error.get_or_insert(format!("{e:#}"));
            }
        }
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_file_leaves_the_old_one_and_a_commit_replaces_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        fs::write(&target, "old").unwrap();
        drop(PendingFile::create(&target, "x").unwrap());
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );

        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_file(&link, "x", b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&link).unwrap(), "new");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&link).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn a_failing_events_file_stops_and_says_why() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        // /dev/full: every write fails with ENOSPC. The pending file lives in a temp dir; point
        // its writer at /dev/full to fail like a full disk.
        let dir = tempfile::tempdir().unwrap();
        let mut ev = EventsFile::create(&dir.path().join("e.ndjson")).unwrap();
        let f = ev.file.as_mut().unwrap();
        *f.writer() = BufWriter::with_capacity(0, File::options().write(true).open(full).unwrap());
        let e = Event::try_from(crate::events::raw::copy_up(1, "a", 1, 1, 1).as_slice()).unwrap();
        ev.write(&e, 0);
        ev.write(&e, 0);
        let err = ev.finish().expect("an error");
        assert!(err.contains("No space left"), "{err}");
    }
}

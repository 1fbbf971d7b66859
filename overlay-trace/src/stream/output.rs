//! Output files (`--json`, `--events`, pictures). Each is written to a temporary file beside its
//! target and renamed into place only when complete: a failed, refused or interrupted run leaves
//! the previous file as it was, and a symlink at the path is replaced, never followed. The
//! events file is the exception: it is put in place as soon as tracing starts, so that a run
//! that is killed keeps what it recorded.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;

use crate::stream::event::Event;

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

/// Lines are handed to the writer thread in batches of about this size.
const BATCH: usize = 64 << 10;
/// Batches waiting for the writer (at most 16 MiB): beyond, lines are dropped and counted.
const BATCHES_MAX: usize = 256;
/// How long the end of a run waits for the writer to finish the file.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The `--events` file. It is in place from the start (a run killed with SIGKILL leaves every
/// line written up to then; `report` replays it, ignoring a last line cut short), and written by
/// a thread of its own, so the drain never waits on the filesystem: the drain serializes lines
/// into a batch, hands full batches over (and the rest at least once a second, `flush`), and a
/// writer that falls behind (a slow or hung filesystem) loses lines, counted, instead of
/// stalling tracing. A write that fails stops the file (what was written is kept), records
/// why, and tracing goes on: the report says so and the run exits non-zero.
pub struct EventsFile {
    path: PathBuf,
    batch: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    /// Set by the writer when a write fails.
    failed: Arc<Mutex<Option<String>>>,
    done: Receiver<()>,
    /// Lines dropped because the writer fell behind.
    dropped: u64,
}

impl EventsFile {
    pub fn create(path: &Path) -> Result<Self> {
        let mut pending = PendingFile::create(path, "events")?;
        let file = pending
            .out
            .take()
            .expect("a new pending file has a writer")
            .into_inner()
            .map_err(|e| anyhow!("cannot write events to {}: {}", path.display(), e.error()))?;
        // In place at once, replacing (not following) whatever is at the path.
        fs::rename(&pending.tmp, path)
            .with_context(|| format!("cannot write events to {}", path.display()))?;
        Ok(Self::writing_to(path, file))
    }

    fn writing_to(path: &Path, mut file: File) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(BATCHES_MAX);
        let (done_tx, done) = sync_channel(1);
        let failed = Arc::new(Mutex::new(None));
        let why = failed.clone();
        let shown = path.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("events-file".into())
            .spawn(move || {
                for batch in rx {
                    if let Err(e) = file.write_all(&batch) {
                        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                            "writing {shown} failed: {e}; events after that point are missing"
                        ));
                        break;
                    }
                }
                let _ = done_tx.send(());
            });
        let mut f = Self {
            path: path.to_path_buf(),
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            failed,
            done,
            dropped: 0,
        };
        if let Err(e) = spawned {
            f.tx = None;
            f.set_error(format!("cannot start the events file's writer: {e}"));
        }
        f
    }

    pub fn write(&mut self, event: &Event, mount_gen: u32) {
        self.line(&EventLine { event, mount_gen });
    }

    /// A record replay needs besides the events (see `replay`).
    pub fn record(&mut self, record: &crate::stream::record::Record) {
        self.line(record);
    }

    fn line(&mut self, value: &impl Serialize) {
        if self.tx.is_none() {
            return;
        }
        // Writing to a Vec cannot fail; a value that cannot be serialized is not ours to get.
        if serde_json::to_writer(&mut self.batch, value).is_ok() {
            self.batch.push(b'\n');
        }
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// Hands what is batched to the writer (the drain loop calls it every second).
    pub fn flush(&mut self) {
        let Some(tx) = &self.tx else { return };
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => {
                self.dropped += b.iter().filter(|c| **c == b'\n').count() as u64;
            }
            // The writer stopped: its error says why.
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    fn set_error(&self, why: String) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
    }

    /// Writes what is left and closes the file; returns why it is incomplete, if it is.
    pub fn finish(mut self) -> Option<String> {
        self.flush();
        if self.tx.take().is_some() && self.done.recv_timeout(FINISH_WAIT).is_err() {
            self.set_error(format!(
                "{} did not take the last events within {} s (a filesystem that does not \
                 answer); it may lack them",
                self.path.display(),
                FINISH_WAIT.as_secs()
            ));
        }
        if self.dropped > 0 {
            self.set_error(format!(
                "{}: {} records dropped (the file's filesystem fell behind the events)",
                self.path.display(),
                self.dropped
            ));
        }
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
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
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let mut ev = EventsFile::writing_to(
            Path::new("e.ndjson"),
            File::options().write(true).open(full).unwrap(),
        );
        let e = Event::try_from(crate::stream::event::raw::copy_up(1, "a", 1, 1, 1).as_slice())
            .unwrap();
        ev.write(&e, 0);
        ev.flush();
        ev.write(&e, 0);
        let err = ev.finish().expect("an error");
        assert!(err.contains("No space left"), "{err}");
    }

    #[test]
    fn the_events_file_is_in_place_at_once_and_flushed_without_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut ev = EventsFile::create(&path).unwrap();
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let e = Event::try_from(crate::stream::event::raw::copy_up(1, "a", 1, 1, 1).as_slice())
            .unwrap();
        ev.write(&e, 0);
        ev.flush();
        // What a SIGKILL now would leave: the line, at the path, without `finish`.
        let t = std::time::Instant::now();
        while fs::read_to_string(&path).unwrap().lines().count() < 1 {
            assert!(t.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        std::mem::forget(ev);
    }
}

//! Output files (`--json`, `--events`, pictures). Each is written to a temporary file beside its
//! target and renamed into place only when complete: a failed, refused or interrupted run leaves
//! the previous file as it was, and a symlink at the path is replaced, never followed. A path
//! that is (or whose symlink leads to) anything but a regular file, such as `/dev/stdout`,
//! `/dev/null`, a FIFO or a directory, is refused: replacing it would break it for everyone. The
//! events file is the exception: it is put in place as soon as tracing starts, so that a run
//! that is killed keeps what it recorded.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;

use crate::stream::{background::Background, event::Event};

/// How long the end of a run waits for a file's writer thread to finish.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// Where a pending file's bytes go: straight to the file, or to a thread that writes it.
pub enum Sink {
    File(File),
    Thread(Background),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Thread(b) => b.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Thread(b) => b.flush(),
        }
    }
}

impl Sink {
    fn into_file(self) -> io::Result<File> {
        match self {
            Sink::File(f) => Ok(f),
            Sink::Thread(b) => b.finish(FINISH_WAIT),
        }
    }
}

/// A file being written; it replaces `path` on `commit` (or as soon as `place` is called), and
/// disappears if dropped before.
pub struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<Sink>>,
    placed: bool,
}

impl PendingFile {
    pub fn create(path: &Path, what: &str) -> Result<Self> {
        let (mut pending, file) = Self::open(path, what)?;
        pending.out = Some(BufWriter::new(Sink::File(file)));
        Ok(pending)
    }

    /// Written by a thread of its own (`Background`): writes never wait on the filesystem.
    pub fn create_background(path: &Path, what: &str) -> Result<Self> {
        let (mut pending, file) = Self::open(path, what)?;
        let b = match Background::spawn(file) {
            Ok(b) => b,
            Err(e) => {
                let _ = fs::remove_file(&pending.tmp);
                return Err(e)
                    .with_context(|| format!("cannot write {what} to {}", path.display()));
            }
        };
        pending.out = Some(BufWriter::with_capacity(64 << 10, Sink::Thread(b)));
        Ok(pending)
    }

    fn open(path: &Path, what: &str) -> Result<(Self, File)> {
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("cannot write {what} to {}: not a file name", path.display()))?;
        if let Some(m) = fs::metadata(path).ok().filter(|m| !m.file_type().is_file()) {
            return Err(anyhow!(
                "cannot write {what} to {}: it is {}, not a regular file (overlay-trace writes \
                 a new file and renames it into place, which would replace it)",
                path.display(),
                kind(&m.file_type())
            ));
        }
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
        let pending = Self {
            path: path.to_path_buf(),
            tmp,
            out: None,
            placed: false,
        };
        Ok((pending, file))
    }

    pub fn writer(&mut self) -> &mut BufWriter<Sink> {
        self.out
            .as_mut()
            .expect("a pending file has a writer until committed")
    }

    /// Puts the file in place now, written or not (replacing a symlink there, not its target).
    pub fn place(&mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.placed = true;
        Ok(())
    }

    /// Flushes and renames the file into place (replacing a symlink there, not its target).
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("committed once");
        let r = out
            .into_inner()
            .map_err(|e| anyhow!("cannot write {}: {}", self.path.display(), e.error()))
            .and_then(|sink| {
                sink.into_file()
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("cannot write {}", self.path.display()))
            })
            .and_then(|()| self.put_in_place());
        if r.is_err() && !self.placed {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }

    /// Puts in place whatever reached the file, after a write failed. Never waits on the
    /// file's filesystem (it may be why the write failed): a writer thread finishes on its own.
    pub fn commit_partial(mut self) -> Result<()> {
        drop(self.out.take());
        let r = self.put_in_place();
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r
    }

    fn put_in_place(&self) -> Result<()> {
        if self.placed {
            return Ok(());
        }
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.out.take().is_some() && !self.placed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// What a file that is not a regular one is, for the error that refuses it.
fn kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
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

/// The `--events` file. It is in place from the start (a run killed with SIGKILL leaves every
/// line handed over up to then; `report` replays it, ignoring a last line cut short), and written
/// by a thread of its own (`Background`): the drain serializes lines into a 64 KiB buffer and
/// hands it over when full and at least once a second (`flush`), never waiting on the
/// filesystem. A write that fails (a full disk) or a writer that falls behind (a filesystem
/// that does not keep up) stops the file: what was written is kept, the reason recorded, and
/// tracing goes on; the report says so and the run exits non-zero.
pub struct EventsFile {
    file: Option<PendingFile>,
    path: PathBuf,
    pub error: Option<String>,
}

impl EventsFile {
    /// The file, beside its path until `place` (a run that never starts tracing leaves the
    /// previous file as it was).
    pub fn create(path: &Path) -> Result<Self> {
        let file = PendingFile::create_background(path, "events")?;
        Ok(Self {
            file: Some(file),
            path: path.to_path_buf(),
            error: None,
        })
    }

    /// Puts the file at its path now: from here on a killed run keeps what it recorded.
    pub fn place(&mut self) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.place(),
            None => Ok(()),
        }
    }

    pub fn write(&mut self, event: &Event, mount_gen: u32) {
        self.line(&EventLine { event, mount_gen });
    }

    /// A record replay needs besides the events (see `replay`).
    pub fn record(&mut self, record: &crate::stream::record::Record) {
        self.line(record);
    }

    fn line(&mut self, value: &impl Serialize) {
        let Some(f) = self.file.as_mut() else { return };
        let w = f.writer();
        let r = serde_json::to_writer(&mut *w, value)
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"));
        if let Err(e) = r {
            self.stop(e);
        }
    }

    /// Hands what is buffered to the writer (the drain loop calls it every second).
    pub fn flush(&mut self) {
        if let Some(Err(e)) = self.file.as_mut().map(|f| f.writer().flush()) {
            self.stop(e);
        }
    }

    fn stop(&mut self, e: io::Error) {
        self.error.get_or_insert(format!(
            "writing {} failed: {e}; events after that point are missing",
            self.path.display()
        ));
        // Keep what was written.
        if let Some(f) = self.file.take() {
            let _ = f.commit_partial();
        }
    }

    /// Writes what is left and closes the file; returns why it is incomplete, if it is.
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
    fn devices_fifos_and_links_to_them_are_refused_untouched() {
        let dir = std::env::temp_dir().join(format!("ot-out-dev-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let link = dir.join("to-null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        for (path, why) in [
            (Path::new("/dev/null"), "a character device"),
            (&fifo, "a FIFO"),
            (&link, "a character device"),
            (&dir, "a directory"),
        ] {
            let e = format!("{:#}", write_file(path, "the report", b"x").unwrap_err());
            assert!(e.contains(why), "{e}");
        }
        use std::os::unix::fs::FileTypeExt as _;
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/dev/null"));
        assert!(
            fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_events_file_stops_and_says_why() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let b = Background::spawn(File::options().write(true).open(full).unwrap()).unwrap();
        let mut ev = EventsFile {
            file: Some(PendingFile {
                path: "e.ndjson".into(),
                tmp: "/nonexistent/e.tmp".into(),
                out: Some(BufWriter::new(Sink::Thread(b))),
                placed: true,
            }),
            path: "e.ndjson".into(),
            error: None,
        };
        let e = Event::try_from(crate::stream::event::raw::copy_up(1, "a", 1, 1, 1).as_slice())
            .unwrap();
        ev.write(&e, 0);
        ev.flush();
        std::thread::sleep(Duration::from_millis(100));
        ev.write(&e, 0);
        ev.flush();
        let err = ev.finish().expect("an error");
        assert!(err.contains("No space left"), "{err}");
    }

    #[test]
    fn the_events_file_is_in_place_once_tracing_begins_and_flushed_without_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut ev = EventsFile::create(&path).unwrap();
        let is_link = |p: &Path| fs::symlink_metadata(p).unwrap().file_type().is_symlink();
        assert!(
            is_link(&path),
            "the previous file stays until tracing begins"
        );
        ev.place().unwrap();
        assert!(!is_link(&path));
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

//! A file written by a thread of its own, so that whoever writes it (the drain loop) never waits
//! on its filesystem: `write` hands the bytes over and returns. A writer that falls behind (a
//! slow or hung filesystem: at most `QUEUED_MAX` buffers wait) or fails (a full disk) makes
//! `write` fail with why: the output is then incomplete and says so, tracing goes on.

use std::{
    fs::File,
    io::{self, Write},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

/// Buffers waiting for the writer (each up to a `BufWriter`'s capacity, 64 KiB: 16 MiB).
const QUEUED_MAX: usize = 256;

pub struct Background {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Why the writer stopped, once it has.
    failed: Arc<Mutex<Option<String>>>,
    done: Receiver<File>,
}

impl Background {
    pub fn spawn(mut file: File) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUED_MAX);
        let (done_tx, done) = sync_channel(1);
        let failed = Arc::new(Mutex::new(None));
        let why = failed.clone();
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                for buf in rx {
                    if let Err(e) = file.write_all(&buf) {
                        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        return;
                    }
                }
                let _ = done_tx.send(file);
            })?;
        Ok(Self {
            tx: Some(tx),
            failed,
            done,
        })
    }

    fn why(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (at most `wait`) for everything handed over to be written; the file, or why not.
    pub fn finish(mut self, wait: Duration) -> io::Result<File> {
        drop(self.tx.take());
        match self.done.recv_timeout(wait) {
            Ok(f) => Ok(f),
            Err(_) => Err(io::Error::other(self.why().unwrap_or_else(|| {
                format!(
                    "the last writes did not finish within {} s (a filesystem that does not answer)",
                    wait.as_secs()
                )
            }))),
        }
    }
}

impl Write for Background {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tx) = &self.tx else {
            return Err(io::Error::other("already finished"));
        };
        match tx.try_send(buf.to_vec()) {
            Ok(()) => Ok(buf.len()),
            Err(TrySendError::Full(_)) => Err(io::Error::other(
                "its filesystem fell behind (more than 16 MiB waiting)",
            )),
            Err(TrySendError::Disconnected(_)) => Err(io::Error::other(
                self.why().unwrap_or_else(|| "the writer stopped".into()),
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

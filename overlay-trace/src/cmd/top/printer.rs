//! `top` with stdout not a terminal: the blocks of `views::top::lines`, written by a thread of
//! its own so that a reader that stops reading never blocks the drain. Blocks that find the
//! queue full are not printed, and the next block says how many (each block holds the totals).

use std::{
    io::Write as _,
    sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// Blocks waiting to be written.
const QUEUE: usize = 8;
/// How long the last block may wait for a slow reader before it is given up.
const LAST_WAIT: Duration = Duration::from_secs(10);

pub struct Printer {
    queue: SyncSender<String>,
    skipped: u64,
    /// The reader went away (a closed pipe): `top` ends, as a filter does.
    gone: tokio::sync::mpsc::UnboundedReceiver<()>,
    done: Receiver<()>,
}

impl Printer {
    pub fn start() -> Result<Self> {
        let (queue, blocks) = mpsc::sync_channel::<String>(QUEUE);
        let (gone_tx, gone) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("top-printer".into())
            .spawn(move || {
                let mut out = std::io::stdout().lock();
                for b in blocks {
                    if out
                        .write_all(b.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        let _ = gone_tx.send(());
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .context("starting the printer's thread")?;
        Ok(Self {
            queue,
            skipped: 0,
            gone,
            done,
        })
    }

    /// Queues a block, or counts it as skipped when the reader is behind.
    pub fn print(&mut self, block: String) {
        let block = self.with_note(block);
        match self.queue.try_send(block) {
            Ok(()) => self.skipped = 0,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.skipped += 1,
        }
    }

    fn with_note(&self, block: String) -> String {
        if self.skipped > 0 {
            crate::views::top::lines::skipped(self.skipped) + &block
        } else {
            block
        }
    }

    /// Resolves when the reader went away. Cancel-safe.
    pub async fn gone(&mut self) {
        if self.gone.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// The last block, then everything written (bounded: a reader that never reads again
    /// loses the last block, and stderr says so).
    pub fn finish(self, last: String) {
        let deadline = Instant::now() + LAST_WAIT;
        let mut block = self.with_note(last);
        loop {
            match self.queue.try_send(block) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(b)) if Instant::now() < deadline => {
                    block = b;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TrySendError::Full(_)) => {
                    eprintln!(
                        "overlay-trace: the last totals were not printed: stdout was not read for 10 s"
                    );
                    return;
                }
            }
        }
        drop(self.queue);
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(RecvTimeoutError::Timeout) = self.done.recv_timeout(left) {
            eprintln!(
                "overlay-trace: the last totals were not all written: stdout was not read for 10 s"
            );
        }
    }
}

//! Work that may block in the kernel (opening a path that lies on a FUSE filesystem whose daemon
//! never answers, or on a hard-mounted NFS server that is down), run with a time budget.
//!
//! A job runs on a worker thread; the caller waits at most the budget for its answer. A job that
//! overruns is *abandoned*: its thread is left to finish (or to stay blocked for good: a thread
//! stuck in the kernel cannot be cancelled) and a fresh worker takes the next job. At most
//! `STUCK_MAX` abandoned jobs of one `Budgeted` may be unfinished at once (each enrichment thread
//! has its own, so paths that hang cannot stop runtime lookups); beyond, no job is started (it is
//! *skipped*) until one of them returns. Both are counted (`EnrichCounts`) and shown in the
//! report and on /metrics. Nothing that waits here is on the drain's thread.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender, channel, sync_channel},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Abandoned jobs still running at once; beyond, jobs are skipped.
pub const STUCK_MAX: u64 = 8;

/// How enrichment (naming and source-layer lookups) fell short, for the report and /metrics.
#[derive(Debug, Default)]
pub struct EnrichCounts {
    /// Jobs abandoned after their budget (a path that did not answer).
    pub abandoned: AtomicU64,
    /// Jobs not started: their mount already had one abandoned, too many were stuck at once,
    /// or the queue was full.
    pub skipped: AtomicU64,
}

/// A copy of `EnrichCounts` as reports and records carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichTally {
    pub abandoned: u64,
    pub skipped: u64,
}

impl EnrichCounts {
    pub fn tally(&self) -> EnrichTally {
        EnrichTally {
            abandoned: self.abandoned.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    pub fn skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A job's fate, decided once: finished by the worker, or abandoned by the caller.
const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// What became of a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(T),
    /// It overran its budget: left running, counted.
    Abandoned,
    /// Not started (too many abandoned ones unfinished, or no worker): counted.
    Skipped,
}

impl<T> Outcome<T> {
    pub fn done(self) -> Option<T> {
        match self {
            Outcome::Done(v) => Some(v),
            _ => None,
        }
    }
}

/// Runs jobs on a worker thread with a time budget each (see the module's comment).
pub struct Budgeted {
    worker: Option<Sender<Job>>,
    name: &'static str,
    counts: Arc<EnrichCounts>,
    /// This one's abandoned jobs that have not returned yet.
    stuck_now: Arc<AtomicU64>,
}

impl Budgeted {
    pub fn new(name: &'static str, counts: Arc<EnrichCounts>) -> Self {
        Self {
            worker: None,
            name,
            counts,
            stuck_now: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `f`'s answer if it came within `budget`; None if it was abandoned or skipped (counted).
    pub fn run<T: Send + 'static>(
        &mut self,
        budget: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        self.attempt(budget, f).done()
    }

    /// `run`, saying what became of the job.
    pub fn attempt<T: Send + 'static>(
        &mut self,
        budget: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Outcome<T> {
        if self.stuck_now.load(Ordering::Acquire) >= STUCK_MAX {
            self.counts.skip();
            return Outcome::Skipped;
        }
        let (tx, rx) = sync_channel(1);
        let state = Arc::new(AtomicU8::new(RUNNING));
        let job_state = state.clone();
        let stuck_now = self.stuck_now.clone();
        let job: Job = Box::new(move || {
            let v = f();
            if job_state
                .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Abandoned by the caller meanwhile (who counted it first): no longer stuck.
                stuck_now.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = tx.send(v);
        });
        let worker = match self.worker.take() {
            Some(w) => w,
            None => match spawn_worker(self.name) {
                Some(w) => w,
                None => {
                    self.counts.skip();
                    return Outcome::Skipped;
                }
            },
        };
        if worker.send(job).is_err() {
            self.counts.skip();
            return Outcome::Skipped;
        }
        match rx.recv_timeout(budget) {
            Ok(v) => {
                self.worker = Some(worker);
                Outcome::Done(v)
            }
            // The job panicked: its worker is gone, nothing is stuck.
            Err(RecvTimeoutError::Disconnected) => {
                self.counts.skip();
                Outcome::Skipped
            }
            Err(RecvTimeoutError::Timeout) => {
                // Counted before the job can see it abandoned, so the count never goes below 0.
                self.stuck_now.fetch_add(1, Ordering::AcqRel);
                if state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // The worker is left with its job; dropping its sender ends it once the job
                    // returns, if ever. The next job gets a new worker.
                    self.counts.abandoned.fetch_add(1, Ordering::Relaxed);
                    Outcome::Abandoned
                } else {
                    // It finished just as the budget ran out: take its answer.
                    self.stuck_now.fetch_sub(1, Ordering::AcqRel);
                    self.worker = Some(worker);
                    rx.recv().map_or(Outcome::Skipped, Outcome::Done)
                }
            }
        }
    }
}

fn spawn_worker(name: &str) -> Option<Sender<Job>> {
    let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
    std::thread::Builder::new()
        .name(format!("{name}-io"))
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_job_over_budget_is_abandoned_and_the_next_one_runs_at_once() {
        let counts = Arc::new(EnrichCounts::default());
        let mut b = Budgeted::new("test", counts.clone());
        assert_eq!(b.run(Duration::from_secs(5), || 7), Some(7));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let t = Instant::now();
        assert_eq!(
            b.run(Duration::from_millis(50), move || release_rx.recv().ok()),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(counts.tally().abandoned, 1);
        assert_eq!(b.stuck_now.load(Ordering::Relaxed), 1);
        // A fresh worker answers while the stuck one still waits.
        assert_eq!(b.run(Duration::from_secs(5), || 8), Some(8));
        release_tx.send(()).unwrap();
        let t = Instant::now();
        while b.stuck_now.load(Ordering::Relaxed) != 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "never returned");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn too_many_stuck_jobs_skip_the_rest() {
        let counts = Arc::new(EnrichCounts::default());
        let mut b = Budgeted::new("test", counts.clone());
        let (_hold, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for _ in 0..STUCK_MAX {
            let rx = rx.clone();
            // Each blocks on the shared receiver (the first holds the lock, the rest wait on it).
            assert_eq!(
                b.run(Duration::from_millis(10), move || rx
                    .lock()
                    .unwrap()
                    .recv()
                    .ok()),
                None
            );
        }
        assert_eq!(b.attempt(Duration::from_secs(5), || 1), Outcome::Skipped);
        let t = counts.tally();
        assert_eq!((t.abandoned, t.skipped), (STUCK_MAX, 1));
        // Another thread's budget is its own.
        let mut other = Budgeted::new("other", counts.clone());
        assert_eq!(other.run(Duration::from_secs(5), || 2), Some(2));
        // A job that panics is skipped, not stuck.
        assert_eq!(
            other.attempt(Duration::from_secs(5), || -> u8 { panic!("job") }),
            Outcome::Skipped
        );
        assert_eq!(other.stuck_now.load(Ordering::Relaxed), 0);
        assert_eq!(other.run(Duration::from_secs(5), || 3), Some(3));
    }
}

//! The container finder: asks the runtimes which container a found mount belongs to (API calls,
//! metadata on disk: seconds at worst, each bounded), names its layers, and makes the final
//! pass of a run.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::mpsc::{Receiver, UnboundedSender},
    time::Instant,
};

use super::{CLAIM_RETRIES, CLAIM_RETRY_FIRST, Found, NAME_BUDGET, UNCLAIMED_MAX};
use crate::{
    enrich::{
        answer::Named,
        budget::Budgeted,
        containers::{IO_BUDGET, Resolver},
        source_layers::{LayerAsk, LayerAsks},
    },
    stream::{names::OverlayMount, record::MountKey},
};

/// Asks the runtimes which container a found mount belongs to.
pub(super) struct ContainerFinder {
    resolver: Resolver,
    out: UnboundedSender<Named>,
    layers: LayerAsks,
    io: Budgeted,
    to_resolve: VecDeque<(MountKey, OverlayMount)>,
    /// Mounts no runtime claimed yet, to be asked again: (due, tries so far, key, mount).
    retries: Vec<(Instant, u32, MountKey, OverlayMount)>,
    /// Mounts no runtime claimed after the retries: asked again only in the final pass.
    unclaimed: BTreeMap<MountKey, OverlayMount>,
    warned: HashSet<String>,
}

impl ContainerFinder {
    pub(super) fn new(
        resolver: Resolver,
        out: UnboundedSender<Named>,
        layers: LayerAsks,
        io: Budgeted,
    ) -> Self {
        Self {
            resolver,
            out,
            layers,
            io,
            to_resolve: VecDeque::new(),
            retries: Vec::new(),
            unclaimed: BTreeMap::new(),
            warned: HashSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut found: Receiver<Found>) {
        loop {
            let next_retry = self.retries.iter().map(|r| r.0).min();
            tokio::select! {
                biased;
                f = found.recv() => match f {
                    Some(Found::Mount(key, m)) => self.queue(key, m),
                    Some(Found::Finish(deadline)) => {
                        self.finish(deadline).await;
                        return;
                    }
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)).await }, if next_retry.is_some() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut self.retries).into_iter().partition(|r| r.0 <= now);
                    self.retries = later;
                    for (_, tries, key, m) in due {
                        self.resolve(key, m, NAME_BUDGET, tries).await;
                    }
                }
                _ = std::future::ready(()), if !self.to_resolve.is_empty() => {
                    if let Some((key, m)) = self.to_resolve.pop_front() {
                        self.resolve(key, m, NAME_BUDGET, 0).await;
                    }
                }
            }
        }
    }

    fn send(&self, n: Named) {
        let _ = self.out.send(n);
    }

    /// Queues a found mount. Bounded when a runtime hangs (each lookup may take NAME_BUDGET):
    /// the oldest waits for the final pass.
    fn queue(&mut self, key: MountKey, m: OverlayMount) {
        if self.to_resolve.len() >= UNCLAIMED_MAX {
            if let Some((k, old)) = self.to_resolve.pop_front() {
                self.send(Named::Unclaimed { key: k });
                self.keep_unclaimed(k, old);
            }
        }
        self.to_resolve.push_back((key, m));
    }

    /// Bounded for a tracer that runs for weeks: the oldest are not asked again.
    fn keep_unclaimed(&mut self, key: MountKey, m: OverlayMount) {
        if self.unclaimed.len() >= UNCLAIMED_MAX {
            self.unclaimed.pop_first();
        }
        self.unclaimed.insert(key, m);
    }

    /// Asks the runtimes for the mount's container; `tries` earlier asks found none.
    async fn resolve(&mut self, key: MountKey, m: OverlayMount, budget: Duration, tries: u32) {
        if !crate::enrich::containers::may_be_a_runtimes(&m) {
            // A tenant's (see there): nothing to ask, now or later.
            self.send(Named::Unclaimed { key });
            return;
        }
        match tokio::time::timeout(budget, self.resolver.resolve(&m, &mut self.io)).await {
            Ok(Some(c)) => {
                // A runtime's layer metadata holds host paths: not for a mount of another mount
                // namespace, whose lowerdirs mean something else there (and stay resolved in it).
                let layers = if m.ns_pid.is_some() {
                    Vec::new()
                } else {
                    self.resolver
                        .layers_job(&m, &c)
                        .and_then(|job| self.io.run(IO_BUDGET, job))
                        .unwrap_or_default()
                };
                self.send(Named::Container { key, container: c });
                if !layers.is_empty() {
                    // The runtime's view of the lowerdirs, from `/`.
                    if let Ok(root) = crate::base::safe_fs::open_dir(std::path::Path::new("/")) {
                        self.layers.tell(LayerAsk::Lowerdirs {
                            key,
                            root: Arc::new(root),
                            dirs: layers.iter().map(|l| l.lowerdir.clone()).collect(),
                        });
                    }
                    self.send(Named::Layers { key, layers });
                }
            }
            _ if tries < CLAIM_RETRIES && self.retries.len() < UNCLAIMED_MAX => {
                let due = Instant::now() + CLAIM_RETRY_FIRST * 2u32.pow(tries);
                self.retries.push((due, tries + 1, key, m));
            }
            _ => {
                self.send(Named::Unclaimed { key });
                self.keep_unclaimed(key, m);
            }
        }
        if let Some(w) = self.resolver.docker_warning().map(str::to_string) {
            if self.warned.insert(w.clone()) {
                self.send(Named::Warning(w));
            }
        }
    }

    /// The last pass: mounts found but not yet looked up, and containers still to find (a
    /// runtime may have been slow while the container started), all before `deadline`. The
    /// mount finder's last finds come before `Finish` on the same channel.
    async fn finish(&mut self, deadline: Instant) {
        self.resolver.final_pass();
        let mut work: Vec<(MountKey, OverlayMount)> = self.to_resolve.drain(..).collect();
        work.extend(self.retries.drain(..).map(|(_, _, key, m)| (key, m)));
        work.extend(std::mem::take(&mut self.unclaimed));
        for (key, m) in work {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.resolve(key, m, left.min(NAME_BUDGET), CLAIM_RETRIES)
                .await;
        }
        // The source-layer thread says `Done` once it has answered what was asked before.
        self.layers.tell(LayerAsk::Finish);
    }
}

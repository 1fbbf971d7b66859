//! A tracing session: the stages a command assembles (the kernel side, the fold, naming and
//! enrichment beside it, the output files), and the steps every command takes with them:
//! `start`, `step` (one wake-up of the drain loop), `finish`. `run`, `serve` and `bench` each
//! drive one in a loop of their own; nothing here decides when tracing ends.
//!
//! On the drain's thread records are only decoded and folded: everything that may wait on a
//! filesystem or a runtime is asked of the enrichment threads, and their answers come back here
//! as records.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

mod feed;

use anyhow::{Context as _, Result};
use overlay_trace_common::{STAT_DROPPED_COPY_UP, STAT_DROPPED_LOOKUP, STAT_DROPPED_MOUNT};
use tokio::time::Interval;

use feed::{answer, hand_over, take};

use super::signals::Signals;

use crate::{
    cli::TraceArgs,
    enrich::{
        answer::Named,
        budget::{Budgeted, EnrichCounts},
        containers::Resolver,
        mountinfo::read_overlay_mounts,
        naming::{Naming, Request},
        source_layers::LayerAsk,
    },
    kernel::{
        btf_offsets::KernelBtf,
        preflight,
        session::{self as kernel_side, KernelSide},
    },
    model::{
        aggregate::Aggregate,
        fold::{Collector, lock},
        series::Shared,
    },
    stream::{
        event::Dev,
        output::{EventsFile, PendingFile},
        record::{EventCounts, Record, SCHEMA_VERSION},
    },
    views::{chrome_trace::TraceFile, json, report::Report},
};

/// How often the ring buffer is drained when the kernel did not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What a command asks of its session.
#[derive(Default)]
pub struct Options<'a> {
    /// `--pid`, `--container` (traced exclusively, by superblock), `--maxactive`, `--probes`.
    pub tracing: TraceArgs,
    /// Superblocks traced exclusively besides (bench's private overlay).
    pub only: &'a [Dev],
    pub json: Option<&'a Path>,
    pub events: Option<&'a Path>,
    pub trace: Option<&'a Path>,
    /// `serve`'s numbers: fed by the same fold, their health kept current.
    pub metrics: Option<Shared>,
    /// Keep the warnings that come while tracing (`take_warnings`) instead of printing them:
    /// `top`'s screen owns the terminal.
    pub hold_warnings: bool,
}

pub struct Session {
    kernel: KernelSide,
    pub fold: Collector,
    naming: Naming,
    trace: Option<TraceFile>,
    json_out: Option<PendingFile>,
    pub kernel_version: String,
    pub started: Instant,
    drain_tick: Interval,
    tick: Interval,
    /// With `hold_warnings`: the newest warnings, and how many there were in all.
    held: Option<super::warnings::Held>,
}

impl Session {
    /// Preflight, outputs, the containers to trace, the kernel side loaded and attached, naming
    /// started. Bad input and a machine that cannot trace are refused before anything is made.
    pub async fn start(o: Options<'_>) -> Result<Self> {
        crate::enrich::containers::docker::socket_path()?;
        let mut caps = preflight::inspect();
        preflight::ensure_overlay_loaded(&mut caps);
        preflight::require_for_run(&caps)?;

        // Outputs exist only once preflight passed.
        let json_out = o
            .json
            .map(|p| PendingFile::create(p, "the JSON report"))
            .transpose()?;
        let mut events = o.events.map(EventsFile::create).transpose()?;
        if let Some(e) = events.as_mut() {
            e.record(&Record::Header {
                schema_version: SCHEMA_VERSION,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                kernel: caps.kernel.clone(),
            });
        }
        let trace = o.trace.map(TraceFile::create).transpose()?;

        let mut resolver = Resolver::new()?;
        let mounts_now = read_overlay_mounts()?;
        let enrich_counts = Arc::new(EnrichCounts::default());
        let mut only = super::select::select_containers(
            &o.tracing.containers,
            &mounts_now,
            &mut resolver,
            &mut Budgeted::new("select", enrich_counts.clone()),
        )
        .await?;
        only.extend(o.only.iter().map(|d| (*d, None)));

        let verbose = verbose();
        let btf = KernelBtf::load()?;
        let mut config = btf.config(o.tracing.pid.unwrap_or(0))?;
        config.data_len_arg = crate::kernel::probes::PROBES
            .iter()
            .find(|p| p.entry == "copy_up_data_entry")
            .and_then(|p| crate::kernel::probes::target_for(p, &caps.symbols))
            .and_then(|f| btf.param_position(f, "len"))
            .unwrap_or(0);
        config.filter_devs = u32::from(!only.is_empty());
        config.verbose = u32::from(verbose);
        config.copy_up_end_probed = u32::from(caps.symbols.contains("ovl_copy_up_end"));
        config.syscall_nr_from_stack = btf.syscall_nr_from_stack(&caps.symbols);
        let facts = crate::kernel::probes::BtfFacts::of(&btf);
        // The parsed BTF (about 40 MiB) goes before aya parses it again to load the programs,
        // so the two never add up.
        drop(btf);
        kernel_side::release_freed_memory();
        let devs: Vec<Dev> = only.iter().map(|(d, _)| *d).collect();
        let uppers = super::select::upper_dirs(&only, &mounts_now);
        let kernel = KernelSide::start(
            config,
            &caps.symbols,
            &devs,
            &uppers,
            o.tracing.maxactive,
            &facts,
            o.tracing.probes,
            trace.is_some(),
        )?;
        // aya's own parse of the BTF is gone too: give that memory back.
        kernel_side::release_freed_memory();
        for w in &kernel.warnings {
            eprintln!("warning: {w}");
        }
        if !uppers.is_empty() {
            super::select::warn_if_not_followed(config.follow_uppers != 0, &kernel.probes());
        }
        if let Some(m) = &o.metrics {
            let mut m = lock(m);
            m.health.probes = kernel
                .probes()
                .into_iter()
                .map(|p| (p.function, p.kind))
                .collect();
            m.health.attached = true;
        }
        let mut fold = Collector {
            events,
            metrics: o.metrics,
            ..Default::default()
        };
        // Containers chosen with --container are known already.
        let mut known = Vec::new();
        for (dev, c) in only {
            if let Some(c) = c {
                let key = fold.agg.current(dev);
                let mount = mounts_now.get(&dev).cloned();
                known.extend(mount.clone().map(|m| (key, m)));
                fold.record(Record::Known {
                    dev,
                    mount_gen: key.generation,
                    mount,
                    container: c,
                });
            }
        }
        let naming = Naming::start(resolver, kernel.mount_clock.clone(), enrich_counts);
        // Their copy-ups' source layers: the naming side never hears of these mounts.
        for (key, m) in known {
            if m.lowerdirs.iter().all(|d| d.starts_with('/')) {
                if let Ok(root) = crate::base::safe_fs::open_dir(Path::new("/")) {
                    naming.layers.tell(LayerAsk::Lowerdirs {
                        key,
                        root: Arc::new(root),
                        dirs: m.lowerdirs,
                    });
                }
            }
        }
        // Tracing has begun: the events file takes its place.
        if let Some(e) = fold.events.as_mut() {
            e.place()?;
        }
        Ok(Self {
            kernel,
            fold,
            naming,
            trace,
            json_out,
            kernel_version: caps.kernel,
            started: Instant::now(),
            drain_tick: tokio::time::interval(DRAIN_EVERY),
            tick: tokio::time::interval(Duration::from_secs(1)),
            held: o.hold_warnings.then(Default::default),
        })
    }

    /// `start`, unless an ending signal comes before it is done or while it starts: then
    /// nothing is left attached and the signal's number comes back instead.
    pub async fn start_unless_signalled(
        o: Options<'_>,
        signals: &mut Signals,
    ) -> Result<Result<Self, i32>> {
        let start = Self::start(o);
        let session = tokio::select! {
            biased;
            sig = signals.recv() => return Ok(Err(sig)),
            s = start => s?,
        };
        if let Some(sig) = signals.pending().await {
            session.abort();
            return Ok(Err(sig));
        }
        Ok(Ok(session))
    }

    /// Ends the session without a report: probes detached (entries first), the programs
    /// unloaded, outputs removed (the previous files stay as they were). For a command told to
    /// stop before tracing began.
    pub fn abort(self) {
        drop(self);
    }

    /// One wake-up of the drain loop: records waiting in the ring buffer (the kernel woke us, or
    /// 100 ms passed), an answer of the naming side, or the 1 s tick. Cancel-safe: a command
    /// selects it against its own ends (signals, a deadline, its child).
    pub async fn step(&mut self) -> Result<()> {
        tokio::select! {
            r = self.kernel.readable() => {
                r?;
                self.drain();
            }
            _ = self.drain_tick.tick() => {
                self.drain();
                self.kernel.flush_logs();
            }
            Some(n) = self.naming.answers.recv() => {
                if let Some(w) = answer(&mut self.fold, &mut self.trace, n) {
                    match self.held.as_mut() {
                        Some(held) => held.push(w),
                        None => eprintln!("warning: {w}"),
                    }
                }
                hand_over(&mut self.fold, &self.naming);
            }
            _ = self.tick.tick() => self.second(),
        }
        Ok(())
    }

    fn drain(&mut self) {
        let (fold, naming, trace) = (&mut self.fold, &self.naming, &mut self.trace);
        self.kernel.drain(|r| take(fold, naming, trace, r));
    }

    /// Once a second: the events file handed what it holds (a run killed from now on keeps
    /// what was recorded up to this second), and serve's health brought up to date.
    fn second(&mut self) {
        if let Some(e) = self.fold.events.as_mut() {
            e.flush();
        }
        if let Some(m) = &self.fold.metrics {
            let mut m = lock(m);
            m.tick(Instant::now());
            m.health.counts = self.kernel.counts();
            m.health.decode_errors = self.fold.decode_errors;
            m.health.enrich = self.naming.counts.tally();
            m.health.last_tick = Some(Instant::now());
        }
    }

    /// The warnings held so far (`Options::hold_warnings`), the newest last, and how many there
    /// were in all; they are no longer held after.
    pub fn take_warnings(&mut self) -> (Vec<String>, u64) {
        self.held.as_mut().map(|h| h.take()).unwrap_or_default()
    }

    /// The newest warning held, if any.
    pub fn last_warning(&self) -> Option<&str> {
        self.held.as_ref()?.last()
    }

    /// What the kernel side, the decoder and naming lost so far, as the report counts it.
    pub fn counts(&self) -> EventCounts {
        let mut c = self.kernel.counts();
        c.decode_errors = self.fold.decode_errors;
        let enriched = self.naming.counts.tally();
        c.enrich_abandoned = enriched.abandoned;
        c.enrich_skipped = enriched.skipped;
        c
    }

    /// The live status line: what was seen and what was lost so far.
    pub fn status_line(&self) -> String {
        let s = self.kernel.stats();
        let dropped = s[STAT_DROPPED_COPY_UP as usize]
            + s[STAT_DROPPED_LOOKUP as usize]
            + s[STAT_DROPPED_MOUNT as usize];
        format!(
            "\r[overlay-trace] {:>5.0}s  copy-ups {}  lookups {}  dropped {}  missed returns {}   ",
            self.started.elapsed().as_secs_f64(),
            self.fold.agg.copy_up_events,
            self.fold.agg.lookup_events,
            dropped,
            kernel_side::missed_returns(&s),
        )
    }

    /// Detaches every probe, takes what is still in the ring buffer and the calls left in
    /// flight, gives naming `naming_budget` for a last pass (a hung runtime delays the report by
    /// that much at most), and writes the outputs. The report, and the time traced.
    pub async fn finish(self, naming_budget: Duration) -> Result<Report> {
        Ok(self.finish_and_model(naming_budget).await?.0)
    }

    /// `finish`, and the model the report was built from (`top` looks at it once more).
    pub async fn finish_and_model(self, naming_budget: Duration) -> Result<(Report, Aggregate)> {
        let Session {
            kernel,
            mut fold,
            mut naming,
            mut trace,
            json_out,
            kernel_version,
            started,
            ..
        } = self;
        let traced = started.elapsed().as_secs_f64();
        let ended = Instant::now();
        // Our mountinfo while the probes still record mounts: the last naming pass names mounts
        // from it (see `MountClock`).
        let mounts_at_detach = read_overlay_mounts().unwrap_or_default();
        let stopped = kernel.stop(|r| take(&mut fold, &naming, &mut trace, r));
        let detached = ended.elapsed();
        if let Some(m) = &fold.metrics {
            let mut m = lock(m);
            m.health.attached = false;
            m.health.counts = stopped.counts.clone();
        }
        let _ = naming.requests.send(Request::Finish {
            deadline: tokio::time::Instant::now() + naming_budget,
            mounts: mounts_at_detach,
        });
        let give_up = tokio::time::Instant::now() + naming_budget + Duration::from_millis(400);
        loop {
            match tokio::time::timeout_at(give_up, naming.answers.recv()).await {
                Ok(Some(Named::Done)) | Ok(None) | Err(_) => break,
                Ok(Some(n)) => {
                    if let Some(w) = answer(&mut fold, &mut trace, n) {
                        eprintln!("warning: {w}");
                    }
                }
            }
        }
        if verbose() {
            eprintln!(
                "overlay-trace: detaching took {} ms, the last naming pass {} ms",
                detached.as_millis(),
                (ended.elapsed() - detached).as_millis()
            );
        }
        let mut counts = stopped.counts;
        counts.decode_errors = fold.decode_errors;
        let enriched = naming.counts.tally();
        counts.enrich_abandoned = enriched.abandoned;
        counts.enrich_skipped = enriched.skipped;
        let mut report = Report::build(&fold.agg, kernel_version, traced, counts);
        report.probes = stopped.probes;
        if let Some(e) = fold.events.as_mut() {
            e.record(&Record::End {
                traced_seconds: report.traced_seconds,
                events: report.events.clone(),
                probes: report.probes.clone(),
            });
        }
        report.events_file_error = fold.events.take().and_then(EventsFile::finish);
        report.trace_file_error = trace.take().and_then(TraceFile::finish);
        if let Some(mut out) = json_out {
            use std::io::Write as _;
            out.writer()
                .write_all(json::to_string(&report).as_bytes())
                .context("writing the JSON report")?;
            out.commit()?;
        }
        Ok((report, fold.agg))
    }
}

fn verbose() -> bool {
    std::env::var_os("OVERLAY_TRACE_VERBOSE").is_some_and(|v| v != "0" && !v.is_empty())
}

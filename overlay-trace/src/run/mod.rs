//! `overlay-trace run`: preflight, load, attach, drain the ring buffer into the aggregate until
//! told to stop, detach, drain what is left, report. Data flows one way: probe -> decode ->
//! aggregate -> report.
//!
//! Homes: `kernel_side` (the loaded programs, their maps and probes), `collector` (records ->
//! numbers), `naming` (mounts -> names, on a thread of its own), `child` (the traced command),
//! `outputs` (files written whole or not at all). This module is the loop that ties them.

pub mod child;
pub mod collector;
pub mod kernel_side;
pub mod naming;
pub mod outputs;
pub mod timeline;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use overlay_trace_common::{STAT_DROPPED_COPY_UP, STAT_DROPPED_LOOKUP, STAT_DROPPED_MOUNT};
use tokio::signal::unix::SignalKind;

use std::sync::Arc;

use crate::{
    btf_offsets::KernelBtf,
    cli::RunArgs,
    containers::{Container, Resolver},
    enrich::budget::{Budgeted, EnrichCounts},
    events::Dev,
    mounts::{OverlayMount, read_overlay_mounts},
    preflight,
    report::{Report, json, text},
};
use child::TracedCommand;
use collector::Collector;
use kernel_side::KernelSide;
use naming::{Named, Naming, Request};
use outputs::{EventsFile, PendingFile};
use timeline::TraceFile;

use crate::serve::metrics::Shared;

/// How often the ring buffer is drained when the kernel did not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// The final naming pass gets this long; the report follows at most this late.
const NAMING_FINISH: Duration = Duration::from_millis(3000);

/// Why tracing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGINT or SIGTERM (the signal number).
    Signal(i32),
    /// `--duration` elapsed.
    Duration,
    /// The traced command exited by itself, with this shell-style code.
    CommandExited(i32),
}

/// What `trace` produced.
pub struct Traced {
    pub report: Report,
    pub ending: Ending,
}

/// The exit status of `run`: 0 when the tracer was stopped by its user (Ctrl-C, SIGTERM,
/// `--duration`); with a command, the command's own status when it ended by itself, 130/143 when
/// the tracer was interrupted by SIGINT/SIGTERM (as shells report it), 124 when `--duration`
/// ended it (as `timeout(1)` does). An incomplete `--events` or `--trace` file turns a 0 into 1.
pub fn exit_code(ending: Ending, had_command: bool, events_failed: bool) -> i32 {
    let code = match (ending, had_command) {
        (Ending::CommandExited(c), _) => c,
        (Ending::Signal(sig), true) => 128 + sig,
        (Ending::Duration, true) => 124,
        (_, false) => 0,
    };
    if code == 0 && events_failed { 1 } else { code }
}

pub async fn run(args: RunArgs) -> Result<i32> {
    let traced = trace(&args, &[], None).await?;
    print!("{}", text::render(&traced.report));
    Ok(exit_code(
        traced.ending,
        !args.command.is_empty(),
        traced.report.events_file_error.is_some() || traced.report.trace_file_error.is_some(),
    ))
}

/// Resolves `--container` arguments to the superblocks of running containers. An argument that
/// matches none is an error listing what is running.
async fn select_containers(
    wanted: &[String],
    mounts: &BTreeMap<Dev, OverlayMount>,
    resolver: &mut Resolver,
    io: &mut Budgeted,
) -> Result<Vec<(Dev, Option<Container>)>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let running = resolver.running(mounts, io).await;
    let mut out = Vec::new();
    for w in wanted {
        let hits: Vec<(Dev, Option<Container>)> = running
            .iter()
            .filter(|(_, c)| c.matches(w))
            .map(|(d, c)| (*d, Some(c.clone())))
            .collect();
        if hits.is_empty() {
            let list: Vec<String> = running
                .iter()
                .map(|(_, c)| format!("{} ({})", text::escape(&c.name), c.short_id()))
                .collect();
            return Err(anyhow!(
                "no running container matches {:?}; running containers: {}",
                text::escape(w),
                if list.is_empty() {
                    "none found".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
        out.extend(hits);
    }
    Ok(out)
}

/// One record into the collector, and what the naming thread should hear of it.
fn take(collector: &mut Collector, naming: &Naming, record: &[u8]) {
    if let Some(m) = collector.take(record) {
        naming.name(m);
    }
    for (key, path, tgid) in collector.copied_unnamed.drain(..) {
        naming.copied_up(key, path, tgid);
    }
    for ask in collector.layer_asks.drain(..) {
        naming.layers.ask(ask);
    }
}

/// The live status line: what was seen and what was lost so far.
fn status_line(started: Instant, c: &Collector, kernel: &KernelSide) -> String {
    let s = kernel.stats();
    let dropped = s[STAT_DROPPED_COPY_UP as usize]
        + s[STAT_DROPPED_LOOKUP as usize]
        + s[STAT_DROPPED_MOUNT as usize];
    format!(
        "\r[overlay-trace] {:>5.0}s  copy-ups {}  lookups {}  dropped {}  missed returns {}   ",
        started.elapsed().as_secs_f64(),
        c.agg.copy_up_events,
        c.agg.lookup_events,
        dropped,
        kernel_side::missed_returns(&s),
    )
}

/// Attaches, traces until the end condition, detaches; returns the report and why it ended.
/// `only` adds superblocks to trace exclusively (as `--container` does). With `metrics` (for
/// `serve`), every event also feeds them, their health is kept current, and the end is quick:
/// no last naming pass, as no report waits for names.
pub async fn trace(args: &RunArgs, only: &[Dev], metrics: Option<Shared>) -> Result<Traced> {
    // Bad input first, before anything is looked at.
    crate::containers::docker::socket_path()?;
    let mut caps = preflight::inspect();
    preflight::ensure_overlay_loaded(&mut caps);
    preflight::require_for_run(&caps)?;

    // Outputs exist only once preflight passed; until the end they are temporary files.
    let json_out = args
        .json
        .as_deref()
        .map(|p| PendingFile::create(p, "the JSON report"))
        .transpose()?;
    let mut events_out = args.events.as_deref().map(EventsFile::create).transpose()?;
    if let Some(e) = events_out.as_mut() {
        e.record(&crate::replay::Record::Header {
            schema_version: crate::report::SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: caps.kernel.clone(),
        });
    }
    let trace_out = args.trace.as_deref().map(TraceFile::create).transpose()?;

    let mut resolver = Resolver::new()?;
    let mounts_now = read_overlay_mounts()?;
    let enrich_counts = Arc::new(EnrichCounts::default());
    let mut only_devs = select_containers(
        &args.containers,
        &mounts_now,
        &mut resolver,
        &mut Budgeted::new("select", enrich_counts.clone()),
    )
    .await?;
    only_devs.extend(only.iter().map(|d| (*d, None)));

    let verbose =
        std::env::var_os("OVERLAY_TRACE_VERBOSE").is_some_and(|v| v != "0" && !v.is_empty());
    let btf = KernelBtf::load()?;
    let mut config = btf.config(args.pid.unwrap_or(0))?;
    config.data_len_arg = crate::probes::PROBES
        .iter()
        .find(|p| p.entry == "copy_up_data_entry")
        .and_then(|p| crate::probes::target_for(p, &caps.symbols))
        .and_then(|f| btf.param_position(f, "len"))
        .unwrap_or(0);

    config.filter_devs = u32::from(!only_devs.is_empty());
    config.verbose = u32::from(verbose);
    config.copy_up_end_probed = u32::from(caps.symbols.contains("ovl_copy_up_end"));
    let facts = crate::probes::BtfFacts::of(&btf);
    // The parsed BTF (about 40 MiB) goes before aya parses it again to load the programs, so
    // the two never add up.
    drop(btf);
    kernel_side::release_freed_memory();
    let devs: Vec<Dev> = only_devs.iter().map(|(d, _)| *d).collect();
    let mut kernel = KernelSide::start(
        config,
        &caps.symbols,
        &devs,
        args.maxactive,
        &facts,
        args.probes,
        args.trace.is_some(),
    )?;
    // aya's own parse of the BTF is gone too: give that memory back.
    kernel_side::release_freed_memory();
    for w in &kernel.warnings {
        eprintln!("warning: {w}");
    }

    if let Some(m) = &metrics {
        let mut m = collector::lock(m);
        m.health.probes = kernel
            .probes()
            .into_iter()
            .map(|p| (p.function, p.kind))
            .collect();
        m.health.attached = true;
    }
    let mut collector = Collector {
        events: events_out,
        trace: trace_out,
        metrics: metrics.clone(),
        ..Default::default()
    };
    // Containers chosen with --container are known already.
    for (dev, c) in only_devs {
        if let Some(c) = c {
            let key = collector.agg.current(dev);
            collector.record(crate::replay::Record::Known {
                dev,
                mount_gen: key.generation,
                mount: mounts_now.get(&dev).cloned(),
                container: c,
            });
        }
    }
    let mut naming = Naming::start(resolver, kernel.mount_clock.clone(), enrich_counts);
    let started = Instant::now();
    let live = !args.quiet && std::io::stderr().is_terminal();

    let mut child = if args.command.is_empty() {
        None
    } else {
        Some(TracedCommand::spawn(&args.command)?)
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint =
        tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // The kernel side wakes us only when 256 KiB are waiting; this timer drains the rest.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    let drain = |kernel: &mut KernelSide, collector: &mut Collector, naming: &Naming| {
        kernel.drain(|record| take(collector, naming, record))
    };

    let ending = loop {
        tokio::select! {
            r = kernel.readable() => {
                r?;
                drain(&mut kernel, &mut collector, &naming);
            }
            _ = drain_tick.tick() => {
                drain(&mut kernel, &mut collector, &naming);
                kernel.flush_logs();
            }
            Some(n) = naming.answers.recv() => {
                if let Some(w) = collector.apply(n) {
                    eprintln!("{}warning: {w}", if live { "\r\n" } else { "" });
                }
            }
            _ = tick.tick() => {
                // A run killed from now on keeps what was recorded up to this second.
                if let Some(e) = collector.events.as_mut() {
                    e.flush();
                }
                if let Some(m) = &metrics {
                    let mut m = collector::lock(m);
                    m.tick(Instant::now());
                    m.health.counts = kernel_side::counts_of(&kernel.stats());
                    m.health.decode_errors = collector.decode_errors;
                    m.health.enrich = naming.counts.tally();
                    m.health.last_tick = Some(Instant::now());
                }
                if live {
                    eprint!("{}", status_line(started, &collector, &kernel));
                }
            }
            _ = sigint.recv() => break Ending::Signal(libc::SIGINT),
            _ = sigterm.recv() => break Ending::Signal(libc::SIGTERM),
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break Ending::Duration,
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                break Ending::CommandExited(child::shell_code(status?));
            }
        }
    };

    // A command still running is ended (SIGTERM, then SIGKILL) while the probes still see it;
    // the drain goes on meanwhile so nothing it does is lost.
    if let Some(c) = child.as_mut() {
        if c.exited().is_none() {
            let stop = c.stop();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    s = &mut stop => { s?; break; }
                    _ = drain_tick.tick() => drain(&mut kernel, &mut collector, &naming),
                }
            }
        }
    }
    let traced = started.elapsed().as_secs_f64();
    let ended = Instant::now();

    // Our mountinfo while the probes still record mounts: the last naming pass names mounts
    // from it (see `MountClock`).
    let mounts_at_detach = crate::mounts::read_overlay_mounts().unwrap_or_default();
    // Detach every probe, then take what is still in the ring buffer and the calls left in flight.
    let stopped = kernel.stop(|record| take(&mut collector, &naming, record));
    if live {
        eprint!("\r{:80}\r", "");
    }
    let detached = ended.elapsed();
    if let Some(m) = &metrics {
        let mut m = collector::lock(m);
        m.health.attached = false;
        m.health.counts = stopped.counts.clone();
    }

    // Names still being looked up get a bounded last chance: a hung runtime delays the report
    // by NAMING_FINISH at most.
    let finish = if metrics.is_some() {
        Duration::ZERO
    } else {
        NAMING_FINISH
    };
    let _ = naming.requests.send(Request::Finish {
        deadline: tokio::time::Instant::now() + finish,
        mounts: mounts_at_detach,
    });
    let give_up = tokio::time::Instant::now() + finish + Duration::from_millis(400);
    loop {
        match tokio::time::timeout_at(give_up, naming.answers.recv()).await {
            Ok(Some(Named::Done)) | Ok(None) | Err(_) => break,
            Ok(Some(n)) => {
                if let Some(w) = collector.apply(n) {
                    eprintln!("warning: {w}");
                }
            }
        }
    }

    if verbose {
        eprintln!(
            "overlay-trace: detaching took {} ms, the last naming pass {} ms",
            detached.as_millis(),
            (ended.elapsed() - detached).as_millis()
        );
    }
    let mut counts = stopped.counts;
    counts.decode_errors = collector.decode_errors;
    let enriched = naming.counts.tally();
    counts.enrich_abandoned = enriched.abandoned;
    counts.enrich_skipped = enriched.skipped;
    let mut report = Report::build(&collector.agg, caps.kernel.clone(), traced, counts);
    report.probes = stopped.probes;
    if let Some(e) = collector.events.as_mut() {
        e.record(&crate::replay::Record::End {
            traced_seconds: report.traced_seconds,
            events: report.events.clone(),
            probes: report.probes.clone(),
        });
    }
    report.events_file_error = collector.events.take().and_then(EventsFile::finish);
    report.trace_file_error = collector.trace.take().and_then(TraceFile::finish);
    if let Some(mut out) = json_out {
        use std::io::Write as _;
        out.writer()
            .write_all(json::to_string(&report).as_bytes())
            .context("writing the JSON report")?;
        out.commit()?;
    }
    Ok(Traced { report, ending })
}

//! `overlay-trace run`: preflight, load, attach, drain the ring buffer into the aggregate until
//! told to stop, detach, drain what is left, report. Data flows one way: probe -> decode ->
//! aggregate -> report.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{BufWriter, IsTerminal as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use overlay_trace_common::{
    NUM_STATS, STAT_DROPPED_COPY_UP, STAT_DROPPED_LOOKUP, STAT_DROPPED_MOUNT, STAT_INFLIGHT_FULL,
    STAT_READ_ERRORS,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    aggregate::{Aggregate, MountKey},
    containers::{Container, Resolver},
    btf_offsets::KernelBtf,
    cli::RunArgs,
    events::{Dev, Event},
    mounts::{OverlayMount, read_overlay_mounts},
    preflight, probes,
    report::{EventCounts, Report, json, text},
};

/// How often the ring buffer is drained when the kernel did not wake us.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// How `run` ended, for the exit code.
pub enum Outcome {
    Done,
    /// The traced command's exit code.
    Command(i32),
}

fn create(path: &Path, what: &str) -> Result<BufWriter<File>> {
    File::create(path)
        .map(BufWriter::new)
        .with_context(|| format!("cannot write {what} to {}", path.display()))
}

/// One line of `--events`: the event and which mount of its device it belongs to.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    #[serde(flatten)]
    event: &'a Event,
    mount_gen: u32,
}

/// Everything that turns ring buffer records into the report's numbers.
struct Collector {
    agg: Aggregate,
    names: BTreeMap<MountKey, OverlayMount>,
    containers: BTreeMap<MountKey, Container>,
    /// Mounts first seen since the last naming pass, or not yet in mountinfo: named (and their
    /// container looked up) on the next pass, retried while their device number is not reused.
    pending: BTreeSet<MountKey>,
    decode_errors: u64,
    events_out: Option<BufWriter<File>>,
}

impl Collector {
    fn take(&mut self, record: &[u8]) -> Result<()> {
        match Event::try_from(record) {
            Ok(e) => {
                let (key, new) = self.agg.add(&e);
                if new {
                    self.pending.insert(key);
                }
                if let Some(out) = self.events_out.as_mut() {
                    serde_json::to_writer(&mut *out, &EventLine { event: &e, mount_gen: key.generation })
                        .context("writing events")?;
                    out.write_all(b"\n").context("writing events")?;
                }
            }
            Err(_) => self.decode_errors += 1,
        }
        Ok(())
    }

    /// Names new mounts while they still exist (a container may be gone by report time): the
    /// mount from mountinfo, then the container from its runtime. A mount made after its first
    /// event shows up in mountinfo a little later, hence the retries.
    async fn name_new_mounts(&mut self, resolver: &mut Resolver) {
        // A mount whose device number was reused since can no longer be named.
        let agg = &self.agg;
        let names = &self.names;
        self.pending.retain(|k| names.contains_key(k) || agg.current(k.dev) == *k);
        if self.pending.is_empty() {
            return;
        }
        let now = if self.pending.iter().all(|k| self.names.contains_key(k)) {
            BTreeMap::new()
        } else {
            read_overlay_mounts().unwrap_or_default()
        };
        for key in std::mem::take(&mut self.pending) {
            let Some(m) = self.names.get(&key).or_else(|| now.get(&key.dev)).cloned() else {
                self.pending.insert(key);
                continue;
            };
            if !self.containers.contains_key(&key) {
                if let Some(c) = resolver.resolve(&m).await {
                    self.containers.insert(key, c);
                }
            }
            self.names.insert(key, m);
        }
    }
}

impl Collector {
    /// A last look for mounts named but not attributed: a runtime may have been slow to answer
    /// while the container started. Matching uses the saved mount, so exited containers count.
    async fn resolve_remaining(&mut self, resolver: &mut Resolver) {
        for (key, m) in &self.names {
            if self.agg.mounts.contains_key(key) && !self.containers.contains_key(key) {
                if let Some(c) = resolver.resolve(m).await {
                    self.containers.insert(*key, c);
                }
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, c: &mut Collector) -> Result<()> {
    while let Some(item) = ring.next() {
        c.take(&item)?;
    }
    Ok(())
}

fn read_stats(stats: &PerCpuArray<MapData, u64>) -> [u64; NUM_STATS as usize] {
    let mut out = [0u64; NUM_STATS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(per_cpu) = stats.get(&(i as u32), 0) {
            *slot = per_cpu.iter().sum();
        }
    }
    out
}

fn status_line(started: Instant, c: &Collector, stats: &[u64]) -> String {
    format!(
        "\r[overlay-trace] {:>5.0}s  copy-ups {}  lookups {}  dropped {}   ",
        started.elapsed().as_secs_f64(),
        c.agg.copy_up_events,
        c.agg.lookup_events,
        stats[STAT_DROPPED_COPY_UP as usize] + stats[STAT_DROPPED_LOOKUP as usize]
    )
}

/// Resolves `--container` arguments to the superblocks of running containers. An argument that
/// matches none is an error listing what is running.
async fn select_containers(
    wanted: &[String],
    mounts: &BTreeMap<Dev, OverlayMount>,
    resolver: &mut Resolver,
) -> Result<Vec<(Dev, Option<Container>)>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let running = resolver.running(mounts).await;
    let mut out = Vec::new();
    for w in wanted {
        let hits: Vec<(Dev, Option<Container>)> =
            running.iter().filter(|(_, c)| c.matches(w)).map(|(d, c)| (*d, Some(c.clone()))).collect();
        if hits.is_empty() {
            let list: Vec<String> = running.iter().map(|(_, c)| format!("{} ({})", c.name, c.short_id())).collect();
            return Err(anyhow!(
                "no running container matches {w:?}; running containers: {}",
                if list.is_empty() { "none found".to_string() } else { list.join(", ") }
            ));
        }
        out.extend(hits);
    }
    Ok(out)
}

pub async fn run(args: RunArgs) -> Result<Outcome> {
    // Open outputs first: a bad path fails before any probe is attached.
    let mut json_out = args.json.as_deref().map(|p| create(p, "the JSON report")).transpose()?;
    let (report, exit_code) = trace(&args, &[]).await?;
    if let Some(out) = json_out.as_mut() {
        out.write_all(json::to_string(&report).as_bytes())
            .and_then(|_| out.flush())
            .context("writing the JSON report")?;
    }
    print!("{}", text::render(&report));
    Ok(match exit_code {
        Some(code) => Outcome::Command(code),
        None => Outcome::Done,
    })
}

/// Attaches, traces until the end condition, detaches; returns the report and the traced
/// command's exit code. `only_devs` adds superblocks to trace exclusively (as `--container`).
pub async fn trace(args: &RunArgs, only: &[Dev]) -> Result<(Report, Option<i32>)> {
    let mut caps = preflight::inspect();
    preflight::ensure_overlay_loaded(&mut caps);
    preflight::require_for_run(&caps)?;

    let events_out = args.events.as_deref().map(|p| create(p, "events")).transpose()?;

    let mut resolver = Resolver::new();
    let mounts_now = read_overlay_mounts()?;
    let mut only_devs = select_containers(&args.containers, &mounts_now, &mut resolver).await?;
    only_devs.extend(only.iter().map(|d| (*d, None)));

    let mut config = KernelBtf::load()?.config(args.pid.unwrap_or(0))?;
    config.filter_devs = u32::from(!only_devs.is_empty());
    let mut ebpf = probes::open(config)?;
    if !only_devs.is_empty() {
        let map = ebpf.map_mut("DEV_FILTER").ok_or_else(|| anyhow!("eBPF object has no DEV_FILTER map"))?;
        let mut filter: aya::maps::HashMap<_, u32, u8> =
            aya::maps::HashMap::try_from(map).map_err(|e| anyhow!("DEV_FILTER: {e}"))?;
        for (dev, _) in &only_devs {
            filter.insert(dev.to_kernel(), 1, 0).map_err(|e| anyhow!("DEV_FILTER: {e}"))?;
        }
    }
    let ring = ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("eBPF object has no EVENTS map"))?;
    let stats = ebpf.take_map("STATS").ok_or_else(|| anyhow!("eBPF object has no STATS map"))?;
    let ring = RingBuf::try_from(ring).map_err(|e| anyhow!("EVENTS: {e}"))?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(stats).map_err(|e| anyhow!("STATS: {e}"))?;
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged while the AsyncFd
    // owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("cannot poll the ring buffer: {e}"))?;

    let attached = probes::attach(&mut ebpf, &caps.symbols)?;
    for w in &attached.warnings {
        eprintln!("warning: {w}");
    }

    let gen0 = |dev| MountKey { dev, generation: 0 };
    let mut collector = Collector {
        agg: Aggregate::default(),
        names: mounts_now.into_iter().map(|(d, m)| (gen0(d), m)).collect(),
        containers: only_devs.into_iter().filter_map(|(d, c)| Some((gen0(d), c?))).collect(),
        pending: BTreeSet::new(),
        decode_errors: 0,
        events_out,
    };
    if let Some(w) = resolver.docker_warning() {
        eprintln!("warning: {w}");
    }
    let started = Instant::now();
    let live = !args.quiet && std::io::stderr().is_terminal();

    let mut child = match args.command.split_first() {
        Some((prog, rest)) => Some(
            tokio::process::Command::new(prog)
                .args(rest)
                .spawn()
                .with_context(|| format!("cannot run {prog}"))?,
        ),
        None => None,
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // The kernel side wakes us only when 256 KiB are waiting; this timer drains the rest.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut exit_code = None;

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                drain(guard.get_inner_mut(), &mut collector)?;
                guard.clear_ready();
                collector.name_new_mounts(&mut resolver).await;
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), &mut collector)?;
                collector.name_new_mounts(&mut resolver).await;
            }
            _ = tick.tick() => {
                if live {
                    eprint!("{}", status_line(started, &collector, &read_stats(&stats)));
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            status = async { child.as_mut().unwrap().wait().await }, if child.is_some() && exit_code.is_none() => {
                let status = status.context("waiting for the command")?;
                // A command killed by a signal exits like a shell reports it: 128 + signal.
                use std::os::unix::process::ExitStatusExt as _;
                exit_code = Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
                break;
            }
        }
    }
    let traced = started.elapsed().as_secs_f64();

    // Detach every probe, then take what is still in the ring buffer.
    drop(ebpf);
    drain(ring.get_mut(), &mut collector)?;
    if live {
        eprint!("\r{:70}\r", "");
    }
    let s = read_stats(&stats);
    let counts = EventCounts {
        dropped_copy_up: s[STAT_DROPPED_COPY_UP as usize],
        dropped_lookup: s[STAT_DROPPED_LOOKUP as usize],
        dropped_mount: s[STAT_DROPPED_MOUNT as usize],
        untracked_calls: s[STAT_INFLIGHT_FULL as usize],
        kernel_read_errors: s[STAT_READ_ERRORS as usize],
        decode_errors: collector.decode_errors,
        ..Default::default()
    };
    collector.name_new_mounts(&mut resolver).await;
    collector.resolve_remaining(&mut resolver).await;
    if let Some(mut out) = collector.events_out.take() {
        out.flush().context("writing events")?;
    }
    let report = Report::build(&collector.agg, &collector.names, &collector.containers, caps.kernel.clone(), traced, counts);
    Ok((report, exit_code))
}

//! The kernel side of a run: the loaded programs, their probes, the ring buffer, the counters and
//! the in-flight tables. `stop` detaches everything and accounts for every call still in flight,
//! so nothing that was entered goes unreported without being counted.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use overlay_trace_common::{
    Config, CopyUpInflight, LookupInflight, MAX_NESTING, MountFrame, NUM_STATS,
    STAT_DROPPED_COPY_UP, STAT_DROPPED_EXEC, STAT_DROPPED_LOOKUP, STAT_DROPPED_MOUNT,
    STAT_INFLIGHT_FULL, STAT_MISSED_RETURN_COPY_UP, STAT_MISSED_RETURN_DATA,
    STAT_MISSED_RETURN_LOOKUP, STAT_MISSED_RETURN_MOUNT, STAT_ORPHAN_RETURNS, STAT_READ_ERRORS,
};
use tokio::io::unix::AsyncFd;

use crate::stream::event::Dev;

use crate::kernel::probes::{self, Attached, ProbesArg};

use crate::stream::record::{EventCounts, ProbeReport};

pub type Stats = [u64; NUM_STATS as usize];

/// Missed returns the kernel side has found so far (stale entries).
pub fn missed_returns(s: &Stats) -> u64 {
    s[STAT_MISSED_RETURN_COPY_UP as usize]
        + s[STAT_MISSED_RETURN_LOOKUP as usize]
        + s[STAT_MISSED_RETURN_MOUNT as usize]
}

/// The kernel side's counters as the report counts them (calls still in flight not included).
pub fn counts_of(s: &Stats) -> EventCounts {
    EventCounts {
        dropped_copy_up: s[STAT_DROPPED_COPY_UP as usize],
        dropped_lookup: s[STAT_DROPPED_LOOKUP as usize],
        dropped_mount: s[STAT_DROPPED_MOUNT as usize],
        untracked_calls: s[STAT_INFLIGHT_FULL as usize],
        kernel_read_errors: s[STAT_READ_ERRORS as usize],
        missed_return_copy_up: s[STAT_MISSED_RETURN_COPY_UP as usize],
        missed_return_lookup: s[STAT_MISSED_RETURN_LOOKUP as usize],
        missed_return_mount: s[STAT_MISSED_RETURN_MOUNT as usize],
        missed_return_data: s[STAT_MISSED_RETURN_DATA as usize],
        orphan_returns: s[STAT_ORPHAN_RETURNS as usize],
        dropped_exec: s[STAT_DROPPED_EXEC as usize],
        dropped_rename: s[overlay_trace_common::STAT_DROPPED_RENAME as usize],
        ..Default::default()
    }
}

/// `counts` with the runs the kernel skipped, from the probes' miss counts.
fn with_skipped(mut counts: EventCounts, probes: &[ProbeReport]) -> EventCounts {
    let s = crate::kernel::prog_info::skipped(probes);
    counts.skipped_calls = s.calls;
    counts.skipped_runs = s.other;
    counts
}

/// Gives memory that was freed back to the system (glibc keeps it otherwise): parsing the
/// kernel's BTF takes tens of MiB for a moment.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Kernel-side diagnostics (aya-log, `OVERLAY_TRACE_VERBOSE=1`) printed on stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("kernel: {}", record.args());
    }
    fn flush(&self) {}
}

/// The per-CPU counters, summed over CPUs.
fn read_stats(stats: &PerCpuArray<MapData, u64>) -> Stats {
    let mut out = [0u64; NUM_STATS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(per_cpu) = stats.get(&(i as u32), 0) {
            *slot = per_cpu.iter().sum();
        }
    }
    out
}

/// At the end, how long calls still in flight when the entry probes are detached get to return
/// before the return probes go too (those that do not are counted as missed returns).
const RETURNS_WAIT: Duration = Duration::from_millis(500);
/// Calls in flight that all stay this long without one returning are blocked (a filesystem that
/// does not answer, a lock): the wait ends then rather than at `RETURNS_WAIT`.
const RETURNS_STUCK: Duration = Duration::from_millis(150);

pub struct KernelSide {
    ebpf: Ebpf,
    attached: Attached,
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    maps: InFlight,
    pub mount_clock: MountClock,
    logger: Option<aya_log::EbpfLogger<StderrLog>>,
    pub warnings: Vec<String>,
}

/// What is left once the probes are detached.
pub struct Stopped {
    pub counts: EventCounts,
    pub probes: Vec<ProbeReport>,
}

/// When each device number's latest mount began, as the kernel saw it (the `DEV_MOUNTED` map):
/// whether mountinfo, read before asking, may show a newer mount of the number than the one
/// being named. It only holds for mountinfo read while the probes record mounts, hence
/// `while_recording`. Shared by the drain and the naming threads.
#[derive(Clone, Default)]
pub struct MountClock {
    map: Option<Arc<BpfHashMap<MapData, u32, u64>>>,
    /// False once the probes are about to be detached. Read-locked for the whole of a mountinfo
    /// read, so no read outlasts the recording.
    recording: Arc<RwLock<bool>>,
}

impl MountClock {
    /// Whether a mount of `dev` began after `alive_ns`, a moment the mount being named was alive
    /// (0: not known). Ask only after reading mountinfo, and for mountinfo read under
    /// `while_recording`: then a mount shown there for `dev` is the one alive at `alive_ns`
    /// unless this says otherwise.
    pub fn superseded(&self, dev: Dev, alive_ns: u64) -> bool {
        alive_ns != 0
            && self
                .map
                .as_ref()
                .is_some_and(|m| m.get(&dev.to_kernel(), 0).is_ok_and(|t| t > alive_ns))
    }

    /// Runs `read` (a mountinfo read) if the probes still record mounts; None once they stop.
    /// Without the kernel side (tests) it always runs.
    pub fn while_recording<T>(&self, read: impl FnOnce() -> T) -> Option<T> {
        let recording = self.recording.read().unwrap_or_else(|e| e.into_inner());
        (*recording || self.map.is_none()).then(read)
    }

    /// The probes are about to be detached: waits for mountinfo reads under way, refuses later ones.
    fn stop_recording(&self) {
        *self.recording.write().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("eBPF object has no {name} map"))?;
    T::try_from(map).map_err(|e| anyhow!("{name}: {e}"))
}

impl KernelSide {
    /// Loads the programs with `config`, restricts them to `devs` when given (and to new
    /// overlays on `uppers`: selected containers' roots mounted again), and attaches them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: Config,
        symbols: &HashSet<String>,
        devs: &[Dev],
        uppers: &[overlay_trace_common::UpperDir],
        maxactive: u32,
        btf: &probes::BtfFacts,
        wanted: ProbesArg,
        process_starts: bool,
    ) -> Result<Self> {
        let mut ebpf = probes::open(config)?;
        if !devs.is_empty() {
            let map = ebpf
                .map_mut("DEV_FILTER")
                .ok_or_else(|| anyhow!("eBPF object has no DEV_FILTER map"))?;
            let mut filter: BpfHashMap<_, u32, u8> =
                BpfHashMap::try_from(map).map_err(|e| anyhow!("DEV_FILTER: {e}"))?;
            for dev in devs {
                filter
                    .insert(dev.to_kernel(), 1, 0)
                    .map_err(|e| anyhow!("DEV_FILTER: {e}"))?;
            }
            // Borrowed, not taken: a map taken out of the object is closed when dropped, before
            // the programs that use it are loaded.
            let map = ebpf
                .map_mut("UPPER_FILTER")
                .ok_or_else(|| anyhow!("eBPF object has no UPPER_FILTER map"))?;
            let mut follow: BpfHashMap<_, overlay_trace_common::UpperDir, u8> =
                BpfHashMap::try_from(map).map_err(|e| anyhow!("UPPER_FILTER: {e}"))?;
            for u in uppers {
                follow
                    .insert(u, 1, 0)
                    .map_err(|e| anyhow!("UPPER_FILTER: {e}"))?;
            }
        }
        let logger = if config.verbose != 0 {
            Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, StderrLog)
                    .map_err(|e| anyhow!("aya-log: {e}"))?,
            )
        } else {
            None
        };
        let ring: RingBuf<MapData> = take_map(&mut ebpf, "EVENTS")?;
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged while the AsyncFd
        // owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow!("cannot poll the ring buffer: {e}"))?;
        let stats = take_map(&mut ebpf, "STATS")?;
        let copy_ups_in_flight = take_map(&mut ebpf, "COPY_UP_INFLIGHT")?;
        let lookups_in_flight = take_map(&mut ebpf, "LOOKUP_INFLIGHT")?;
        let mounts_in_flight = take_map(&mut ebpf, "MOUNT_INFLIGHT")?;
        let mount_clock = MountClock {
            map: Some(Arc::new(take_map(&mut ebpf, "DEV_MOUNTED")?)),
            recording: Arc::new(RwLock::new(true)),
        };
        let support = if wanted == ProbesArg::Kprobe {
            probes::FentrySupport {
                refused: Some("kprobes asked for".into()),
                module_btf: None,
            }
        } else {
            probes::FentrySupport::probe(&mut ebpf, btf)
        };
        let (plan, mut warnings) = probes::plan(btf, symbols, &support, wanted)?;
        let attached = probes::attach(
            &mut ebpf,
            &plan,
            &support,
            maxactive,
            wanted == ProbesArg::Auto,
        )?;
        warnings.extend(attached.warnings.iter().cloned());
        if process_starts {
            // The timeline's process starts: useful, not essential.
            let r = probes::exec_tracepoint(&mut ebpf)
                .and_then(|p| Ok(p.attach("sched", "sched_process_exec")?));
            if let Err(e) = r {
                warnings.push(format!("the timeline will not show process starts: {e:#}"));
            }
        }
        Ok(Self {
            ebpf,
            attached,
            ring,
            stats,
            maps: InFlight {
                copy_ups: copy_ups_in_flight,
                lookups: lookups_in_flight,
                mounts: mounts_in_flight,
            },
            mount_clock,
            logger,
            warnings,
        })
    }

    /// Waits until the kernel woke us (enough events are waiting).
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self.ring.readable_mut().await.context("ring buffer poll")?;
        // Cleared before draining: whatever arrives after this is drained too, or wakes us again.
        guard.clear_ready();
        Ok(())
    }

    /// Hands every waiting record to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
    }

    /// The probes attached, with the kernel's hit and miss counts as of now.
    pub fn probes(&self) -> Vec<ProbeReport> {
        self.attached.report(&self.ebpf)
    }

    /// What was lost so far: the kernel side's counters and the runs the kernel skipped.
    pub fn counts(&self) -> EventCounts {
        with_skipped(
            counts_of(&self.stats()),
            &self.attached.tracing_report(&self.ebpf),
        )
    }

    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    pub fn stats(&self) -> Stats {
        read_stats(&self.stats)
    }

    /// Detaches every probe (entries first), hands the records still waiting to `f`, and counts
    /// the calls whose return never came: those found stale while tracing and those still in
    /// flight now.
    pub fn stop(mut self, mut f: impl FnMut(&[u8])) -> Stopped {
        let mut probes = self.attached.report(&self.ebpf);
        self.mount_clock.stop_recording();
        probes::detach_entries(&mut self.ebpf, &mut self.attached);
        // Calls that began before the entries went get a moment to return while their return
        // probes are still there (a busy host always has some in flight).
        let waited = Instant::now();
        let (mut left, mut changed) = (self.maps.in_flight(), Instant::now());
        while left != (0, 0, 0)
            && waited.elapsed() < RETURNS_WAIT
            && changed.elapsed() < RETURNS_STUCK
        {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.maps.in_flight();
            if now != left {
                (left, changed) = (now, Instant::now());
            }
        }
        // The programs' skipped runs once the last call returned (tracefs counts were read
        // before their events went).
        for now in self.attached.tracing_report(&self.ebpf) {
            if let Some(p) = probes.iter_mut().find(|p| p.program == now.program) {
                p.missed = now.missed;
            }
        }
        drop(std::mem::take(&mut self.attached));
        // Unloads the programs (and detaches anything attached through aya itself).
        drop(self.ebpf);
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
        let s = read_stats(&self.stats);
        let (left_copy_ups, left_lookups, left_mounts) = self.maps.in_flight();
        let mut counts = counts_of(&s);
        counts.missed_return_copy_up += left_copy_ups;
        counts.missed_return_lookup += left_lookups;
        counts.missed_return_mount += left_mounts;
        let counts = with_skipped(counts, &probes);
        Stopped { counts, probes }
    }
}

/// The calls on one thread's stack of `depth` frames that are not filtered: frames of filtered
/// calls (kept only to pair returns) are nobody's loss.
fn unfiltered<F>(depth: u32, frames: &[F], filtered: impl Fn(&F) -> u32) -> u64 {
    let depth = (depth as usize).min(MAX_NESTING);
    frames[..depth].iter().filter(|f| filtered(f) == 0).count() as u64
}

/// The in-flight tables: each thread's calls that began and have not returned (as the kernel
/// side saw them).
struct InFlight {
    copy_ups: BpfHashMap<MapData, u32, CopyUpInflight>,
    lookups: BpfHashMap<MapData, u32, LookupInflight>,
    mounts: BpfHashMap<MapData, u32, MountFrame>,
}

impl InFlight {
    /// Calls in flight now: copy-ups, lookups, mounts.
    fn in_flight(&self) -> (u64, u64, u64) {
        let copy_ups: u64 = self
            .copy_ups
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| unfiltered(v.depth, &v.frames, |f| f.filtered))
            .sum();
        let lookups: u64 = self
            .lookups
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| unfiltered(v.depth, &v.frames, |f| f.filtered))
            .sum();
        let mounts = self
            .mounts
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, f)| f.filtered == 0)
            .count() as u64;
        (copy_ups, lookups, mounts)
    }
}

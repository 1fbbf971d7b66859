//! `overlay-trace bench SCENARIO`: builds an overlay of its own (tmpfs under the layers), runs
//! the scenario's workload under the tracer (only that superblock is traced), repeats, and
//! writes a report with the conditions and the spread of each metric.

pub mod scenario;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context as _, Result, bail};
use nix::mount::{MntFlags, MsFlags};

use crate::base::BadInput;

use crate::cli::{BenchArgs, TraceArgs};

use crate::stream::event::Dev;

use crate::views::report::{BenchInfo, Report, Spread};

use crate::views::{diff, json, text};

use crate::cmd::{
    child::{TracedCommand, shell_code as child_shell_code},
    session::{Options, Session},
};
use crate::kernel::probes::ProbesArg;
use scenario::Scenario;

/// Overlay mount options a scenario or `--mount-options` may set; the layers are ours to set.
pub const OVERLAY_OPTIONS: &[&str] = &[
    "redirect_dir",
    "metacopy",
    "index",
    "xino",
    "nfs_export",
    "volatile",
    "userxattr",
    "uuid",
    "verity",
];
/// tmpfs options `--upper-options` may set.
pub const TMPFS_OPTIONS: &[&str] = &[
    "size",
    "nr_blocks",
    "nr_inodes",
    "mode",
    "huge",
    "inode64",
    "inode32",
    "noswap",
];

/// Checks `key[=value],...` against the supported keys. Options go to mount(2) as they are (no
/// shell anywhere), so a value is limited to letters, digits and `._-`.
pub fn check_mount_options(what: &str, opts: &str, allowed: &[&str]) -> Result<()> {
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = o.split_once('=').map_or((o, None), |(k, v)| (k, Some(v)));
        if !allowed.contains(&key) {
            bail!(BadInput(format!(
                "{what}: mount option {:?} is not supported (supported: {})",
                crate::base::escape::escape(key),
                allowed.join(", ")
            )));
        }
        if let Some(v) = value {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                bail!(BadInput(format!(
                    "{what}: mount option {key} has a bad value {:?}",
                    crate::base::escape::escape(v)
                )));
            }
        }
    }
    Ok(())
}

/// Moves this process into a mount namespace of its own, with nothing propagating back: every
/// mount the bench makes disappears with the process, however it ends. Must run before any
/// other thread exists.
pub(crate) fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot make a private mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the mount namespace private")?;
    Ok(())
}

/// A tmpfs with the layers and the overlay on top, in the bench's private mount namespace;
/// unmounted (and its directory removed) on drop.
struct BenchOverlay {
    root: PathBuf,
    options: String,
    mounted: Vec<PathBuf>,
}

impl BenchOverlay {
    async fn create(s: &Scenario, upper_options: &str, extra: &str) -> Result<Self> {
        let root = PathBuf::from(format!("/run/overlay-trace-bench-{}", std::process::id()));
        fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let mut o = BenchOverlay {
            root,
            options: String::new(),
            mounted: Vec::new(),
        };
        let tmpfs_opts = (!upper_options.is_empty()).then_some(upper_options);
        nix::mount::mount(
            Some("tmpfs"),
            &o.root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            tmpfs_opts,
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", o.root.display()))?;
        o.mounted.push(o.root.clone());
        for i in 0..s.layers {
            fs::create_dir(o.lower(i))?;
        }
        for d in ["upper", "work", "merged"] {
            fs::create_dir(o.root.join(d))?;
        }
        populate_interruptibly(s, (0..s.layers).map(|i| o.lower(i)).collect()).await?;
        let lower: Vec<String> = (0..s.layers)
            .map(|i| o.lower(i).display().to_string())
            .collect();
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            o.root.join("upper").display(),
            o.root.join("work").display()
        );
        for extra in [s.mount_options.as_str(), extra] {
            if !extra.is_empty() {
                options.push(',');
                options.push_str(extra);
            }
        }
        nix::mount::mount(
            Some("overlay"),
            &o.merged(),
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .with_context(|| format!("cannot mount the overlay ({options})"))?;
        o.mounted.push(o.merged());
        o.options = options;
        Ok(o)
    }

    fn lower(&self, i: usize) -> PathBuf {
        self.root.join(format!("lower{i}"))
    }

    fn merged(&self) -> PathBuf {
        self.root.join("merged")
    }

    fn dev(&self) -> Result<Dev> {
        let d = fs::metadata(self.merged())?.dev();
        Ok(Dev {
            major: libc::major(d),
            minor: libc::minor(d),
        })
    }
}

impl Drop for BenchOverlay {
    fn drop(&mut self) {
        for m in self.mounted.iter().rev() {
            let _ = nix::mount::umount2(m, MntFlags::MNT_DETACH);
        }
        // Only the (now empty) mount point: never anything it might still hold.
        let _ = fs::remove_dir(&self.root);
    }
}

/// Fills the lower layers, giving up cleanly on SIGINT or SIGTERM (the caller's guards then
/// unmount everything).
async fn populate_interruptibly(s: &Scenario, lowers: Vec<PathBuf>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let work = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::task::spawn_blocking(move || scenario::populate(&s, |i| lowers[i].clone(), &stop))
    };
    tokio::pin!(work);
    let interrupted = tokio::select! {
        r = &mut work => return r.context("populating")?,
        _ = int.recv() => true,
        _ = term.recv() => true,
    };
    stop.store(interrupted, std::sync::atomic::Ordering::SeqCst);
    let _ = work.await;
    bail!("interrupted while populating the lower layers")
}

fn spread(values: &mut [f64]) -> Spread {
    values.sort_by(|a, b| a.total_cmp(b));
    Spread {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

/// The hidden `bench-workload` subcommand: the scenario's steps, run as the traced command.
pub fn workload(scenario: &str, merged: &Path) -> Result<()> {
    let (s, _) = Scenario::load(scenario)?;
    scenario::run_steps(&s, merged)
}

pub async fn bench(args: BenchArgs) -> Result<()> {
    let (s, source) = Scenario::load(&args.scenario)?;
    check_mount_options("--mount-options", &args.mount_options, OVERLAY_OPTIONS)?;
    check_mount_options("--upper-options", &args.upper_options, TMPFS_OPTIONS)?;
    // Nothing is built on a machine that cannot trace.
    let mut caps = crate::kernel::preflight::inspect();
    crate::kernel::preflight::ensure_overlay_loaded(&mut caps);
    crate::kernel::preflight::require_for_run(&caps)?;
    // Output files are written at the end, beside their target; check the place now.
    if let Some(p) = &args.json {
        drop(crate::stream::output::PendingFile::create(
            p,
            "the JSON report",
        )?);
    }
    private_mount_namespace()?;
    let mut runs: Vec<Report> = Vec::new();
    let mut options = String::new();
    for i in 0..args.repeat {
        eprintln!(
            "bench {}: run {}/{}: building a {}-layer overlay",
            s.name,
            i + 1,
            args.repeat,
            s.layers
        );
        let (report, used) = measure(
            &s,
            &source,
            &args.upper_options,
            &args.mount_options,
            args.probes,
        )
        .await?;
        options = used;
        eprintln!(
            "bench {}: run {}/{}: {} copy-ups, {} lookups",
            s.name,
            i + 1,
            args.repeat,
            report.events.copy_up,
            report.events.lookup
        );
        runs.push(report);
    }
    // Per metric: median and spread over the runs. The report shown is the run whose total
    // copy-up time is the median.
    let per_run: Vec<BTreeMap<String, f64>> = runs.iter().map(diff::metrics).collect();
    let metrics: BTreeMap<String, Spread> = diff::METRICS
        .iter()
        .map(|(name, _, _)| {
            (
                name.to_string(),
                spread(&mut per_run.iter().map(|m| m[*name]).collect::<Vec<_>>()),
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|a, b| per_run[*a]["total"].total_cmp(&per_run[*b]["total"]));
    let mut report = runs.swap_remove(order[order.len() / 2]);
    report.bench = Some(BenchInfo {
        scenario: s.name.clone(),
        scenario_source: source,
        mount_options: options,
        upper_fs: format!(
            "tmpfs{}",
            if args.upper_options.is_empty() {
                String::new()
            } else {
                format!(" ({})", args.upper_options)
            }
        ),
        repeat: args.repeat,
        metrics,
    });
    print!("{}", text::render(&report));
    if let Some(p) = &args.json {
        crate::stream::output::write_file(
            p,
            "the JSON report",
            json::to_string(&report).as_bytes(),
        )?;
    }
    Ok(())
}

/// One run of scenario `s` (its text `source`) on a fresh overlay of the bench's, in the
/// private mount namespace the caller made (`private_mount_namespace`): its report, and the
/// overlay's mount options.
pub(crate) async fn measure(
    s: &Scenario,
    source: &str,
    upper_options: &str,
    mount_options: &str,
    probes: ProbesArg,
) -> Result<(Report, String)> {
    let ov = BenchOverlay::create(s, upper_options, mount_options).await?;
    // The workload reads the scenario from the bench's own tmpfs, beside the layers.
    let file = ov.root.join("scenario.toml");
    fs::write(&file, source).with_context(|| format!("cannot write {}", file.display()))?;
    let me = std::env::current_exe().context("cannot find my own executable")?;
    let command = vec![
        me.display().to_string(),
        "bench-workload".into(),
        file.display().to_string(),
        ov.merged().display().to_string(),
    ];
    let report = traced_workload(&command, ov.dev()?, probes)
        .await
        .with_context(|| format!("the {} workload", s.name))?;
    Ok((report, ov.options.clone()))
}

/// The workload `command`, traced on the bench's overlay `dev` alone until it exits (0, or the
/// run fails). Ctrl-C or SIGTERM stop it.
async fn traced_workload(command: &[String], dev: Dev, probes: ProbesArg) -> Result<Report> {
    let mut signals = crate::cmd::signals::Signals::install()?;
    let only = [dev];
    let start = Session::start(Options {
        tracing: TraceArgs {
            probes,
            ..Default::default()
        },
        only: &only,
        ..Default::default()
    });
    let mut session = tokio::select! {
        biased;
        _ = signals.recv() => bail!("interrupted"),
        s = start => s?,
    };
    let mut child = TracedCommand::spawn(command)?;
    let code = loop {
        tokio::select! {
            r = session.step() => r?,
            _ = signals.recv() => break None,
            status = child.wait() => break Some(child_shell_code(status?)),
        }
    };
    if code.is_none() {
        child.stop().await?;
    }
    let report = session.finish(std::time::Duration::from_secs(3)).await?;
    match code {
        Some(0) => Ok(report),
        Some(c) => bail!("did not finish (exit {c})"),
        None => bail!("interrupted"),
    }
}

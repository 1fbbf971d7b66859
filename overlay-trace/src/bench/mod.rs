//! `overlay-trace bench SCENARIO`: builds an overlay of its own (tmpfs under the layers), runs
//! the scenario's workload under the tracer (only that superblock is traced), repeats, and
//! writes a report with the conditions and the spread of each metric.

pub mod scenario;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cli::{BenchArgs, RunArgs},
    events::Dev,
    report::{BenchInfo, Report, Spread, diff, json, text},
    run,
};
use scenario::Scenario;

/// A private tmpfs with the layers and the overlay on top; unmounted on drop.
struct BenchOverlay {
    root: PathBuf,
    options: String,
}

impl BenchOverlay {
    fn create(s: &Scenario, upper_options: &str, extra: &str) -> Result<Self> {
        let root = PathBuf::from(format!("/run/overlay-trace-bench-{}", std::process::id()));
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let mut opts = String::new();
        if !upper_options.is_empty() {
            opts = format!("-o {upper_options}");
        }
        sh(&format!("mount -t tmpfs {opts} tmpfs {}", root.display()))?;
        let mut o = BenchOverlay {
            root,
            options: String::new(),
        };
        for i in 0..s.layers {
            fs::create_dir_all(o.lower(i))?;
        }
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(o.root.join(d))?;
        }
        scenario::populate(s, |i| o.lower(i))?;
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
        sh(&format!(
            "mount -t overlay overlay -o {options} {}",
            o.merged().display()
        ))?;
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
        let _ = Command::new("umount").arg(self.merged()).status();
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn sh(cmd: &str) -> Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .context("sh")?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
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
    let me = std::env::current_exe().context("cannot find my own executable")?;
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
        let ov = BenchOverlay::create(&s, &args.upper_options, &args.mount_options)?;
        options = ov.options.clone();
        let run_args = RunArgs {
            quiet: true,
            command: vec![
                me.display().to_string(),
                "bench-workload".into(),
                args.scenario.clone(),
                ov.merged().display().to_string(),
            ],
            duration: None,
            pid: None,
            containers: Vec::new(),
            json: None,
            events: None,
            maxactive: 4096,
        };
        let run::Traced { report, ending } = run::trace(&run_args, &[ov.dev()?]).await?;
        if ending != run::Ending::CommandExited(0) {
            bail!("the {} workload did not finish (exit {:?})", s.name, ending);
        }
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
        run::outputs::write_file(p, "the JSON report", json::to_string(&report).as_bytes())?;
    }
    Ok(())
}

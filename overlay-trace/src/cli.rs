//! Command-line arguments, raw: parsing only, no behaviour.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::kernel::probes::{ProbesArg, tracefs::MAXACTIVE_MAX};

#[derive(Parser, Debug)]
#[command(
    name = "overlay-trace",
    version,
    about = "Trace what overlayfs copy-ups and lookups cost, per mount"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace copy-ups and lookups until Ctrl-C, SIGTERM, --duration or the end of CMD; then report.
    Run(RunArgs),
    /// Render saved JSON reports (from `run --json` or `bench`) as text, and optionally their
    /// latency distributions as a picture (reports are overlaid). An events file (`run
    /// --events`) is replayed into the full report of the run that wrote it.
    Report {
        /// The JSON report(s) or events file(s).
        #[arg(required = true, num_args = 1..=4)]
        files: Vec<PathBuf>,
        /// Write the (first) report as JSON to FILE: from an events file, the rebuilt report.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the start timeline of the (first) file, an events file, as SVG.
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
        /// Write copy-up and lookup latency distributions as SVG.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Write an HTML page with the picture and the text reports.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Exit 3 when a report has this finding (an id, or `any`; repeatable): for CI.
        #[arg(long, value_name = "ID", value_parser = fail_on_ids())]
        fail_on: Vec<String>,
        /// Try each finding whose fix is a mount option (metacopy=on): the recorded start (an
        /// events file) is replayed by the bench without and with it. Needs root.
        #[arg(long)]
        verify: bool,
    },
    /// Turn a recorded start (`run --events`) into a bench scenario (TOML on stdout): each
    /// object one mount copied up, at its path in its source layer with its size and type, and
    /// a step that asks for its copy-up as the recording says it was asked for. `bench
    /// FILE.toml` then replays it on a private overlay.
    Scenario {
        /// The events file.
        events: PathBuf,
        /// The mount: a container name, id prefix or mount point (default: the one whose
        /// copy-ups took longest).
        #[arg(long, value_name = "NAME|ID|PATH")]
        mount: Option<String>,
    },
    /// Compare two JSON reports: exit 0 within bounds, 1 on regression (naming each metric),
    /// 2 on bad input.
    Diff {
        base: PathBuf,
        new: PathBuf,
        /// Allowed growth per metric, e.g. `p99=10%,bytes=0%` (metrics: copy_ups, bytes, total,
        /// p50, p90, p99, max, lookups, lookup_p99). Unnamed metrics keep their defaults.
        #[arg(long, default_value = "")]
        max_regression: String,
    },
    /// A live view of which containers copy up and look up right now, one row each (full
    /// screen; one block of lines per interval when stdout is not a terminal).
    Top(TopArgs),
    /// Trace until SIGTERM and serve the numbers to Prometheus on /metrics (and /healthz).
    Serve(ServeArgs),
    /// Run a copy-up benchmark scenario on an overlay of its own, under the tracer.
    Bench(BenchArgs),
    /// (internal) the workload of a bench scenario, run as the traced command.
    #[command(hide = true)]
    BenchWorkload { scenario: String, merged: PathBuf },
    /// Show what this machine offers (kernel, BTF, kprobes, fentry, overlay, privileges) and
    /// whether `run` will work. Exits non-zero when it will not.
    Check,
}

/// What is traced and with which probes: the same flags on `run`, `top` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Only trace this process id (filtered in the kernel).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Only trace this running container (name, id or id prefix; repeatable). Filtered in the
    /// kernel by the container's overlay superblock, so other containers cost nothing.
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Calls of one function that may be in flight at once before the kernel starts missing
    /// their returns (kretprobe `maxactive`; the kernel caps it at 4096). Missed returns are
    /// counted and shown either way.
    #[arg(long, default_value_t = MAXACTIVE_MAX, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub maxactive: u32,
    /// Kind of probe: fentry/fexit where this kernel allows it for that function and kprobes
    /// elsewhere (auto), or one kind everywhere. `check` shows what auto picks, and why.
    #[arg(long, value_enum, default_value_t = ProbesArg::Auto)]
    pub probes: ProbesArg,
}

impl Default for TraceArgs {
    /// Everything, with the flags' defaults.
    fn default() -> Self {
        Self {
            pid: None,
            containers: Vec::new(),
            maxactive: MAXACTIVE_MAX,
            probes: ProbesArg::Auto,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = run_length)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub tracing: TraceArgs,
    /// (for tests) Only trace the overlay with this device number, as `--container` does for a
    /// container's (repeatable).
    #[arg(long = "only-dev", value_name = "MAJ:MIN", hide = true)]
    pub only_devs: Vec<crate::stream::event::Dev>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every event as one JSON line to FILE.
    #[arg(long, value_name = "FILE.ndjson")]
    pub events: Option<PathBuf>,
    /// Write a timeline (Chrome Trace Event format: Perfetto, chrome://tracing) to FILE.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Exit 3 (when the traced command itself succeeded) if the report has this finding (an
    /// id, or `any`; repeatable): for CI.
    #[arg(long, value_name = "ID", value_parser = fail_on_ids())]
    pub fail_on: Vec<String>,
    /// No live status line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run CMD with the probes attached; trace until it exits and exit with its status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// How often the rows are brought up to date (rates and p99 are over this interval).
    #[arg(long, default_value = "1s", value_parser = interval)]
    pub interval: Duration,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = run_length)]
    pub duration: Option<Duration>,
    /// The column the rows are sorted by at first (largest first; keys change it on screen).
    #[arg(long, value_enum, default_value_t = crate::views::top::Column::CopyUps)]
    pub sort: crate::views::top::Column,
    #[command(flatten)]
    pub tracing: TraceArgs,
}

/// A run's length: at most a year (the clock's deadline overflows far past it).
fn run_length(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(365 * 86_400) {
        return Err("expected at most 365d".into());
    }
    Ok(d)
}

/// An interval of 250 ms to an hour: a look takes the drain's thread about 10 ms when 256
/// mounts are all busy (measured), and a person reads no faster.
fn interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(250) || d > Duration::from_secs(3600) {
        return Err("expected 250ms to 1h".into());
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = "127.0.0.1:9477")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub tracing: TraceArgs,
    /// A container's series is dropped once it has had no live mount and no event this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub forget_after: Duration,
    /// At most this many container label sets; beyond, new containers share the `other` series.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_series: u64,
    /// A /metrics body is kept under this many MiB: past it, the largest series are left out
    /// (counted in `overlay_trace_scrape_series_cut_total`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_body_mib: u64,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Scenario file (TOML), or the name of a built-in one: container-start, package-install,
    /// log-append, chmod-r, rename-dirs.
    pub scenario: String,
    /// Kind of probe, as for `run`.
    #[arg(long, value_enum, default_value_t = ProbesArg::Auto)]
    pub probes: ProbesArg,
    /// Runs; the report keeps medians and the spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Extra overlay mount options, e.g. `metacopy=on`.
    #[arg(long, default_value = "")]
    pub mount_options: String,
    /// Mount options of the tmpfs under the layers (e.g. `size=2g`).
    #[arg(long, default_value = "")]
    pub upper_options: String,
}

/// The values `--fail-on` takes: a finding id, or `any`.
fn fail_on_ids() -> clap::builder::PossibleValuesParser {
    let mut ids = vec!["any"];
    ids.extend_from_slice(crate::views::findings::IDS);
    clap::builder::PossibleValuesParser::new(ids)
}

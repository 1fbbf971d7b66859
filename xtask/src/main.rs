//! Tasks cargo alone cannot do: run the kernel tests, the demo and the benchmark inside a VM
//! (virtme-ng + qemu + Debian's 6.1 kernel, which has kprobes and BTF).
//!
//!   cargo xtask test        unit and native tests, then the kernel tests in the VM
//!   cargo xtask demo        overlay-trace run on a demo workload in the VM
//!   cargo xtask bench       copy-up and lookup storms: bare, overlay-trace, bpftrace (in the VM)
//!   cargo xtask vm -- CMD   any command in the VM (the repo is shared, read-write)

mod bench;
mod test;
mod vm;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};

use vm::in_vm;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every test: natively (unit tests, preflight, this kernel's verifier), then in the VM.
    Test {
        /// Skip the VM part.
        #[arg(long)]
        native_only: bool,
        /// Skip the other kernels of the matrix (6.12, 5.10, built-in overlay): only Debian's
        /// 6.1 in the VM.
        #[arg(long)]
        no_matrix: bool,
        /// Only the matrix's tests on this kernel (6.12, 5.10 or builtin), nothing else.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["native_only", "no_matrix"])]
        kernel: Option<String>,
    },
    /// Boot the VM and show `overlay-trace run` on a demo overlay workload.
    Demo,
    /// Benchmark probe overhead in the VM (ratios vs bare and vs bpftrace).
    Bench {
        /// Alternating rounds per configuration.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Run a shell command inside the VM.
    Vm {
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// (inside the VM) one timed storm, run under each tracer.
    #[command(hide = true)]
    BenchWorkload { storm: String, merged: PathBuf },
    /// (inside the VM) the benchmark workload driver.
    #[command(hide = true)]
    BenchInVm {
        #[arg(long)]
        rounds: usize,
        #[arg(long)]
        tracer: PathBuf,
    },
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn run(mut c: Command) -> Result<()> {
    let st = c.status().with_context(|| format!("cannot start {c:?}"))?;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    Ok(())
}

/// Whether this process runs as root (from /proc: no extra dependency).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().nth(1))
            .is_some_and(|e| e == "0")
    })
}

fn build_tracer(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "overlay-trace"]);
    if release {
        c.arg("--release");
    }
    run(c)?;
    Ok(workspace().join(if release {
        "target/release/overlay-trace"
    } else {
        "target/debug/overlay-trace"
    }))
}

fn demo() -> Result<()> {
    let tracer = build_tracer(true)?;
    let script = workspace().join("xtask/demo.sh");
    let code = in_vm(&format!("bash {} {}", script.display(), tracer.display()))?;
    if code != 0 {
        bail!("demo failed in the VM (exit {code})");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.task {
        Task::Test {
            native_only,
            no_matrix,
            kernel,
        } => test::test(native_only, no_matrix, kernel.as_deref()),
        Task::Demo => demo(),
        // Release build: the benchmark measures what users run.
        Task::Bench { rounds } => build_tracer(true).and_then(|t| bench::host(rounds, &t)),
        Task::BenchInVm { rounds, tracer } => bench::in_vm(rounds, &tracer),
        Task::BenchWorkload { storm, merged } => bench::workload(&storm, &merged),
        Task::Vm { cmd } => in_vm(&cmd.join(" ")).and_then(|c| {
            if c == 0 {
                Ok(())
            } else {
                Err(anyhow!("exit {c}"))
            }
        }),
    };
    if let Err(e) = r {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

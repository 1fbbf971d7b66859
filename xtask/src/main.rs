//! Tasks cargo alone cannot do: run the kernel tests, the demo and the benchmark inside a VM
//! (virtme-ng + qemu + Debian's 6.1 kernel, which has kprobes and BTF).
//!
//!   cargo xtask test        unit and native tests, then the kernel tests in the VM
//!   cargo xtask demo        overlay-trace run on a demo workload in the VM
//!   cargo xtask bench       copy-up and lookup storms: bare, overlay-trace, bpftrace (in the VM)
//!   cargo xtask vm -- CMD   any command in the VM (the repo is shared, read-write)

mod bench;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};

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

/// The newest Debian kernel image in /boot (`linux-image-amd64`), or $OVERLAY_TRACE_VM_KERNEL.
fn vm_kernel() -> Result<PathBuf> {
    if let Some(k) = std::env::var_os("OVERLAY_TRACE_VM_KERNEL") {
        return Ok(PathBuf::from(k));
    }
    let mut images: Vec<PathBuf> = fs::read_dir("/boot")
        .context("/boot")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    images.sort();
    images.pop().ok_or_else(|| {
        anyhow!("no /boot/vmlinuz-*: run scripts/install-deps (installs linux-image-amd64)")
    })
}

/// The line the guest prints last: its script's exit code. Read from the VM's console output,
/// which reaches the host wherever the checkout is (a file the guest writes under /tmp would stay
/// in the guest's own overlay there).
const EXIT_MARKER: &str = "OVERLAY_TRACE_VM_EXIT=";

/// Runs `script` (bash) as root inside the VM; returns its exit code.
fn in_vm(script: &str) -> Result<i32> {
    let out = workspace().join("target/vm");
    fs::create_dir_all(&out)?;
    let body = out.join("script.sh");
    fs::write(
        &body,
        format!(
            "#!/bin/bash\ncd {ws}\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n({script})\necho {EXIT_MARKER}$?\n",
            ws = workspace().display(),
        ),
    )?;
    let kernel = vm_kernel()?;
    println!(
        "xtask: booting {} in qemu (no KVM; about 30 s)",
        kernel.display()
    );
    let booted = std::time::Instant::now();
    // vng re-opens the terminal it was given, writing from offset 0 when that is a file: pass
    // its output through a pipe so a log file keeps everything before it.
    let mut child = Command::new("vng")
        .args(["--run"])
        .arg(&kernel)
        .args(["--disable-kvm", "--memory", "2G", "--cpus", "2", "--rw"])
        // Debian's kernel enables AppArmor, and dockerd then wants apparmor_parser for every
        // container; the tests do not need it.
        .args(["--append", "apparmor=0", "--exec"])
        .arg(format!("bash {}", body.display()))
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start vng: run scripts/install-deps (installs virtme-ng and qemu)")?;
    let mut code = None;
    if let Some(out) = child.stdout.take() {
        use std::io::{BufRead as _, Write as _};
        let mut reader = std::io::BufReader::new(out);
        let mut line = Vec::new();
        let stdout = std::io::stdout();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).context("VM output")? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if let Some(rest) = text
                .trim_end()
                .rsplit(EXIT_MARKER)
                .next()
                .filter(|_| text.contains(EXIT_MARKER))
            {
                code = rest.trim().parse::<i32>().ok();
            }
            let mut o = stdout.lock();
            o.write_all(&line)?;
            o.flush()?;
        }
    }
    let st = child.wait()?;
    println!(
        "xtask: the VM ran for {:.0} s",
        booted.elapsed().as_secs_f64()
    );
    code.ok_or_else(|| anyhow!("the VM ended without running the script to the end (vng: {st})"))
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

/// Test executables of the integration-test package, built but not run.
fn integration_test_binaries() -> Result<Vec<PathBuf>> {
    let out = cargo()
        .args([
            "test",
            "--package",
            "overlay-trace-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "building the integration tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let Some(exe) = v["executable"].as_str() {
                if v["target"]["kind"][0] == "test" {
                    bins.push(PathBuf::from(exe));
                }
            }
        }
    }
    Ok(bins)
}

fn test(native_only: bool) -> Result<()> {
    // The integration tests run the overlay-trace binary, which `cargo test` does not build.
    let tracer = build_tracer(false)?;
    println!("xtask: native tests (unit tests, preflight on this kernel, this kernel's verifier)");
    let mut c = cargo();
    c.args(["test"]);
    run(c)?;
    if native_only {
        return Ok(());
    }
    let bins = integration_test_binaries()?;
    println!("xtask: kernel tests in the VM");
    let mut script = String::from("set -e\n");
    for b in &bins {
        script.push_str(&format!(
            "OVERLAY_TRACE_BIN={} {} --include-ignored --test-threads=1\n",
            tracer.display(),
            b.display()
        ));
    }
    let code = in_vm(&script)?;
    if code != 0 {
        bail!("kernel tests in the VM failed (exit {code})");
    }
    println!("xtask: all tests passed");
    Ok(())
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
        Task::Test { native_only } => test(native_only),
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

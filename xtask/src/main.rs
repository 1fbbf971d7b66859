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
    in_vm_on(&vm_kernel()?, script, "")
}

/// Runs `script` (bash) as root inside the VM booted with `kernel`; returns its exit code. Each
/// line the VM prints is printed with `label` before it (VMs that run at once keep apart), and
/// the script file is the label's own.
fn in_vm_on(kernel: &Path, script: &str, label: &str) -> Result<i32> {
    let out = workspace().join("target/vm");
    fs::create_dir_all(&out)?;
    let own: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let body = out.join(format!("script{own}.sh"));
    fs::write(
        &body,
        format!(
            "#!/bin/bash\ncd {ws}\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n({script})\necho {EXIT_MARKER}$?\n",
            ws = workspace().display(),
        ),
    )?;
    let kvm = kvm_works(kernel);
    println!(
        "{label}xtask: booting {} in qemu ({})",
        kernel.display(),
        if kvm {
            "with KVM"
        } else {
            "no KVM: software emulation, about 30 s to boot"
        }
    );
    let booted = std::time::Instant::now();
    // vng re-opens the terminal it was given, writing from offset 0 when that is a file: pass
    // its output through a pipe so a log file keeps everything before it.
    let mut vng = Command::new("vng");
    vng.args(["--run"]).arg(kernel);
    if !kvm {
        vng.arg("--disable-kvm");
    }
    let mut child = vng
        .args(["--memory", "2G", "--cpus", "2", "--rw"])
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
            o.write_all(label.as_bytes())?;
            o.write_all(&line)?;
            o.flush()?;
        }
    }
    let st = child.wait()?;
    println!(
        "{label}xtask: the VM ran for {:.0} s",
        booted.elapsed().as_secs_f64()
    );
    code.ok_or_else(|| anyhow!("the VM ended without running the script to the end (vng: {st})"))
}

/// Whether the VM can use KVM here: `/dev/kvm` usable and a quick probe boot that reaches its
/// command within a minute (on some hosts qemu aborts on an MSR, or nested virtualisation hangs
/// the guest at boot). `OVERLAY_TRACE_KVM=0|1` decides instead. The answer is kept in
/// target/vm/kvm-probe.
fn kvm_works(kernel: &Path) -> bool {
    match std::env::var("OVERLAY_TRACE_KVM").as_deref() {
        Ok("0") => return false,
        Ok("1") => return true,
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let cache = workspace().join("target/vm/kvm-probe");
    // One answer per machine: whether qemu can use KVM here does not depend on the guest kernel.
    let key = "kvm";
    if let Some(answer) = fs::read_to_string(&cache)
        .ok()
        .and_then(|t| t.strip_prefix(&format!("{key} ")).map(str::to_string))
    {
        return answer.trim() == "yes";
    }
    println!(
        "xtask: probing KVM with a short boot (once; the answer is kept in {})",
        cache.display()
    );
    let marker = "OVERLAY_TRACE_KVM_OK";
    let _ = fs::create_dir_all(workspace().join("target/vm"));
    let out_file = workspace().join("target/vm/kvm-probe.out");
    let ok = match fs::File::create(&out_file).and_then(|out| {
        use std::os::unix::process::CommandExt as _;
        Command::new("vng")
            .args(["--run"])
            .arg(kernel)
            .args([
                "--memory",
                "512M",
                "--cpus",
                "1",
                "--exec",
                &format!("echo {marker}"),
            ])
            .current_dir(workspace())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::null())
            // Its own process group: a hung guest is killed with qemu and all.
            .process_group(0)
            .spawn()
    }) {
        Err(_) => false,
        Ok(mut c) => {
            let start = std::time::Instant::now();
            while matches!(c.try_wait(), Ok(None))
                && start.elapsed() < std::time::Duration::from_secs(60)
            {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .status();
                let _ = c.wait();
            }
            fs::read_to_string(&out_file).is_ok_and(|o| o.contains(marker))
        }
    };
    let _ = fs::create_dir_all(workspace().join("target/vm"));
    let _ = fs::write(&cache, format!("{key} {}\n", if ok { "yes" } else { "no" }));
    ok
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

/// The other kernels of the matrix, fetched by scripts/fetch-kernels (cached), and the tests
/// each runs: this kernel's verifier over every program (the preflight tests), and the core
/// copy-up and lookup tests (against the upper dir and bpftrace, fentry and kprobes where both
/// are possible, and against each other).
/// The tests of the other kernels, one VM each.
fn matrix(tracer: &Path, bins: &[PathBuf], only: Option<&str>) -> Result<()> {
    let mut kernels: Vec<(String, PathBuf)> = Vec::new();
    if only.is_none_or(|k| k != "builtin") {
        let out = Command::new(workspace().join("scripts/fetch-kernels"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("scripts/fetch-kernels")?;
        if !out.status.success() {
            bail!("scripts/fetch-kernels failed");
        }
        for p in String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
        {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(|v| v.split('.').take(2).collect::<Vec<_>>().join("."))
                .unwrap_or_default();
            kernels.push((name, p));
        }
    }
    if only.is_none_or(|k| k == "builtin") {
        // Overlay built into vmlinux: built from Debian's source once per machine (cached).
        let started = std::time::Instant::now();
        let out = Command::new(workspace().join("scripts/build-builtin-kernel"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("scripts/build-builtin-kernel")?;
        if !out.status.success() {
            bail!("scripts/build-builtin-kernel failed");
        }
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !p.is_file() {
            bail!("scripts/build-builtin-kernel printed no kernel image");
        }
        println!(
            "xtask: kernel matrix: the built-in overlay kernel took {:.0} s to get",
            started.elapsed().as_secs_f64()
        );
        kernels.push(("builtin".into(), p));
    }
    if let Some(k) = only {
        kernels.retain(|(name, _)| name == k);
        if kernels.is_empty() {
            bail!("no kernel {k:?} in the matrix (6.12, 5.10, builtin)");
        }
    }
    if kernels.is_empty() {
        bail!("scripts/fetch-kernels printed no kernel image");
    }
    let find = |name: &str| {
        bins.iter().find(|b| {
            b.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(name))
        })
    };
    let (Some(kernel_trace), Some(preflight), Some(triggers)) =
        (find("kernel_trace-"), find("preflight-"), find("triggers-"))
    else {
        bail!("test binaries not found");
    };
    let mut failed = Vec::new();
    for (name, k) in &kernels {
        let started = std::time::Instant::now();
        println!("xtask: kernel matrix: {}", k.display());
        let script = format!(
            "failed=0\n\
             export OVERLAY_TRACE_TEST_OUT={ws}/target/test-out/{name}\n\
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {p} --include-ignored --test-threads=1 || failed=1\n\
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {kt} --include-ignored --test-threads=1 --exact copy_ups_and_lookups_match_the_kernel traced_command_status_is_returned a_reused_device_number_never_names_a_mount_after_the_next || failed=1\n\
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {tr} --include-ignored --test-threads=1 || failed=1\n\
             exit $failed\n",
            t = tracer.display(),
            p = preflight.display(),
            kt = kernel_trace.display(),
            tr = triggers.display(),
            ws = workspace().display(),
        );
        let code = in_vm_on(k, &script, &format!("[{name}] "))?;
        println!(
            "xtask: kernel matrix: {} took {:.0} s",
            k.display(),
            started.elapsed().as_secs_f64()
        );
        if code != 0 {
            failed.push(k.display().to_string());
        }
    }
    if !failed.is_empty() {
        bail!("kernel tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Seconds one VM test may take (the slowest take about 6 minutes under emulation).
const TEST_TIME_MAX: u32 = 1200;

fn test(native_only: bool, no_matrix: bool, kernel: Option<&str>) -> Result<()> {
    if !is_root() {
        bail!(
            "the tests need root: natively they load eBPF programs into this kernel and mount tmpfs \
             and overlays, and the VM they boot runs as root (try: sudo -E env PATH=$PATH cargo xtask test)"
        );
    }
    let started = std::time::Instant::now();
    // The integration tests run the overlay-trace binary, which `cargo test` does not build.
    // Release, as users run it: under emulation a debug build takes 15 s to start and stop
    // (parsing the kernel's BTF), a release build 5 s, and the tests start it hundreds of times.
    let tracer = build_tracer(true)?;
    if let Some(k) = kernel {
        matrix(&tracer, &integration_test_binaries()?, Some(k))?;
        println!(
            "xtask: the tests on {k} passed in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    println!("xtask: native tests (unit tests, preflight on this kernel, this kernel's verifier)");
    let mut c = cargo();
    c.args(["test"]).env("OVERLAY_TRACE_BIN", &tracer);
    run(c)?;
    println!(
        "xtask: native tests took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if native_only {
        return Ok(());
    }
    // The deployment files' checks need no kernel: they ran natively above.
    let bins: Vec<PathBuf> = integration_test_binaries()?
        .into_iter()
        .filter(|b| {
            b.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !n.starts_with("deploy-"))
        })
        .collect();
    println!(
        "xtask: kernel tests in the VM (one boot, every test binary; each test's time is printed)"
    );
    // Every test runs even when one fails, so one run shows every failure; each runs alone
    // (`--exact`) so its time is printed, and the slow ones are plain to see; one that hangs is
    // killed after TEST_TIME_MAX seconds (a failure, not a run that never ends).
    let mut script = String::from("failed=''\n");
    for b in &bins {
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("tests");
        let name = name.rsplit_once('-').map_or(name, |(n, _)| n);
        script.push_str(&format!(
            "t=$(date +%s)\n\
             for test in $({bin} --list --include-ignored --format terse | sed -n 's/: test$//p'); do\n\
               s=$(date +%s)\n\
               OVERLAY_TRACE_BIN={tracer} timeout --kill-after=10 {TEST_TIME_MAX} {bin} --include-ignored --test-threads=1 --exact \"$test\" || failed=\"$failed {name}::$test\"\n\
               echo \"xtask: {name}::$test took $(( $(date +%s) - s )) s\"\n\
             done\n\
             echo \"xtask: {name} took $(( $(date +%s) - t )) s\"\n",
            tracer = tracer.display(),
            bin = b.display(),
        ));
    }
    script.push_str(
        "if [ -n \"$failed\" ]; then echo \"xtask: failed in the VM:$failed\"; exit 1; fi\n",
    );
    // The guest mostly keeps one core busy: the built-in overlay kernel (built once per machine,
    // minutes on 2 cores) is built meanwhile on the other, at the lowest priority. The other
    // kernels' VMs boot after this one, not beside it: a second emulated guest slows both, and
    // tests that time what the tracer does within 0.3 s then fail (measured).
    let builtin = (!no_matrix).then(build_builtin_in_background).flatten();
    let vm_started = std::time::Instant::now();
    let code = in_vm(&script);
    println!(
        "xtask: the VM part took {:.0} s; all tests {:.0} s",
        vm_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if let Some(mut b) = builtin {
        // Done or not, it is waited for: the matrix's own call then finds it in the cache (or
        // builds it, saying why).
        if matches!(code, Ok(0)) {
            let _ = b.wait();
        } else {
            // Its own process group: make and the compilers go with it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", b.id())])
                .status();
            let _ = b.wait();
        }
    }
    let code = code?;
    if code != 0 {
        bail!("kernel tests in the VM failed (exit {code})");
    }
    if !no_matrix {
        matrix(&tracer, &bins, None)?;
    }
    println!(
        "xtask: all tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts `scripts/build-builtin-kernel` at the lowest priority, its output in
/// target/vm/builtin-build.log; None if it cannot start (the matrix then builds it itself).
fn build_builtin_in_background() -> Option<std::process::Child> {
    let log = workspace().join("target/vm/builtin-build.log");
    let _ = fs::create_dir_all(workspace().join("target/vm"));
    let out = fs::File::create(&log).ok()?;
    let err = out.try_clone().ok()?;
    println!(
        "xtask: building the built-in overlay kernel beside the VM (if not cached; log: {})",
        log.display()
    );
    use std::os::unix::process::CommandExt as _;
    Command::new("nice")
        .args(["-n", "19"])
        .arg(workspace().join("scripts/build-builtin-kernel"))
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .ok()
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
        } => test(native_only, no_matrix, kernel.as_deref()),
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

//! `cargo xtask test`: the native tests, then every integration test in one boot of the 6.1
//! VM (each test alone, its time printed), then the kernel matrix, one boot per kernel.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::vm::{VmDied, in_vm, in_vm_on};
use crate::{build_tracer, cargo, is_root, run, workspace};

/// Test executables of the integration-test package, built but not run.
fn integration_test_binaries() -> Result<Vec<PathBuf>> {
    let out = cargo()
        .args([
            "test",
            "--release",
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

/// What `scripts/<name>` prints, its errors passed through.
fn script_output(name: &str) -> Result<String> {
    let out = Command::new(workspace().join("scripts").join(name))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("scripts/{name}"))?;
    if !out.status.success() {
        bail!("scripts/{name} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shell line that runs test binary `bin` (with `args`) in a VM: the tracer named, killed
/// after TEST_TIME_MAX seconds (a failure, not a run that never ends), `on_failure` run if it
/// fails.
fn test_command(tracer: &Path, bin: &Path, args: &str, on_failure: &str) -> String {
    format!(
        "OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {b} --include-ignored --test-threads=1 {args} || {on_failure}",
        t = tracer.display(),
        b = bin.display(),
    )
}

/// The built-in overlay kernel: built from Debian's source once per machine (cached; a build
/// started earlier in the background is waited for, the script holding a lock).
fn builtin_kernel() -> Result<PathBuf> {
    let started = std::time::Instant::now();
    let p = PathBuf::from(script_output("build-builtin-kernel")?.trim());
    if !p.is_file() {
        bail!("scripts/build-builtin-kernel printed no kernel image");
    }
    println!(
        "xtask: kernel matrix: the built-in overlay kernel took {:.0} s to get",
        started.elapsed().as_secs_f64()
    );
    Ok(p)
}

/// The fetched kernels of the matrix (scripts/fetch-kernels, cached), by short version.
fn fetched_kernels() -> Result<Vec<(String, PathBuf)>> {
    Ok(script_output("fetch-kernels")?
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(|v| v.split('.').take(2).collect::<Vec<_>>().join("."))
                .unwrap_or_default();
            (name, p)
        })
        .collect())
}

/// The tests of the other kernels, one VM each: this kernel's verifier over every program (the
/// preflight tests), the core copy-up and lookup tests (against the upper dir and bpftrace,
/// fentry and kprobes where both are possible, and against each other) and, but on 5.10, the
/// system call behind each copy-up. Two VMs run at once (5.10 in one lane; 6.12, then the built-in kernel,
/// in the other): the host has two cores, and none of these tests times the tracer.
fn matrix(tracer: &Path, bins: &[PathBuf], only: Option<&str>) -> Result<()> {
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
    let script = |name: &str| {
        let mut lines = vec![
            format!(
                "export OVERLAY_TRACE_TEST_OUT={}/target/test-out/{name}",
                workspace().display()
            ),
            test_command(tracer, preflight, "", "failed=1"),
            test_command(
                tracer,
                kernel_trace,
                "--exact copy_ups_and_lookups_match_the_kernel traced_command_status_is_returned",
                "failed=1",
            ),
        ];
        // Not on 5.10, the longest lane's kernel, so that the matrix ends sooner.
        if name != "5.10" {
            lines.push(test_command(tracer, triggers, "", "failed=1"));
        }
        format!("failed=0\n{}\nexit $failed\n", lines.join("\n"))
    };
    let wanted = |k: &str| only.is_none_or(|o| o == k);
    let fetched = if only.is_none_or(|o| o != "builtin") {
        fetched_kernels()?
    } else {
        Vec::new()
    };
    if only.is_some_and(|o| o != "builtin" && !fetched.iter().any(|(n, _)| n == o)) {
        bail!("no kernel {only:?} in the matrix (6.12, 5.10, builtin)");
    }
    // One kernel's boot: its name, and whether every test passed (an error says why not).
    let boot = |name: &str, kernel: Result<PathBuf>| -> (String, Result<bool>) {
        let r = kernel.and_then(|k| {
            let started = std::time::Instant::now();
            println!("xtask: kernel matrix: {}", k.display());
            let label = format!("[{name}] ");
            let code = match in_vm_on(&k, &script(name), &label) {
                // Twice under a loaded host (two VMs, builds) a 5.10 guest died, once before
                // its script began: booted once more, the death printed.
                Err(e) if e.is::<VmDied>() => {
                    println!("{label}xtask: {e:#}; booting it once more");
                    in_vm_on(&k, &script(name), &label)?
                }
                r => r?,
            };
            println!(
                "xtask: kernel matrix: {name} took {:.0} s",
                started.elapsed().as_secs_f64()
            );
            Ok(code == 0)
        });
        (name.to_string(), r)
    };
    let mut lanes: [Vec<(String, Option<PathBuf>)>; 2] = [Vec::new(), Vec::new()];
    for (name, path) in fetched.into_iter().filter(|(n, _)| wanted(n)) {
        let lane = usize::from(name != "5.10");
        lanes[lane].push((name, Some(path)));
    }
    if wanted("builtin") {
        // Last in its lane: the build may still be running.
        lanes[1].push(("builtin".into(), None));
    }
    if lanes.iter().all(Vec::is_empty) {
        bail!("scripts/fetch-kernels printed no kernel image");
    }
    let results: Vec<(String, Result<bool>)> = std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|lane| {
                s.spawn(|| {
                    lane.iter()
                        .map(|(name, path)| {
                            let kernel = match path {
                                Some(p) => Ok(p.clone()),
                                None => builtin_kernel(),
                            };
                            boot(name, kernel)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(name, r)| match r {
            Ok(true) => None,
            Ok(false) => Some(name),
            Err(e) => Some(format!("{name} ({e:#})")),
        })
        .collect();
    if !failed.is_empty() {
        bail!("kernel tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The test binaries that start a real dockerd (`runtimes::Dockerd`).
const DOCKERD_TESTS: [&str; 5] = ["docker", "findings", "fleet", "runtimes", "top"];

/// Stops the dockerd the Docker tests shared (its pid file is under `runtimes::ROOT`), waiting
/// up to 60 s for it to go: the tests after them expect no dockerd.
const STOP_SHARED_DOCKERD: &str = "p=/run/overlay-trace-docker/docker.pid\n\
    if [ -s $p ] && kill $(cat $p) 2>/dev/null; then\n\
      for _ in $(seq 120); do [ -e /proc/$(cat $p 2>/dev/null || echo 0) ] && sleep 0.5 || break; done\n\
    fi\n\
    echo \"xtask: the shared dockerd is stopped\"\n";

/// Seconds one VM test may take (the slowest take about 6 minutes under emulation).
const TEST_TIME_MAX: u32 = 1200;

pub fn test(native_only: bool, no_matrix: bool, kernel: Option<&str>) -> Result<()> {
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
    // The built-in overlay kernel (built once per machine, minutes on 2 cores) is built from the
    // start, at the lowest priority, beside the builds and the tests: its lane of the matrix
    // waits for it. Killed if the run stops early.
    let _builtin = (!native_only && !no_matrix && kernel.is_none())
        .then(Background::build_builtin)
        .flatten();
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
    // Release, like the tracer: the dependencies (and the eBPF object) are built once, not
    // again in the debug profile (minutes on a fresh machine).
    c.args(["test", "--release"])
        .env("OVERLAY_TRACE_BIN", &tracer);
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
    // The tests that run a real dockerd share one (started by the first, stopped after the
    // last): they run one after another, first.
    let uses_dockerd = |name: &str| DOCKERD_TESTS.contains(&name);
    let short = |b: &PathBuf| -> String {
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("tests");
        name.rsplit_once('-').map_or(name, |(n, _)| n).to_string()
    };
    let (docker_bins, other_bins): (Vec<&PathBuf>, Vec<&PathBuf>) =
        bins.iter().partition(|b| uses_dockerd(&short(b)));
    for (i, b) in docker_bins.iter().chain(&other_bins).enumerate() {
        let name = short(b);
        let shared = if uses_dockerd(&name) {
            "OVERLAY_TRACE_SHARED_DOCKERD=1 "
        } else {
            ""
        };
        script.push_str(&format!(
            "t=$(date +%s)\n\
             for test in $({bin} --list --include-ignored --format terse | sed -n 's/: test$//p'); do\n\
               s=$(date +%s)\n\
               {shared}{command}\n\
               echo \"xtask: {name}::$test took $(( $(date +%s) - s )) s\"\n\
             done\n\
             echo \"xtask: {name} took $(( $(date +%s) - t )) s\"\n",
            command = test_command(
                &tracer,
                b,
                "--exact \"$test\"",
                &format!("failed=\"$failed {name}::$test\""),
            ),
            bin = b.display(),
        ));
        if i + 1 == docker_bins.len() {
            script.push_str(STOP_SHARED_DOCKERD);
        }
    }
    script.push_str(
        "if [ -n \"$failed\" ]; then echo \"xtask: failed in the VM:$failed\"; exit 1; fi\n",
    );
    // The other kernels' VMs boot after this one, not beside it: a second emulated guest slows
    // both, and tests that time what the tracer does within 0.3 s then fail (measured).
    let vm_started = std::time::Instant::now();
    let code = in_vm(&script);
    println!(
        "xtask: the VM part took {:.0} s; all tests {:.0} s",
        vm_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
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

/// A build running in the background in its own process group, killed with its compilers when
/// dropped (a finished one is only reaped).
struct Background(std::process::Child);

impl Background {
    /// Starts `scripts/build-builtin-kernel` at the lowest priority, its output in
    /// target/vm/builtin-build.log; None if it cannot start (the matrix then builds it itself).
    fn build_builtin() -> Option<Self> {
        let log = workspace().join("target/vm/builtin-build.log");
        let _ = fs::create_dir_all(workspace().join("target/vm"));
        let out = fs::File::create(&log).ok()?;
        let err = out.try_clone().ok()?;
        println!(
            "xtask: building the built-in overlay kernel in the background (if not cached; log: {})",
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
            .map(Self)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
        }
        let _ = self.0.wait();
    }
}

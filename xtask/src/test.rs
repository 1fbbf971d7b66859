//! `cargo xtask test`: the native tests, then every integration test in one boot of the 6.1
//! VM (each test alone, its time printed), then the kernel matrix, one boot per kernel.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::vm::{in_vm, in_vm_on};
use crate::{build_tracer, cargo, is_root, run, workspace};

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
    let (Some(kernel_trace), Some(preflight), Some(triggers), Some(naming)) = (
        find("kernel_trace-"),
        find("preflight-"),
        find("triggers-"),
        find("mount_naming-"),
    ) else {
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
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {kt} --include-ignored --test-threads=1 --exact copy_ups_and_lookups_match_the_kernel traced_command_status_is_returned || failed=1\n\
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {mn} --include-ignored --test-threads=1 --exact a_reused_device_number_never_names_a_mount_after_the_next || failed=1\n\
             OVERLAY_TRACE_BIN={t} timeout --kill-after=10 {TEST_TIME_MAX} {tr} --include-ignored --test-threads=1 || failed=1\n\
             exit $failed\n",
            t = tracer.display(),
            p = preflight.display(),
            kt = kernel_trace.display(),
            mn = naming.display(),
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

//! Preflight and bad input, against the real kernel the test runs on: natively on the host (no
//! kprobes, fentry refused) and in the VM (Debian 6.1, kprobes). The oracle for "has kprobes" is
//! the kernel's own sysfs/tracefs, not the tool.

use std::{path::Path, process::Command};

use overlay_trace_tests::{bin, overlay_trace, stderr, stdout};

fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || Path::new("/sys/kernel/tracing/kprobe_events").exists()
        || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
}

fn assert_one_line_error(o: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn check_tells_the_truth_about_kprobes() {
    let o = overlay_trace(&["check"]);
    let out = stdout(&o);
    if kernel_has_kprobes() {
        assert!(out.contains("kprobes:         yes"), "{out}");
        assert!(out.contains("run:             will work"), "{out}");
        assert_eq!(o.status.code(), Some(0), "{out}");
        // The oracle for "will work": attaching for real.
        let run = overlay_trace(&["run", "-q", "--duration", "1s"]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "check said run will work, but: {}",
            stderr(&run)
        );
        assert!(stdout(&run).contains("overlay-trace"), "{}", stdout(&run));
    } else {
        assert!(
            out.contains("kprobes:         no: this kernel has no kprobes"),
            "{out}"
        );
        assert_eq!(o.status.code(), Some(1), "{out}");
        let run = overlay_trace(&["run", "--duration", "1s"]);
        assert_one_line_error(&run, 1, "cannot attach kprobes (CONFIG_KPROBES is off");
        assert_eq!(stderr(&run).lines().count(), 1, "{}", stderr(&run));
    }
}

/// The kernel's verifier (this host's 6.18 natively, 6.1 in the VM) accepts every program.
#[test]
fn verifier_accepts_every_program() {
    let out = stdout(&overlay_trace(&["check"]));
    assert!(
        out.contains("verifier:        accepts all 15 programs"),
        "{out}"
    );
    assert!(out.contains("fentry:"), "{out}");
}

#[test]
fn bad_usage_exits_2_without_panicking() {
    assert_one_line_error(
        &overlay_trace(&["run", "--duration", "abc"]),
        2,
        "invalid value 'abc' for '--duration",
    );
    assert_one_line_error(
        &overlay_trace(&["run", "--pid", "0"]),
        2,
        "invalid value '0' for '--pid",
    );
    assert_one_line_error(
        &overlay_trace(&["run", "--bogus"]),
        2,
        "unexpected argument '--bogus'",
    );
    assert_one_line_error(
        &overlay_trace(&["frobnicate"]),
        2,
        "unrecognized subcommand",
    );
}

#[test]
fn unprivileged_run_is_refused_clearly() {
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin())
        .args(["run", "--duration", "1s"])
        .output()
        .expect("setpriv");
    assert_one_line_error(
        &o,
        1,
        "overlay-trace needs root (or CAP_BPF and CAP_PERFMON)",
    );
}

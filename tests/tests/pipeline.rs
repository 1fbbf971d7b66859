//! The pipeline in the VM: a killed run keeps its events, a copy-up that fails before it copies
//! is a failure (not a wait), and stopping without tracefs misses no return. (Paths that do not
//! answer: `stuck_paths.rs`.)

use std::{fs, io::Write as _, path::PathBuf, process::Command, time::Duration};

use overlay_trace_tests::attached::{AttachedRun as Run, mount_of};
use overlay_trace_tests::{Overlay, out_dir, read_events, read_json, sh, stderr, tracer};
use serde_json::Value;

/// A run killed with SIGKILL keeps what it recorded: the file at the `--events` path replays
/// everything up to the cut, with a warning.
#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn a_killed_run_keeps_its_events() {
    let ov = Overlay::build(1, "", |o| {
        for i in 0..6 {
            o.put(0, &format!("d/f{i}"), 4096);
        }
    });
    let events = out_dir().join("killed.ndjson");
    let _ = fs::remove_file(&events);
    let mut run = Run::start("killed", &["--events", events.to_str().unwrap()]);
    for i in 0..6 {
        sh(&format!("echo x >> {}/d/f{i}", ov.merged().display()));
    }
    // Flushed at least once a second.
    std::thread::sleep(Duration::from_millis(2500));
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let _ = Command::new("pkill")
        .args(["-f", &run.ready.display().to_string()])
        .status();
    // Cut the last line in the middle too, as a kill mid-write would.
    let mut f = fs::OpenOptions::new().append(true).open(&events).unwrap();
    f.write_all(b"{\"type\":\"copy_up\",\"pid\":1,\"tg")
        .unwrap();
    drop(f);
    let json = out_dir().join("killed.json");
    let o = tracer()
        .arg("report")
        .arg(&events)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the last line was cut short"),
        "{}",
        stderr(&o)
    );
    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let m = mount_of(&report, &ov.dev());
    assert_eq!(
        m["copy_up"]["count"].as_u64(),
        Some(ov.upper_paths().len() as u64)
    );
}

/// A copy-up that fails before it can copy (an unprivileged user in its own user namespace
/// appends to a world-writable lower file whose owner is not mapped there: the kernel refuses
/// with EOVERFLOW) is a failure with its errno, not a wait, in the report, the events and
/// /metrics.
#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn a_copy_up_that_fails_before_copying_is_a_failure() {
    let r = PathBuf::from(format!("/run/ot-eoverflow-{}", std::process::id()));
    fs::create_dir_all(r.join("lower")).unwrap();
    fs::create_dir_all(r.join("rw")).unwrap();
    sh(&format!(
        "chmod 755 {r} {r}/lower && echo data > {r}/lower/f && chown 1234:1234 {r}/lower/f && \
         chmod 666 {r}/lower/f && chmod 777 {r}/rw",
        r = r.display()
    ));
    let (json, events) = (
        out_dir().join("eoverflow.json"),
        out_dir().join("eoverflow.ndjson"),
    );
    let mut run = Run::start(
        "eoverflow",
        &[
            "--json",
            json.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
    );
    let script = format!(
        "mount -t tmpfs t {r}/rw && mkdir {r}/rw/u {r}/rw/w {r}/rw/m && \
         mount -t overlay overlay -o lowerdir={r}/lower,upperdir={r}/rw/u,workdir={r}/rw/w {r}/rw/m && \
         grep \" {r}/rw/m \" /proc/self/mountinfo | cut -d' ' -f3 && \
         (echo more >> {r}/rw/m/f; true)",
        r = r.display()
    );
    let tenant = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-Urm",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    assert!(tenant.status.success(), "{}", stderr(&tenant));
    assert!(
        stderr(&tenant).contains("Value too large"),
        "the kernel refused the write with EOVERFLOW: {}",
        stderr(&tenant)
    );
    let dev = String::from_utf8_lossy(&tenant.stdout).trim().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    assert!(run.child.wait().unwrap().code().is_some());
    let lines = read_events(&events);
    let ups: Vec<&Value> = lines
        .iter()
        .filter(|e| e["type"] == "copy_up" && e["dev"] == dev)
        .collect();
    assert_eq!(ups.len(), 1, "{lines:?}");
    assert_eq!(ups[0]["ret"], -75);
    assert_ne!(ups[0]["waited"], true);
    let report: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let m = mount_of(&report, &dev);
    assert_eq!(
        (
            m["copy_up"]["count"].as_u64(),
            m["copy_up"]["failed"].as_u64(),
            m["copy_up"]["waited"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let _ = fs::remove_dir_all(&r);
}

/// Without tracefs (kprobes made through the perf PMU), stopping the tracer while lookups keep
/// coming adds no missed return: every entry probe goes first, and calls still in flight get to
/// return before their return probes go.
#[test]
#[ignore = "needs kprobes on overlayfs (runs in the VM)"]
fn stopping_without_tracefs_misses_no_return() {
    let ov = Overlay::build(1, "", |o| o.put(0, "etc/f", 10));
    let json = out_dir().join("perf-stop.json");
    let _ = fs::remove_file(&json);
    let m = ov.merged().display().to_string();
    // The storm's progress: the tracer stops once it made 20 lookups (a fixed time made 7 on a
    // loaded host), more still in flight.
    let count = out_dir().join("perf-stop.count");
    let _ = fs::remove_file(&count);
    // In a mount namespace of its own, tracefs is unmounted for the tracer alone.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; \
         if [ -e /sys/kernel/tracing/kprobe_events ] || [ -e /sys/kernel/debug/tracing/kprobe_events ]; \
         then echo 'tracefs still mounted' >&2; exit 9; fi; \
         exec {bin} run -q --probes kprobe --json {json} -- sh -c \
         '(i=0; while :; do i=$((i+1)); ls {m}/nope-stop-$i; echo $i > {count}; done) >/dev/null 2>&1 & \
          t=0; while [ $(cat {count} 2>/dev/null || echo 0) -lt 20 ] && [ $t -lt 600 ]; do sleep 0.2; t=$((t+1)); done'",
        bin = overlay_trace_tests::bin().display(),
        json = json.display(),
        count = count.display(),
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = Command::new("pkill").args(["-f", "nope-stop-"]).status();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = read_json(&json);
    let probes = r["probes"].as_array().unwrap();
    assert!(
        probes
            .iter()
            .all(|p| p["hits"].is_null() && p["kind"].as_str().unwrap().contains("probe")),
        "perf-PMU kprobes (no tracefs counts): {probes:?}"
    );
    let lookups = mount_of(&r, &ov.dev())["lookup"]["count"].as_u64().unwrap();
    assert!(lookups > 10, "the storm ran under the tracer: {lookups}");
    assert_eq!(r["events"]["missed_return_lookup"], 0, "{}", r["events"]);
    assert_eq!(r["events"]["missed_return_copy_up"], 0, "{}", r["events"]);
}

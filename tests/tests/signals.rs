//! A signal that ends a run, whenever it comes while the tracer starts (preflight, making the
//! tracefs events, loading and attaching), leaves nothing behind: no tracefs event, no BPF
//! program, no temporary output file, and the previous report intact.

use std::{
    fs,
    path::Path,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use overlay_trace_tests::attached::{bpf_programs, tracer_kprobe_events};
use overlay_trace_tests::{Overlay, out_dir, read_json, stderr, tracer};

/// Nanoseconds since the epoch.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The files of `dir` whose names end in `.tmp` (the outputs' temporary files).
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
#[ignore = "needs kprobes on overlayfs (runs in the VM)"]
fn a_signal_while_the_tracer_starts_leaves_nothing_behind() {
    let ov = Overlay::build(1, "", |o| {
        for k in 0..21 {
            o.put(0, &format!("f{k}"), 10);
        }
    });
    let dir = out_dir().join("signals");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (json, events) = (dir.join("report.json"), dir.join("events.ndjson"));
    let stamp = ov.root.join("stamp");
    let traced = |script: &str| {
        tracer()
            .run()
            .with(&["--probes", "kprobe"])
            .json(&json)
            .events(&events)
            .sh(script)
    };

    // The previous report, and how long the tracer takes from its start to its first event
    // (its command starts once the probes are attached, and copies up at once).
    let started = now_ns();
    let o = traced(&format!(
        "date +%s%N > {}; echo x >> {}/f20",
        stamp.display(),
        ov.merged().display()
    ))
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let first_event: u128 = fs::read_to_string(&stamp).unwrap().trim().parse().unwrap();
    let to_first = Duration::from_nanos((first_event - started) as u64);
    println!("from start to the first event: {to_first:?}");
    let mut previous = fs::read(&json).unwrap();
    assert!(tracer_kprobe_events().is_empty(), "a run leaves no event");
    let programs = bpf_programs();

    // Ten moments from the start to the first event, SIGHUP and SIGINT by turns (each run costs
    // a start and a stop of the tracer: seconds under emulation).
    for k in 0..10u32 {
        let (signal, name) = [(libc::SIGHUP, "SIGHUP"), (libc::SIGINT, "SIGINT")][k as usize % 2];
        let at = to_first * k / 10;
        let mut child = traced(&format!(
            "echo x >> {}/f{k}; exec sleep 60",
            ov.merged().display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        std::thread::sleep(at);
        unsafe { libc::kill(child.id() as i32, signal) };
        let asked = Instant::now();
        while child.try_wait().unwrap().is_none() {
            // Removing kprobes waits for the kernel, slow under emulation.
            if asked.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("{name} at {at:?}: the tracer did not end within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let said = child.wait_with_output().unwrap();
        let what = format!("{name} at {at:?} ({}): {}", said.status, stderr(&said));
        assert!(!stderr(&said).contains("panicked"), "{what}");
        // The kernel lets go of a closed perf event or program a little after the process
        // is gone (more so with a kernel build beside the VM): what is still there after
        // 15 s was left behind. (A bpftrace of an earlier test may still be letting go of
        // its own programs: never more than before.)
        let t = Instant::now();
        loop {
            let (left, now) = (tracer_kprobe_events(), bpf_programs());
            if left.is_empty() && now <= programs {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{what}: left behind: probe events {left:?}, {now} programs (were {programs})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(temp_files(&dir), Vec::<String>::new(), "{what}");
        // The report is the previous one, or a whole new one from a run that began tracing.
        let now = fs::read(&json).unwrap();
        if now != previous {
            assert!(read_json(&json)["mounts"].is_array(), "{what}");
            previous = now;
        }
    }
}

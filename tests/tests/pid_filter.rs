//! `--pid`: the filter is applied in the kernel; the oracle is which process copied up what.

use std::{fs, process::Command};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{Overlay, out_dir, read_events, stderr};

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn pid_filter_is_applied_in_the_kernel() {
    let ov = Overlay::build(1, "", |o| {
        o.put(0, "f", 10);
        o.put(0, "g", 10);
    });
    let dev = ov.dev();
    let events = out_dir().join("pid_filter.ndjson");
    let run = |pid: &str, file: &str| {
        let o = tracer()
            .run()
            .with(&["--pid", pid])
            .events(&events)
            .sh(&format!("echo x >> {}/{file}", ov.merged().display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        read_events(&events)
            .into_iter()
            .filter(|e| e["dev"] == dev.as_str() && e["type"] == "copy_up")
            .count()
    };
    // Trace only pid 1 (init): the shell's copy-up must not be reported.
    assert_eq!(run("1", "f"), 0);
    assert!(ov.upper().join("f").exists(), "the copy-up did happen");
    // Positive control: the same workload traced by the pid that does it. The traced command is
    // started after the probes attach, so its pid is not known before: trace a shell that waits
    // for its own pid to be traced, then writes.
    let ready = ov.root.join("pid");
    let go = ov.root.join("go");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {r}; while [ ! -e {g} ]; do sleep 0.1; done; echo x >> {m}/g",
            r = ready.display(),
            g = go.display(),
            m = ov.merged().display()
        ))
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let pid = loop {
        if let Some(p) = fs::read_to_string(&ready)
            .ok()
            .filter(|s| s.ends_with('\n'))
        {
            break p.trim().to_string();
        }
        assert!(started.elapsed().as_secs() < 30);
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let o = tracer()
        .run()
        .with(&["--pid", &pid])
        .events(&events)
        .sh(&format!(
            "touch {}; while [ ! -e {}/g ]; do sleep 0.1; done; sleep 0.5",
            go.display(),
            ov.upper().display()
        ))
        .output()
        .unwrap();
    writer.wait().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mine: Vec<String> = read_events(&events)
        .into_iter()
        .filter(|e| e["dev"] == dev.as_str() && e["type"] == "copy_up")
        .map(|e| format!("{} {}", e["path"], e["tgid"]))
        .collect();
    assert_eq!(
        mine,
        vec![format!("\"/g\" {pid}")],
        "the traced pid's copy-up, and only it"
    );
}

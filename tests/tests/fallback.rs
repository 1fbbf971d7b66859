//! `--probes auto` plans fentry/fexit from static facts; the kernel may still refuse one
//! function's trampoline (it holds at most 38 links on x86-64, BPF_MAX_TRAMP_LINKS). That
//! function must be traced with kprobes instead, `check` and the report saying why, every
//! call still counted.

use std::fs;

use overlay_trace_tests::{Bpftrace, Overlay, bpftrace_map, out_dir, read_events, read_json};
use overlay_trace_tests::{overlay_trace, stderr, stdout, tracer};

/// The kernel's limit of fentry + fexit links on one function (x86-64).
const TRAMP_LINKS: usize = 38;

/// The function whose trampoline is filled.
const FUNCTION: &str = "ovl_copy_up_one";

#[test]
#[ignore = "needs fentry on overlayfs (runs in the VM)"]
fn a_full_trampoline_falls_back_to_kprobes() {
    let ov = Overlay::build(1, "", |o| {
        for i in 0..8 {
            o.put(0, &format!("d/f{i}"), 100);
        }
    });
    let dev = ov.kernel_dev();
    // bpftrace fills ovl_copy_up_one's trampoline to one below the limit: the tracer's fexit
    // goes in, its fentry is refused, and the fexit must come out again (the harder case; a
    // trampoline full to the limit refuses the fexit first). bpftrace's kprobes count the calls
    // on our overlay. (Each kfunc program costs bpftrace about a second to attach under
    // emulation: one trampoline only.)
    let mut program = String::new();
    for i in 0..TRAMP_LINKS - 1 {
        program += &format!("kfunc:overlay:{FUNCTION} {{ @f{i} = count(); }}\n");
    }
    for (function, map) in [("ovl_lookup", "l"), ("ovl_copy_up_one", "c")] {
        program += &format!(
            "kprobe:{function} /((struct dentry *)arg1)->d_sb->s_dev == {dev}/ {{ @{map} = count(); }}\n"
        );
    }
    let bt = Bpftrace::start(&program, out_dir().join("fallback.bt"));

    let check = overlay_trace(&["check"]);
    let said = stdout(&check);
    assert!(
        said.lines()
            .any(|l| l.contains(FUNCTION) && l.contains("refused at attach")),
        "check does not say {FUNCTION} falls back:\n{said}"
    );

    let (json, events) = (
        out_dir().join("fallback.json"),
        out_dir().join("fallback.ndjson"),
    );
    let o = tracer()
        .run()
        .json(&json)
        .events(&events)
        .sh(&format!(
            "cd {}; for i in 0 1 2 3 4 5 6 7; do echo x >> d/f$i; done; ls d/missing 2>/dev/null; true",
            ov.merged().display()
        ))
        .output()
        .unwrap();
    let out = bt.stop();
    assert!(o.status.success(), "{}", stderr(&o));
    let warned = stderr(&o);
    let report = read_json(&json);
    let probes = report["probes"].as_array().unwrap();
    assert!(
        warned.contains(&format!("fentry/fexit refused on {FUNCTION}")),
        "{warned}"
    );
    let mine: Vec<_> = probes
        .iter()
        .filter(|p| p["function"] == FUNCTION)
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "{FUNCTION}: {mine:?}");
    assert!(
        kinds.contains(&"kprobe") && kinds.contains(&"kretprobe"),
        "{FUNCTION}: {mine:?}"
    );
    assert!(
        mine.iter()
            .all(|p| p["fallback"].as_str().is_some_and(|r| !r.is_empty())),
        "{FUNCTION}: the report says why: {mine:?}"
    );
    // The other functions keep fentry/fexit.
    for function in ["ovl_lookup", "ovl_lookup_layer"] {
        assert!(
            probes
                .iter()
                .any(|p| p["function"] == function && p["kind"] == "fentry"),
            "{probes:?}"
        );
    }
    let text = stdout(&o);
    assert!(
        text.contains(&format!("note: kprobes on {FUNCTION}: the kernel refused")),
        "{text}"
    );

    // Every call counted, against the upper dir and bpftrace.
    let lines = read_events(&events);
    let ours = |kind: &str| {
        lines
            .iter()
            .filter(|e| e["type"] == kind && e["dev"] == ov.dev().as_str())
            .count() as u64
    };
    let upper = ov.upper_paths();
    assert_eq!(upper.len(), 9, "{upper:?}");
    assert_eq!(ours("copy_up"), upper.len() as u64);
    assert_eq!(bpftrace_map(&out, "c").get(""), Some(&(upper.len() as u64)));
    assert_eq!(Some(&ours("lookup")), bpftrace_map(&out, "l").get(""));
    let ev = &report["events"];
    for loss in [
        "missed_return_copy_up",
        "missed_return_lookup",
        "orphan_returns",
    ] {
        assert_eq!(ev[loss], 0, "{loss}: {ev}");
    }
    let _ = fs::remove_file(&events);
}

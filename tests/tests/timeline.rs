//! `run --trace`: the Chrome trace timeline of real copy-ups, checked against the upper
//! directory and the events file.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{Overlay, assert_replay_equals_live, out_dir, read_events, stderr};

/// `run --trace`: a Chrome trace timeline. Valid JSON; every event has `ph`, `ts`, `pid` and
/// `tid`; slices on one thread nest or follow each other; one slice per copy-up, named by its
/// path (the upper dir is the oracle for which), with the duration `--events` gives it; the
/// track named after the mount.
#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_timeline_has_a_slice_per_copy_up() {
    let ov = Overlay::build(2, "", |o| {
        o.put(0, "a/one", 4096);
        o.put(1, "b/two", 1 << 20);
        o.put(1, "c/three", 10);
        for i in 0..20 {
            o.put(1, &format!("d/f{i}"), 100);
        }
    });
    let dir = out_dir();
    let (trace, events, live) = (
        dir.join("timeline.json"),
        dir.join("timeline.ndjson"),
        dir.join("timeline-report.json"),
    );
    let m = ov.merged();
    let o = tracer()
        .args(["run", "-q", "--trace", trace.to_str().unwrap()])
        .args(["--events", events.to_str().unwrap()])
        .args(["--json", live.to_str().unwrap(), "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "echo x >> {m}/a/one & echo y >> {m}/b/two & wait; chmod 600 {m}/c/three; \
                 for i in $(seq 0 19); do echo z >> {m}/d/f$i; done; ls {m}/nothere* 2>/dev/null; true",
                m = m.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&trace).unwrap())
        .expect("the trace is valid JSON");
    let evs = v.as_array().expect("a JSON array");
    for e in evs {
        for k in ["ph", "ts", "pid", "tid"] {
            assert!(!e[k].is_null(), "{k} missing in {e}");
        }
    }
    let dev = ov.dev();
    let ours: Vec<serde_json::Value> = read_events(&events)
        .into_iter()
        .filter(|e| e["dev"] == dev.as_str() && e["type"] == "copy_up")
        .collect();
    // The track of our mount: the one its copy-up slices are on.
    let slices: Vec<&serde_json::Value> = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "copy_up")
        .collect();
    let upper: BTreeSet<String> = ov.upper_paths().into_iter().collect();
    let named: BTreeSet<String> = slices
        .iter()
        .filter(|s| upper.contains(s["name"].as_str().unwrap()))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(named, upper, "one slice per copied-up object");
    let track = slices
        .iter()
        .find(|s| upper.contains(s["name"].as_str().unwrap()))
        .unwrap()["pid"]
        .clone();
    let mut on_track: Vec<(String, i64)> = slices
        .iter()
        .filter(|s| s["pid"] == track)
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (s["dur"].as_f64().unwrap() * 1000.0).round() as i64,
            )
        })
        .collect();
    let mut from_events: Vec<(String, i64)> = ours
        .iter()
        .filter(|e| e["waited"].as_bool() != Some(true))
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["duration_ns"].as_i64().unwrap(),
            )
        })
        .collect();
    on_track.sort();
    from_events.sort();
    assert_eq!(on_track.len(), upper.len());
    assert_eq!(on_track, from_events, "durations as --events gives them");
    // Per thread, slices nest or follow each other (1 µs of rounding allowed).
    let mut by_thread: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for s in evs.iter().filter(|e| e["ph"] == "X") {
        by_thread
            .entry((s["pid"].to_string(), s["tid"].to_string()))
            .or_default()
            .push((s["ts"].as_f64().unwrap(), s["dur"].as_f64().unwrap()));
    }
    for (thread, mut spans) in by_thread {
        spans.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mut open: Vec<f64> = Vec::new();
        for (ts, dur) in spans {
            while open.last().is_some_and(|end| *end <= ts + 0.001) {
                open.pop();
            }
            if let Some(end) = open.last() {
                assert!(
                    ts + dur <= end + 0.001,
                    "{thread:?}: a slice at {ts} overlaps one ending at {end}"
                );
            }
            open.push(ts + dur);
        }
    }
    let name = evs
        .iter()
        .find(|e| e["name"] == "process_name" && e["pid"] == track)
        .expect("the track is named");
    assert_eq!(
        name["args"]["name"].as_str().unwrap(),
        m.to_str().unwrap(),
        "named after the mount point"
    );
    assert!(
        evs.iter().any(|e| e["ph"] == "C" && e["pid"] == track),
        "lookup counters"
    );
    // Process starts: `seq` and `ls` ran in the shell's cgroup, which worked on our overlay.
    for prog in ["seq", "ls"] {
        assert!(
            evs.iter().any(|e| e["ph"] == "i"
                && e["pid"] == track
                && e["name"] == format!("exec {prog}").as_str()),
            "the start of {prog} is on the track"
        );
    }
    assert_replay_equals_live(&events, &live);

    // The same timeline as a static picture, from the events file.
    let svg = dir.join("timeline.svg");
    let o = tracer()
        .arg("report")
        .arg(&events)
        .arg("--timeline")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(m.to_str().unwrap()));
    assert!(
        svg.matches("fill=\"#1F77B4\"").count() > upper.len(),
        "a bar per copy-up"
    );
}

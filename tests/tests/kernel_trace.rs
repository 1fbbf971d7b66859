//! Real overlayfs events on a real kernel: these need kprobes, so they are ignored natively and
//! run in the VM (`cargo xtask test`). Every number is checked against something overlay-trace
//! did not compute: the upper directory, the lower files' sizes and layers, and bpftrace counting
//! the same kernel functions over the same workload.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt as _,
    process::Command,
};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{
    Bpftrace, Overlay, assert_replay_equals_live, bpftrace_map, out_dir, read_events, stderr,
    stdout,
};
use serde_json::Value;

fn metacopy_enabled() -> bool {
    fs::read_to_string("/sys/module/overlay/parameters/metacopy").is_ok_and(|s| s.trim() == "Y")
}

/// Whether this kernel's BTF describes overlay's own types: the module's BTF, or overlay built in
/// (not in /proc/modules). Without it, fentry cannot attach to overlay and lookups cannot tell
/// upper from lower.
fn overlay_btf() -> bool {
    let module = fs::read_to_string("/proc/modules")
        .is_ok_and(|m| m.lines().any(|l| l.starts_with("overlay ")));
    !module || std::path::Path::new("/sys/kernel/btf/overlay").exists()
}

/// What one backend saw: path -> (size, data bytes), and the lookups of the overlay.
type Seen = (BTreeMap<String, (u64, Option<u64>)>, usize);

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn copy_ups_and_lookups_match_the_kernel() {
    // kprobes everywhere, then what `auto` picks (fentry/fexit where overlay has BTF): each
    // checked against the kernel on its own, and both must see the same.
    let kprobes = trace_and_check("kprobe");
    if overlay_btf() {
        let auto = trace_and_check("auto");
        assert_eq!(
            auto, kprobes,
            "fentry/fexit and kprobes see the same copy-ups and lookups"
        );
    }
}

fn trace_and_check(probes: &str) -> Seen {
    const MISSING: usize = 300;
    const NAMES: usize = 60;
    let ov = Overlay::build(3, "", |o| {
        o.put(0, "empty", 0);
        o.put(1, "four_k", 4096);
        o.put(2, "one_m", 1 << 20);
        o.put(0, "big/sixteen_m", 16 << 20);
        o.put(1, "modes/chmod_me", 8192);
        o.put(2, "trunc/truncate_me", 65536);
        o.put(2, "deep/a/b/c/existing", 10);
        for i in 0..NAMES {
            o.put(i % 3, &format!("names/file{i}"), 100);
        }
    });
    let dir = out_dir();
    let events = dir.join(format!("kernel_trace_{probes}.ndjson"));
    let report = dir.join(format!("kernel_trace_{probes}.json"));
    let workload = format!(
        "set -e; cd {m}
         echo x >> empty; echo x >> four_k; echo x >> one_m; echo x >> big/sixteen_m
         chmod 600 modes/chmod_me
         : > trunc/truncate_me
         touch deep/a/b/c/new_file
         for i in $(seq 0 {last}); do [ -e names/file$i ]; done
         for i in $(seq 1 {MISSING}); do [ -e names/missing$i ] || true; done",
        m = ov.merged().display(),
        last = NAMES - 1
    );

    // The data copy is ovl_copy_up_file on 6.1+, ovl_copy_up_data before; `len` is the 4th
    // argument of both here (5.10+). Counted per superblock where bpftrace can read struct
    // dentry (kernel BTF it understands); otherwise (5.10) for the whole guest, which runs
    // nothing else on overlayfs meanwhile.
    let data_fn = if fs::read_to_string("/proc/kallsyms")
        .unwrap()
        .contains(" ovl_copy_up_file")
    {
        "ovl_copy_up_file"
    } else {
        "ovl_copy_up_data"
    };
    let bt_file = dir.join(format!("kernel_trace_{probes}.bpftrace"));
    let (bt, per_sb) = match Bpftrace::try_start(
        &format!(
            "kprobe:ovl_copy_up_one {{ @copyups[((struct dentry *)arg1)->d_sb->s_dev] = count(); }}
             kprobe:{data_fn} {{ @data[((struct dentry *)arg1)->d_sb->s_dev] = sum(arg3); }}"
        ),
        bt_file.clone(),
    ) {
        Some(bt) => (bt, true),
        None => (
            Bpftrace::start(
                &format!(
                    "kprobe:ovl_copy_up_one {{ @copyups = count(); }} kprobe:{data_fn} {{ @data = sum(arg3); }}"
                ),
                bt_file,
            ),
            false,
        ),
    };
    let o = tracer()
        .args([
            "run",
            "-q",
            "--probes",
            probes,
            "--events",
            events.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
            "--",
        ])
        .args(["sh", "-c", &workload])
        .output()
        .unwrap();
    let bt_out = bt.stop();
    assert!(o.status.success(), "overlay-trace failed: {}", stderr(&o));
    println!("{}", stdout(&o));

    let dev = ov.dev();
    let all = read_events(&events);
    let mine: Vec<&Value> = all.iter().filter(|e| e["dev"] == dev.as_str()).collect();
    let copy_ups: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|e| e["type"] == "copy_up")
        .collect();
    let lookups: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|e| e["type"] == "lookup")
        .collect();

    // 1. The copied-up set is what the upper directory holds from below.
    let traced: BTreeSet<String> = copy_ups
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    let from_below: BTreeSet<String> = ov
        .upper_paths()
        .into_iter()
        .filter(|p| ov.from_below(&p[1..]).is_some())
        .collect();
    assert_eq!(traced, from_below, "copy-ups vs upper dir");
    assert!(
        from_below.contains("/deep/a/b/c"),
        "parent copy-up expected: {from_below:?}"
    );
    assert_eq!(copy_ups.len(), traced.len(), "each object copied up once");

    // 2. Sizes, types and data bytes against the lower files.
    let metacopy = metacopy_enabled();
    for e in &copy_ups {
        let path = e["path"].as_str().unwrap();
        let (_, lower) = ov.from_below(&path[1..]).unwrap();
        assert_eq!(e["ret"], 0, "{e}");
        assert_eq!(
            e["mode"].as_u64().unwrap() as u32 & libc::S_IFMT,
            lower.mode() & libc::S_IFMT,
            "{e}"
        );
        if lower.is_file() {
            assert_eq!(e["size"].as_u64().unwrap(), lower.len(), "size of {path}");
        }
        let data = e["data"]["bytes"].as_u64();
        let appended = ["/four_k", "/one_m", "/big/sixteen_m"].contains(&path);
        if appended || (path == "/modes/chmod_me" && !metacopy) {
            assert_eq!(data, Some(lower.len()), "data bytes of {path}");
            assert!(
                e["data"]["ns"].as_u64().unwrap() > 0
                    && e["data"]["ns"].as_u64() <= e["duration_ns"].as_u64()
            );
        }
        if lower.is_dir() {
            assert_eq!(data, None, "no data copy for {path}");
        }
        if path == "/empty" {
            // 6.1+ skip the data copy of an empty file; 5.10 calls it with len 0.
            assert!(
                matches!(data, None | Some(0)),
                "no data copied for {path}: {e}"
            );
        }
        assert!(e["duration_ns"].as_u64().unwrap() > 0);
    }

    // 3. Counts and bytes agree with bpftrace on the same functions.
    let kdev = if per_sb {
        ov.kernel_dev().to_string()
    } else {
        String::new()
    };
    let bt_copyups = bpftrace_map(&bt_out, "copyups");
    let bt_data = bpftrace_map(&bt_out, "data");
    assert_eq!(
        bt_copyups.get(&kdev).copied(),
        Some(copy_ups.len() as u64),
        "bpftrace: {bt_out}"
    );
    let data_sum: u64 = copy_ups
        .iter()
        .filter_map(|e| e["data"]["bytes"].as_u64())
        .sum();
    assert_eq!(
        bt_data.get(&kdev).copied().unwrap_or(0),
        data_sum,
        "bpftrace: {bt_out}"
    );

    // 4. Lookups: every missing name is one negative lookup; names found below report the
    //    layers consulted (names/ has no upper dir, so layer k of the lowers means k + 1 calls).
    assert!(!ov.upper().join("names").exists());
    let negative: BTreeSet<&str> = lookups
        .iter()
        .filter(|e| {
            e["outcome"] == "negative" && e["name"].as_str().unwrap().starts_with("missing")
        })
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<String> = (1..=MISSING).map(|i| format!("missing{i}")).collect();
    assert_eq!(
        negative,
        expected.iter().map(|s| s.as_str()).collect::<BTreeSet<_>>()
    );
    let by_name: BTreeMap<&str, &Value> = lookups
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), *e))
        .collect();
    for i in 0..NAMES {
        let e = by_name
            .get(format!("file{i}").as_str())
            .unwrap_or_else(|| panic!("no lookup of file{i}"));
        let expected = if overlay_btf() {
            "lower_only"
        } else {
            "positive"
        };
        assert_eq!(e["outcome"], expected, "{e}");
        assert_eq!(e["layers"].as_u64().unwrap() as usize, i % 3 + 1, "{e}");
    }
    for e in lookups.iter().filter(|e| {
        e["outcome"] == "negative" && e["name"].as_str().unwrap().starts_with("missing")
    }) {
        assert_eq!(e["layers"], 3, "a miss consults every lower layer: {e}");
    }

    // 5. The JSON report names the mount and carries the same totals.
    let r: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["schema_version"], 1);
    let m = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dev"] == dev.as_str())
        .expect("mount in report");
    assert_eq!(m["mount"]["mount_point"], ov.merged().to_str().unwrap());
    assert_eq!(m["mount"]["upperdir"], ov.upper().to_str().unwrap());
    assert_eq!(m["mount"]["lowerdirs"].as_array().unwrap().len(), 3);
    assert_eq!(
        m["copy_up"]["count"].as_u64().unwrap() as usize,
        copy_ups.len()
    );
    assert_eq!(m["copy_up"]["data_bytes"].as_u64().unwrap(), data_sum);
    assert_eq!(
        m["copy_up"]["slowest"][0]["path"], "/big/sixteen_m",
        "the 16 MiB copy is the slowest"
    );
    assert!(m["lookup"]["negative"].as_u64().unwrap() >= MISSING as u64);
    assert_eq!(r["events"]["dropped_copy_up"], 0);
    assert_eq!(r["events"]["dropped_lookup"], 0);
    assert!(stdout(&o).contains(&format!("overlay {} (dev {dev})", ov.merged().display())));

    // 6. The report records the backend: what was asked for, or what `auto` picks (for
    // overlay's functions: the sync probe, on the kernel's vfs_fsync, is a kprobe always).
    let kinds: BTreeSet<&str> = r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["function"] != "vfs_fsync")
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = if probes == "kprobe" || !overlay_btf() {
        ["kprobe", "kretprobe"].into()
    } else {
        ["fentry", "fexit"].into()
    };
    assert_eq!(kinds, expected, "{}", r["probes"]);
    assert!(stdout(&o).contains(if expected.contains("fentry") {
        "probes: fentry/fexit on "
    } else {
        "probes: kprobes on "
    }));

    let seen = copy_ups
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap().to_string();
            (
                path,
                (e["size"].as_u64().unwrap(), e["data"]["bytes"].as_u64()),
            )
        })
        .collect();
    (seen, lookups.len())
}

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
            .args([
                "run",
                "-q",
                "--pid",
                pid,
                "--events",
                events.to_str().unwrap(),
                "--",
            ])
            .args([
                "sh",
                "-c",
                &format!("echo x >> {}/{file}", ov.merged().display()),
            ])
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
        .args([
            "run",
            "-q",
            "--pid",
            &pid,
            "--events",
            events.to_str().unwrap(),
            "--",
        ])
        .args([
            "sh",
            "-c",
            &format!(
                "touch {}; while [ ! -e {}/g ]; do sleep 0.1; done; sleep 0.5",
                go.display(),
                ov.upper().display()
            ),
        ])
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

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn mountinfo_names_an_overlay_mounted_for_the_test() {
    // The parser against the kernel's own mountinfo, with an overlay whose layers we know
    // (including a space in a path, which mountinfo escapes).
    let ov = Overlay::build(2, "", |_| {});
    let spaced = ov.root.join("with space");
    fs::create_dir_all(spaced.join("l")).unwrap();
    fs::create_dir_all(spaced.join("u")).unwrap();
    fs::create_dir_all(spaced.join("w")).unwrap();
    fs::create_dir_all(spaced.join("m")).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={s}/l:{l0},upperdir={s}/u,workdir={s}/w",
            s = spaced.display(),
            l0 = ov.lower(0).display()
        ))
        .arg(spaced.join("m"))
        .status()
        .unwrap();
    assert!(st.success());
    let mounts = overlay_trace::enrich::mountinfo::read_overlay_mounts().unwrap();
    let _ = Command::new("umount").arg(spaced.join("m")).status();
    let find = |dir: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        let d = fs::metadata(dir).ok().map(|m| m.dev());
        mounts
            .values()
            .find(|m| m.mount_point == dir.to_str().unwrap())
            .cloned()
            .map(|m| (m, d))
    };
    let (m, _) = find(&ov.merged()).expect("the test overlay is in mountinfo");
    assert_eq!(m.dev.to_string(), ov.dev());
    assert_eq!(
        m.lowerdirs,
        vec![
            ov.lower(0).display().to_string(),
            ov.lower(1).display().to_string()
        ]
    );
    assert_eq!(m.upperdir.as_deref(), Some(ov.upper().to_str().unwrap()));
    let spaced_mount = mounts
        .values()
        .find(|m| m.mount_point.ends_with("with space/m"))
        .expect("escaped mount point decoded");
    assert_eq!(
        spaced_mount.upperdir.as_deref(),
        Some(spaced.join("u").to_str().unwrap())
    );
    assert_eq!(spaced_mount.lowerdirs.len(), 2);
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn traced_command_status_is_returned() {
    let o = tracer()
        .args(["run", "-q", "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("overlay-trace"),
        "a report is printed: {}",
        stdout(&o)
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn unwritable_output_is_a_one_line_error() {
    let o = tracer()
        .args([
            "run",
            "--json",
            "/proc/no/such/dir/r.json",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot write the JSON report to /proc/no/such/dir/r.json"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

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

/// Docker's pattern, sharpened: an overlay mounted, copied up on and unmounted, and another
/// mounted on the same device number (the kernel hands out the lowest free one) within the same
/// millisecond, so mountinfo, however soon it is read, shows the second for the first's number.
/// The second's upper dir also holds the file copied up on the first, so that this evidence
/// alone cannot tell them apart; every other round gives paths relative to the mounter's
/// directory, as Docker does for long layer lists. No mount is named after the other: a named
/// mount's upper dir is its own.
#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_reused_device_number_never_names_a_mount_after_the_next() {
    const ROUNDS: usize = 16;
    let root = std::path::Path::new("/run/ot-reuse");
    let (ready, done) = (root.join("ready"), root.join("done"));
    /// Leaves nothing behind when an assertion fails midway: the traced command ends, the
    /// mounts go, the directory is left.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::env::set_current_dir("/");
            let _ = fs::write(self.0.join("done"), "");
            let _ = Command::new("umount").arg(self.0.join("m")).status();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    fs::create_dir_all(root).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mount -t tmpfs tmpfs {r} && cd {r} && mkdir l m && \
             for i in $(seq 1 {ROUNDS}); do echo a > l/a$i; echo b > l/b$i; \
             mkdir -p a$i/u a$i/w b$i/u b$i/w; echo old > b$i/u/a$i; done",
            r = root.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let _cleanup = Cleanup(root.to_path_buf());
    let dir = out_dir();
    let (events, report) = (dir.join("reuse.ndjson"), dir.join("reuse.json"));
    // The traced command only waits: it starts once the probes are attached.
    let tracer = tracer()
        .args(["run", "-q", "--events", events.to_str().unwrap()])
        .args(["--json", report.to_str().unwrap(), "--", "sh", "-c"])
        .arg(format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.1; done",
            ready.display(),
            done.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !ready.exists() {
        assert!(waited.elapsed().as_secs() < 120, "the tracer never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::env::set_current_dir(root).unwrap();
    // The upper dir as round i's mount options give it.
    let upper = |side: &str, i: usize| {
        let rel = format!("{side}{i}/u");
        if i.is_multiple_of(2) {
            rel
        } else {
            root.join(rel).display().to_string()
        }
    };
    let mount = |side: &str, i: usize| {
        let work = upper(side, i).replace("/u", "/w");
        let opts = format!("lowerdir=l,upperdir={},workdir={work}", upper(side, i));
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        // SAFETY: valid C strings.
        let r = unsafe {
            libc::mount(
                c("overlay").as_ptr(),
                c("m").as_ptr(),
                c("overlay").as_ptr(),
                0,
                c(&opts).as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount {opts}: {}", std::io::Error::last_os_error());
    };
    let umount = || {
        // SAFETY: valid C string.
        let r = unsafe { libc::umount(c"m".as_ptr()) };
        assert_eq!(r, 0, "umount: {}", std::io::Error::last_os_error());
    };
    let append = |name: String| {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(format!("m/{name}"))
            .unwrap();
        f.write_all(b"1\n").unwrap();
    };
    for i in 1..=ROUNDS {
        mount("a", i);
        append(format!("a{i}"));
        umount();
        mount("b", i);
        append(format!("b{i}"));
        std::thread::sleep(std::time::Duration::from_millis(300));
        umount();
    }
    std::env::set_current_dir("/").unwrap();
    fs::write(&done, "").unwrap();
    let o = tracer.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let mounts: Vec<Value> = read_events(&events)
        .into_iter()
        .filter(|e| e["type"] == "mount")
        .collect();
    assert_eq!(mounts.len(), 2 * ROUNDS, "one event per mount");
    let reused = (0..ROUNDS)
        .filter(|i| mounts[2 * i]["dev"] == mounts[2 * i + 1]["dev"])
        .count();
    println!("device number reused in {reused} of {ROUNDS} rounds");
    assert!(
        reused > 0,
        "the test needs the kernel to reuse device numbers"
    );

    // Every mount that copied up a file: named after its own upper dir, or not named at all.
    let r: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let (mut named, mut unnamed) = (0, 0);
    for m in r["mounts"].as_array().unwrap() {
        let Some(path) = m["copy_up"]["slowest"][0]["path"].as_str() else {
            continue;
        };
        let Some((side, i)) = path.strip_prefix('/').map(|f| f.split_at(1)) else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else {
            continue;
        };
        if !(side == "a" || side == "b") {
            continue;
        }
        match m["mount"]["upperdir"].as_str() {
            Some(u) => {
                assert_eq!(u, upper(side, i), "{path} named wrong: {m}");
                named += 1;
            }
            None => unnamed += 1,
        }
        if side == "b" {
            assert!(m["mount"].is_object(), "a mount alive 0.3 s is named: {m}");
        }
    }
    println!("mounts named {named}, unnamed {unnamed}");
    assert_eq!(
        named + unnamed,
        2 * ROUNDS,
        "every mount's copy-up reported"
    );
}

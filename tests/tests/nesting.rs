//! Nested overlays (an overlay whose lowerdir is another overlay's merged dir): a lookup in the
//! outer one makes the inner one look up too, on the same thread, inside the outer call. Each
//! return must pop its own frame, whichever of the two the device filter selects (a filtered
//! call's return once popped its caller's frame), under fentry/fexit and under kprobes.

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use overlay_trace_tests::{Bpftrace, bpftrace_map, out_dir, read_events, read_json, sh, tracer};

/// bpftrace's account of every `ovl_lookup`, nesting included (a per-thread stack): how many
/// calls per (superblock, name), and the longest one.
const LOOKUPS: &str = r#"
kprobe:ovl_lookup {
    $d = @depth[tid];
    @s[tid, $d] = nsecs;
    @nm[tid, $d] = str(((struct dentry *)arg1)->d_name.name);
    @dv[tid, $d] = ((struct dentry *)arg1)->d_sb->s_dev;
    @depth[tid] = $d + 1;
    @n[@dv[tid, $d], @nm[tid, $d]] = count();
}
kretprobe:ovl_lookup /@depth[tid] > 0/ {
    $d = @depth[tid] - 1;
    @depth[tid] = $d;
    @dur[@dv[tid, $d], @nm[tid, $d]] = max(nsecs - @s[tid, $d]);
}
"#;

/// "maj:min" of the mount at `point`.
fn dev_of(point: &Path) -> String {
    let o = Command::new("mountpoint")
        .arg("-d")
        .arg(point)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// bpftrace's key "46, r0f1" for an overlay's "0:46" and a name.
fn key(dev: &str, name: &str) -> String {
    let (major, minor) = dev.split_once(':').unwrap();
    let kernel = (major.parse::<u64>().unwrap() << 20) | minor.parse::<u64>().unwrap();
    format!("{kernel}, {name}")
}

#[test]
#[ignore = "needs kprobes or fentry on overlayfs (runs in the VM)"]
fn nested_overlays_keep_each_call_its_own_frame() {
    let r = Path::new("/run").join(format!("ot-nest-{}", std::process::id()));
    fs::create_dir_all(&r).unwrap();
    sh(&format!("mount -t tmpfs tmpfs {0}", r.display()));
    let runs = [
        ("outer", "auto"),
        ("inner", "auto"),
        ("outer", "kprobe"),
        ("inner", "kprobe"),
    ];
    // Each run looks up and copies up names of its own, all starting r<i>: r<i>/r<i>f<j>, and
    // r<i>/r<i>m<j> (missing).
    let mut setup = String::from("set -e; cd {R}; mkdir -p l u1 w1 m1 u2 w2 m2;");
    for i in 0..runs.len() {
        setup += &format!("mkdir l/r{i}; for j in 0 1 2 3 4 5; do echo $j > l/r{i}/r{i}f$j; done;");
    }
    setup += "mount -t overlay overlay -o lowerdir=l,upperdir=u1,workdir=w1 m1;";
    setup += "mount -t overlay overlay -o lowerdir=m1,upperdir=u2,workdir=w2 m2";
    sh(&setup.replace("{R}", &r.display().to_string()));
    let (inner, outer) = (dev_of(&r.join("m1")), dev_of(&r.join("m2")));

    let bt = Bpftrace::start(LOOKUPS, out_dir().join("nesting.bt"));
    let mut reports = Vec::new();
    for (i, (which, probes)) in runs.iter().enumerate() {
        let dev = if *which == "outer" { &outer } else { &inner };
        let (json, events) = (
            out_dir().join(format!("nesting-{i}.json")),
            out_dir().join(format!("nesting-{i}.ndjson")),
        );
        let m2 = r.join("m2");
        let o = tracer()
            .run()
            .with(&["--only-dev", dev, "--probes", probes])
            .json(&json)
            .events(&events)
            .sh(&format!(
                "cd {m}; cat r{i}/r{i}f* > /dev/null; for j in 0 1 2; do stat r{i}/r{i}m$j \
                 2>/dev/null; done; echo x >> r{i}/r{i}f0; echo x >> r{i}/r{i}f1",
                m = m2.display()
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        reports.push((i, *which, *probes, dev.clone(), json, events));
    }
    let out = bt.stop();
    let counts = bpftrace_map(&out, "n");
    let longest = bpftrace_map(&out, "dur");

    for (i, which, probes, dev, json, events) in reports {
        let what = format!("run {i}: --only-dev {which} ({dev}), --probes {probes}");
        let report = read_json(&json);
        let ev = &report["events"];
        for loss in [
            "orphan_returns",
            "missed_return_lookup",
            "missed_return_copy_up",
            "untracked_calls",
        ] {
            assert_eq!(ev[loss], 0, "{what}: {loss}: {ev}");
        }
        // fentry and fexit programs carry the kernel's count of runs it skipped (none here).
        for p in report["probes"].as_array().unwrap() {
            if p["kind"] == "fentry" || p["kind"] == "fexit" {
                assert_eq!(p["missed"], 0, "{what}: {p}");
            }
        }
        if probes == "auto" {
            assert!(
                report["probes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["kind"] == "fexit"),
                "{what}: fentry/fexit on 6.1: {}",
                report["probes"]
            );
        }
        let lines = read_events(&events);
        // Every call reported is one of the selected overlay's, under its own name.
        let mut mine: BTreeMap<String, u64> = BTreeMap::new();
        for e in lines.iter().filter(|e| e["type"] == "lookup") {
            assert_eq!(e["dev"], dev.as_str(), "{what}: {e}");
            let name = e["name"].as_str().unwrap();
            let k = key(&dev, name);
            *mine.entry(k.clone()).or_default() += 1;
            // Both tools' probes sit on the same calls, in an order neither controls: each one's
            // time includes the other's handlers, which take up to a few milliseconds under
            // emulation. A frame taken from the wrong call is off by far more.
            let took = e["duration_ns"].as_u64().unwrap();
            let bound = longest.get(&k).copied().unwrap_or(0);
            assert!(
                took <= bound + 5_000_000,
                "{what}: lookup of {name} took {took} ns, bpftrace's longest {bound} ns"
            );
        }
        // As many calls per name as the kernel made (bpftrace), for this run's names.
        let tag = format!("r{i}");
        let theirs: BTreeMap<String, u64> = counts
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&key(&dev, "")) && k.rsplit(", ").next().unwrap().starts_with(&tag)
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mine: BTreeMap<String, u64> = mine
            .into_iter()
            .filter(|(k, _)| k.rsplit(", ").next().unwrap().starts_with(&tag))
            .collect();
        assert!(!theirs.is_empty(), "{what}: bpftrace saw no lookup: {out}");
        assert_eq!(mine, theirs, "{what}");
        // Copy-ups happen in the outer overlay only: its upper dir says which.
        let copied: Vec<String> = lines
            .iter()
            .filter(|e| e["type"] == "copy_up")
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect();
        if which == "outer" {
            let mut want = vec![
                format!("/r{i}"),
                format!("/r{i}/r{i}f0"),
                format!("/r{i}/r{i}f1"),
            ];
            for p in &want {
                assert!(r.join("u2").join(&p[1..]).exists(), "{what}: {p}");
            }
            let mut copied = copied;
            copied.sort();
            want.sort();
            assert_eq!(copied, want, "{what}");
        } else {
            assert!(copied.is_empty(), "{what}: {copied:?}");
        }
    }
    let _ = Command::new("umount").args(["-R", "-l"]).arg(&r).status();
    let _ = fs::remove_dir_all(&r);
}

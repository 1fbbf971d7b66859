//! Real overlayfs events on a real kernel: these need kprobes, so they are ignored natively and
//! run in the VM (`cargo xtask test`). Every number is checked against something overlay-trace
//! did not compute: the upper directory, the lower files' sizes and layers, and bpftrace counting
//! the same kernel functions over the same workload.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt as _,
};

use overlay_trace_tests::tracer;
use overlay_trace_tests::{Bpftrace, Overlay, bpftrace_map, out_dir, read_events, stderr, stdout};
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

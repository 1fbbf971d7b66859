//! A busy host: storms of concurrent copy-ups and lookups, on fast and slow disks, and a tracer
//! attached mid-storm (`long_runs.rs` has the long runs). Real kernel events in the VM (`cargo
//! xtask test`); every count is checked against the upper directory, bpftrace, or the
//! workload's own known numbers.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use overlay_trace_tests::{Bpftrace, Overlay, bpftrace_map, out_dir, read_events, stderr, stdout};
use overlay_trace_tests::{disks::Disk, read_json, sh, tracer};
use serde_json::Value;

/// Copy-ups, waits and missed returns of one device in a report.
fn copy_up_totals(r: &Value, dev: &str) -> (u64, u64) {
    let m = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dev"] == dev)
        .expect("mount in report");
    (
        m["copy_up"]["count"].as_u64().unwrap(),
        m["copy_up"]["waited"].as_u64().unwrap(),
    )
}

/// A shell script: `n` processes each block on a FIFO, then all at once run `action` with `$i`
/// set to their number (0-based).
fn released_together(n: usize, fifo: &Path, action: &str) -> String {
    format!(
        "set -e; mkfifo {f}
         for i in $(seq 0 {last}); do ( cat {f} > /dev/null; {action} ) & done
         sleep 2; exec 3> {f}; exec 3>&-; wait",
        f = fifo.display(),
        last = n - 1
    )
}

const STORM: usize = 96;

fn storm_overlay() -> Overlay {
    Overlay::build(1, "", |o| {
        for i in 0..STORM {
            o.put(0, &format!("d/f{i}"), 1 << 20);
        }
    })
}

/// Runs the copy-up storm under the tracer with `maxactive`, beside bpftrace counting entries.
/// Returns (report, events, bpftrace's count of ovl_copy_up_one entries on the overlay).
fn copy_up_storm(
    ov: &Overlay,
    name: &str,
    probes: &str,
    maxactive: u32,
) -> (Value, Vec<Value>, u64) {
    let dir = out_dir();
    let (json, events) = (
        dir.join(format!("{name}.json")),
        dir.join(format!("{name}.ndjson")),
    );
    let fifo = ov.root.join(format!("{name}.fifo"));
    let bt = Bpftrace::start(
        "kprobe:ovl_copy_up_one { @entries[((struct dentry *)arg1)->d_sb->s_dev] = count(); }",
        dir.join(format!("{name}.bpftrace")),
    );
    let workload = released_together(
        STORM,
        &fifo,
        &format!("echo x >> {}/d/f$i", ov.merged().display()),
    );
    let o = tracer()
        .args([
            "run",
            "-q",
            "--probes",
            probes,
            "--maxactive",
            &maxactive.to_string(),
        ])
        .args([
            "--json",
            json.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &workload,
        ])
        .output()
        .unwrap();
    let bt_out = bt.stop();
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let entries = bpftrace_map(&bt_out, "entries")
        .get(&ov.kernel_dev().to_string())
        .copied()
        .unwrap_or(0);
    (read_json(&json), read_events(&events), entries)
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn copy_up_storm_reports_every_copy_up() {
    every_copy_up_of_a_storm("kprobe");
    // fexit has no ceiling at all: where overlay's BTF lets fentry attach, the same storm.
    if Path::new("/sys/kernel/btf/overlay").exists() {
        every_copy_up_of_a_storm("fentry");
    }
}

fn every_copy_up_of_a_storm(probes: &str) {
    let ov = storm_overlay();
    let (r, events, entries) = copy_up_storm(&ov, &format!("storm_{probes}"), probes, 4096);
    let dev = ov.dev();
    // The upper dir holds the 96 files and their parent directory, all from below.
    let from_below: BTreeSet<String> = ov
        .upper_paths()
        .into_iter()
        .filter(|p| ov.from_below(&p[1..]).is_some())
        .collect();
    assert_eq!(from_below.len(), STORM + 1, "{from_below:?}");
    let copied: Vec<String> = events
        .iter()
        .filter(|e| e["dev"] == dev.as_str() && e["type"] == "copy_up" && e["waited"] != true)
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(copied.len(), STORM + 1, "one copy-up per object");
    assert_eq!(
        copied.iter().cloned().collect::<BTreeSet<_>>(),
        from_below,
        "paths one for one"
    );
    let (count, waited) = copy_up_totals(&r, &dev);
    assert_eq!(count, STORM as u64 + 1);
    // Every call the kernel made is a copy-up or a wait for one (bpftrace counts entries).
    assert_eq!(
        count + waited,
        entries,
        "copies {count} + waits {waited} vs bpftrace entries {entries}"
    );
    assert_eq!(r["events"]["missed_return_copy_up"], 0, "{}", r["events"]);
    let returns = if probes == "kprobe" {
        "copy_up_one_return"
    } else {
        "copy_up_one_fexit"
    };
    let ret = r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == returns)
        .unwrap();
    if probes == "kprobe" {
        assert_eq!(ret["maxactive"], 4096);
        assert_eq!(ret["missed"], 0, "the kernel missed no return: {ret}");
    } else {
        assert_eq!(ret["kind"], "fexit");
    }
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn copy_up_storm_beyond_maxactive_counts_every_miss() {
    // A ceiling far below the storm's concurrency: the kernel drops returns, and every one of
    // them must be counted, exactly.
    let ov = storm_overlay();
    let (r, events, entries) = copy_up_storm(&ov, "storm_low", "kprobe", 2);
    let (count, waited) = copy_up_totals(&r, &ov.dev());
    let missed = r["events"]["missed_return_copy_up"].as_u64().unwrap();
    assert!(
        missed > 0,
        "96 concurrent copy-ups with maxactive 2 must miss returns: {}",
        r["events"]
    );
    assert_eq!(
        count + waited + missed,
        entries,
        "reported {count} + waits {waited} + missed {missed} vs bpftrace {entries}"
    );
    let ret = r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "copy_up_one_return")
        .unwrap();
    assert_eq!(
        ret["missed"].as_u64(),
        Some(missed),
        "the kernel's own count of missed returns: {ret}"
    );
    // Data copies whose return was missed: each reported copy-up that copied bytes but shows no
    // data-copy time lost its data copy's return, and each is counted (at the copy-up's end),
    // never more than the kernel itself says it missed.
    let data_missed = r["events"]["missed_return_data"].as_u64().unwrap();
    let without_time = events
        .iter()
        .filter(|e| e["type"] == "copy_up" && e["dev"] == ov.dev().as_str())
        .filter(|e| e["data"]["bytes"].as_u64() > Some(0) && e["data"]["ns"] == 0)
        .count() as u64;
    let data_ret = r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "copy_up_data_return")
        .unwrap();
    assert!(
        without_time <= data_missed && Some(data_missed) <= data_ret["missed"].as_u64(),
        "{without_time} copy-ups without their data time, {data_missed} counted, the kernel \
         missed {data_ret}"
    );
    let t =
        String::from_utf8_lossy(&fs::read(out_dir().join("storm_low.json")).unwrap()).into_owned();
    assert!(!t.is_empty());
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn lookup_storm_on_a_slow_disk_reports_every_lookup() {
    const N: usize = 128;
    // The lower layer on a disk whose reads take 20 ms: lookups that miss the cache sleep, so
    // many are in flight at once.
    let mut disk = Disk::new(Path::new("/run/ot-lookup-storm.img"), 64);
    let lower = Path::new("/run/ot-lookup-storm-lower");
    disk.mount(lower);
    for i in 0..N {
        fs::create_dir_all(lower.join(format!("d{i}"))).unwrap();
        fs::write(lower.join(format!("d{i}/f")), "x").unwrap();
    }
    disk.delay_reads(20);
    let root = Path::new("/run/ot-lookup-storm");
    fs::create_dir_all(root).unwrap();
    sh(&format!(
        "mount -t tmpfs tmpfs {r} && mkdir {r}/u {r}/w {r}/m",
        r = root.display()
    ));
    sh(&format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={r}/u,workdir={r}/w {r}/m",
        lower.display(),
        r = root.display()
    ));
    let merged = root.join("m");
    let dev = {
        use std::os::unix::fs::MetadataExt as _;
        let d = fs::metadata(&merged).unwrap().dev();
        (
            format!("{}:{}", libc::major(d), libc::minor(d)),
            ((libc::major(d) as u64) << 20) | libc::minor(d) as u64,
        )
    };
    let dir = out_dir();
    let json = dir.join("lookup_storm.json");
    let bt = Bpftrace::start(
        "kprobe:ovl_lookup { @entries[((struct dentry *)arg1)->d_sb->s_dev] = count(); }",
        dir.join("lookup_storm.bpftrace"),
    );
    // Each process looks up its own directory and the file in it: two cold lookups that read
    // the slow disk.
    let workload = released_together(
        N,
        &root.join("fifo"),
        &format!("cat {}/d$i/f > /dev/null", merged.display()),
    );
    let started = Instant::now();
    let o = tracer().run().json(&json).bash(&workload).output().unwrap();
    let bt_out = bt.stop();
    println!(
        "storm took {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        stdout(&o)
    );
    let _ = Command::new("umount").arg(&merged).status();
    let _ = Command::new("umount").arg(root).status();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = read_json(&json);
    let entries = bpftrace_map(&bt_out, "entries")
        .get(&dev.1.to_string())
        .copied()
        .unwrap_or(0);
    let m = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["dev"] == dev.0.as_str())
        .expect("mount");
    let lookups = m["lookup"]["count"].as_u64().unwrap();
    assert!(
        entries >= 2 * N as u64,
        "every process looked up two names: bpftrace saw {entries}"
    );
    assert_eq!(
        lookups, entries,
        "reported lookups vs bpftrace's ovl_lookup entries: {}",
        r["events"]
    );
    assert_eq!(r["events"]["missed_return_lookup"], 0, "{}", r["events"]);
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_storm_running_while_the_tracer_attaches_loses_no_later_lookup() {
    // Threads that look names up all the time, before and while the probes attach. Once the
    // traced command says the probes are in place, each thread does exactly PER lookups of
    // fresh names: every one of them must be reported (before: one stale in-flight entry per
    // thread swallowed all its later lookups).
    const THREADS: usize = 8;
    const PER: usize = 50;
    let ov = Overlay::build(1, "", |o| o.put(0, "x", 1));
    let m = ov.merged();
    let marker = ov.root.join("attached");
    let done = ov.root.join("done");
    let storm = format!(
        "for t in $(seq 1 {THREADS}); do (
           n=0; while [ ! -e {marker} ]; do n=$((n+1)); [ -e {m}/pre_${{t}}_$n ] || true; sleep 0.005; done
           for i in $(seq 1 {PER}); do [ -e {m}/b_${{t}}_$i ] || true; done
           touch {done}.$t ) & done; wait",
        marker = marker.display(),
        m = m.display(),
        done = done.display()
    );
    let mut storm = Command::new("bash").arg("-c").arg(&storm).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let events = out_dir().join("attach_storm.ndjson");
    let cmd = format!(
        "touch {marker}; while [ $(ls {root} | grep -c '^done') -lt {THREADS} ]; do sleep 0.1; done",
        marker = marker.display(),
        root = ov.root.display()
    );
    let o = tracer()
        .args([
            "run",
            "-q",
            "--events",
            events.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &cmd,
        ])
        .output()
        .unwrap();
    storm.wait().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dev = ov.dev();
    let after: usize = read_events(&events)
        .iter()
        .filter(|e| {
            e["dev"] == dev.as_str()
                && e["type"] == "lookup"
                && e["name"].as_str().unwrap().starts_with("b_")
        })
        .count();
    assert_eq!(
        after,
        THREADS * PER,
        "every lookup made after attaching is reported"
    );
}

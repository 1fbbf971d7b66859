//! A busy host: storms of concurrent copy-ups and lookups, a tracer attached mid-storm, hundreds
//! of short-lived overlays under one run, a Docker socket that never answers, and a traced
//! command interrupted. Real kernel events in the VM (`cargo xtask test`); every count is checked
//! against the upper directory, bpftrace, or the workload's own known numbers.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::FileTypeExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use overlay_trace_tests::{Bpftrace, Overlay, bpftrace_map, out_dir, read_events, stderr, stdout};
use overlay_trace_tests::{read_json, sh, tracer};
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

/// A lower layer on a block device that answers reads after 20 ms (dm-delay over a loop
/// device): lookups that miss the cache sleep, so many are in flight at once.
struct SlowDisk {
    mnt: std::path::PathBuf,
    loopdev: String,
    name: String,
}

impl SlowDisk {
    fn new(tag: &str, populate: impl FnOnce(&Path)) -> Self {
        let img = Path::new("/run").join(format!("slow-{tag}.img"));
        let mnt = Path::new("/run").join(format!("slow-{tag}"));
        let name = format!("ot-slow-{tag}");
        sh(&format!(
            "modprobe loop; truncate -s 64M {} && mkfs.ext4 -q {}",
            img.display(),
            img.display()
        ));
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let loopdev = String::from_utf8(o.stdout).unwrap().trim().to_string();
        fs::create_dir_all(&mnt).unwrap();
        sh("modprobe dm-delay");
        let sectors = String::from_utf8(
            Command::new("blockdev")
                .args(["--getsz", &loopdev])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        // Reads wait 20 ms; writes (populating) do not.
        sh(&format!(
            "echo '0 {s} delay {d} 0 20 {d} 0 0' | dmsetup create {name}",
            s = sectors.trim(),
            d = loopdev
        ));
        sh(&format!("mount /dev/mapper/{name} {}", mnt.display()));
        populate(&mnt);
        sh("sync; echo 3 > /proc/sys/vm/drop_caches");
        SlowDisk { mnt, loopdev, name }
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("dmsetup")
            .args(["remove", &self.name])
            .status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn lookup_storm_on_a_slow_disk_reports_every_lookup() {
    const N: usize = 128;
    let disk = SlowDisk::new("lookups", |m| {
        for i in 0..N {
            fs::create_dir_all(m.join(format!("d{i}"))).unwrap();
            fs::write(m.join(format!("d{i}/f")), "x").unwrap();
        }
    });
    let root = Path::new("/run/ot-lookup-storm");
    fs::create_dir_all(root).unwrap();
    sh(&format!(
        "mount -t tmpfs tmpfs {r} && mkdir {r}/u {r}/w {r}/m",
        r = root.display()
    ));
    sh(&format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={r}/u,workdir={r}/w {r}/m",
        disk.mnt.display(),
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
    let o = tracer()
        .args([
            "run",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &workload,
        ])
        .output()
        .unwrap();
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

/// VmHWM and VmRSS of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (get("VmHWM:"), get("VmRSS:"))
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn soak_of_short_lived_overlays_keeps_memory_flat_and_totals_exact() {
    // Past the 128 gone mounts kept in detail; memory is sampled once the detail is full (at
    // `FULL`) and at the end: it must stay flat between.
    const MOUNTS: usize = 200;
    const FULL: usize = 130;
    let root = Path::new("/run/ot-soak");
    fs::create_dir_all(root).unwrap();
    sh(&format!(
        "mount -t tmpfs tmpfs {r} && mkdir -p {r}/l/a && echo x > {r}/l/a/x && echo y > {r}/l/b",
        r = root.display()
    ));
    let rss = out_dir().join("soak.rss");
    let json = out_dir().join("soak.json");
    let _ = fs::remove_file(&rss);
    // Each overlay: mounted, two files written (a/x copies a and a/x up, b copies b: 3 copy-ups),
    // unmounted; two commands each (a process costs about half a second under emulation). The tracer's memory is sampled after FULL and after MOUNTS mounts ($PPID: the
    // command's parent is the tracer).
    let workload = format!(
        "set -e; cd {r}
         mkdir u{{1..{MOUNTS}}} w{{1..{MOUNTS}}} m{{1..{MOUNTS}}}
         for i in $(seq 1 {MOUNTS}); do
           mount -t overlay overlay -o lowerdir=l,upperdir=u$i,workdir=w$i m$i
           echo 1 >> m$i/a/x; echo 2 >> m$i/b
           umount m$i
           if [ $i = {FULL} ] || [ $i = {MOUNTS} ]; then sleep 2; grep -E 'VmRSS' /proc/$PPID/status >> {rss}; fi
         done",
        r = root.display(),
        rss = rss.display()
    );
    let started = Instant::now();
    let mut child = tracer()
        .args([
            "run",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &workload,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Sample the peak while it runs (the process is gone once it exits).
    let mut hwm = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) {
            if s.contains("VmHWM") {
                hwm = hwm.max(memory_kib(pid).0);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let st = child.wait().unwrap();
    let _ = Command::new("umount").arg(root).status();
    println!(
        "soak: {MOUNTS} overlays in {:.0} s, peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        hwm
    );
    assert!(st.success());
    let r = read_json(&json);
    let live: u64 = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["copy_up"]["count"].as_u64().unwrap())
        .sum();
    let retired: u64 = r["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["copy_up"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(r["events"]["copy_up"], 3 * MOUNTS as u64, "{}", r["events"]);
    assert_eq!(
        live + retired,
        3 * MOUNTS as u64,
        "totals over the mounts in detail and the per-container rows"
    );
    for k in [
        "dropped_copy_up",
        "dropped_lookup",
        "missed_return_copy_up",
        "missed_return_lookup",
        "untracked_calls",
    ] {
        assert_eq!(r["events"][k], 0, "{k}: {}", r["events"]);
    }
    let samples: Vec<u64> = fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .map(|l| {
            l.trim_start_matches("VmRSS:")
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(samples.len(), 2);
    println!(
        "soak: RSS after {FULL} mounts {} KiB, after {MOUNTS} {} KiB",
        samples[0], samples[1]
    );
    assert!(hwm <= 64 * 1024, "peak RSS {hwm} KiB over 64 MiB");
    assert!(
        samples[1] <= samples[0] + 4 * 1024,
        "RSS grew from {} to {} KiB",
        samples[0],
        samples[1]
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn a_docker_socket_that_never_answers_costs_no_events_and_little_time() {
    // Enough that a 3 s wait per mount (or per retry) would show many times over.
    const MOUNTS: usize = 60;
    // A Unix socket that accepts connections and never answers.
    let sock = Path::new("/run/ot-fake-docker.sock");
    let _ = fs::remove_file(sock);
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
            if held.len() > 10_000 {
                break;
            }
        }
    });
    assert!(fs::metadata(sock).unwrap().file_type().is_socket());
    let root = Path::new("/run/ot-hung");
    fs::create_dir_all(root).unwrap();
    sh(&format!(
        "mount -t tmpfs tmpfs {r} && mkdir -p {r}/l && echo x > {r}/l/f",
        r = root.display()
    ));
    let json = out_dir().join("hung_docker.json");
    let end_mark = out_dir().join("hung_docker.end");
    let workload = format!(
        "set -e; cd {r}
         mkdir u{{1..{MOUNTS}}} w{{1..{MOUNTS}}} m{{1..{MOUNTS}}}
         for i in $(seq 1 {MOUNTS}); do
           mount -t overlay overlay -o lowerdir=l,upperdir=u$i,workdir=w$i m$i; echo 1 >> m$i/f
         done
         date +%s.%N > {end}",
        r = root.display(),
        end = end_mark.display()
    );
    let o = tracer()
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("OVERLAY_TRACE_VERBOSE", "1")
        .args([
            "run",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &workload,
        ])
        .output()
        .unwrap();
    let exited = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    sh(&format!(
        "for m in {r}/m*; do umount $m; done; umount {r}",
        r = root.display()
    ));
    drop(hold);
    assert!(o.status.success(), "{}", stderr(&o));
    let ended: f64 = fs::read_to_string(&end_mark)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let delay = exited - ended;
    println!(
        "report {delay:.2} s after the workload ended; {}",
        stderr(&o)
    );
    assert!(delay <= 5.0, "the report came {delay:.2} s after the end");
    let r = read_json(&json);
    assert_eq!(r["events"]["copy_up"], MOUNTS as u64);
    assert_eq!(r["events"]["dropped_copy_up"], 0);
    let named = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["mount"]["mount_point"]
                .as_str()
                .is_some_and(|p| p.starts_with(root.to_str().unwrap()))
        })
        .count();
    assert_eq!(named, MOUNTS, "every mount named by its mount point");
}

fn interrupted_command(signal: i32, expected: i32) {
    let pidfile = out_dir().join(format!("child-{signal}.pid"));
    let _ = fs::remove_file(&pidfile);
    let mut tracer = tracer()
        .args([
            "run",
            "-q",
            "--",
            "bash",
            "-c",
            &format!("echo $$ > {}; exec sleep 1000", pidfile.display()),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let child_pid = loop {
        if let Some(p) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: signalling the tracer we started.
    unsafe { libc::kill(tracer.id() as i32, signal) };
    let st = tracer.wait().unwrap();
    let mut out = String::new();
    use std::io::Read as _;
    tracer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        st.code(),
        Some(expected),
        "exit status after signal {signal}"
    );
    assert!(
        out.contains("overlay-trace") && out.contains("copy-ups"),
        "the report is printed: {out}"
    );
    assert!(
        !Path::new(&format!("/proc/{child_pid}")).exists(),
        "the command is gone"
    );
}

#[test]
#[ignore = "needs kprobes on overlayfs: runs in the VM via `cargo xtask test`"]
fn an_interrupted_traced_command_is_ended_and_reported() {
    interrupted_command(libc::SIGINT, 130);
    interrupted_command(libc::SIGTERM, 143);
}

//! The overhead benchmark. On the host, `cargo xtask bench` boots the VM and runs this same
//! binary there (`bench-in-vm`), which times two storms on fresh overlay mounts:
//!   copy-up storm: append one byte to each of COPY_UP_FILES lower files (one copy-up each);
//!   cold lookup storm: stat LOOKUP_NAMES names on a fresh mount, half of them missing.
//! Each round runs them bare, under overlay-trace with fentry/fexit, under overlay-trace with
//! kprobes, and under bpftrace with the same probes, in alternation (emulation is noisy), and the
//! medians are compared. The workload times itself, so tracer start-up is not counted. With
//! `kernel.bpf_stats_enabled=1`, the workload also reads each of the tracer's programs'
//! `run_time_ns / run_cnt` (bpftool) before it ends: the cost per event, which emulation
//! distorts far less than wall time.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

const COPY_UP_FILES: usize = 2000;
const LOOKUP_NAMES: usize = 20000;
const ROOT: &str = "/run/overlay-trace-bench";

/// bpftrace doing what overlay-trace does: time each call and keep per-call state by thread.
const BPFTRACE_PROGRAM: &str = r#"
kprobe:ovl_copy_up_one { @cu[tid] = nsecs; }
kretprobe:ovl_copy_up_one /@cu[tid]/ { @copy_up_ns = hist(nsecs - @cu[tid]); delete(@cu[tid]); }
kprobe:ovl_copy_up_file { @cf[tid] = nsecs; @bytes = sum(arg3); }
kretprobe:ovl_copy_up_file /@cf[tid]/ { @data_ns = hist(nsecs - @cf[tid]); delete(@cf[tid]); }
kprobe:ovl_lookup { @lk[tid] = nsecs; @layers[tid] = 0; }
kprobe:ovl_lookup_layer { @layers[tid] = @layers[tid] + 1; }
kretprobe:ovl_lookup /@lk[tid]/ { @lookup_ns = hist(nsecs - @lk[tid]); @lookup_layers = lhist(@layers[tid], 0, 16, 1); delete(@lk[tid]); delete(@layers[tid]); }
"#;

pub fn host(rounds: usize, tracer: &Path) -> Result<()> {
    let me = std::env::current_exe()?;
    let code = crate::vm::in_vm(&format!(
        "{} bench-in-vm --rounds {rounds} --tracer {}",
        me.display(),
        tracer.display()
    ))?;
    if code != 0 {
        bail!("benchmark failed in the VM (exit {code})");
    }
    Ok(())
}

fn sh(cmd: &str) -> Result<()> {
    let st = Command::new("sh").arg("-c").arg(cmd).status()?;
    if !st.success() {
        bail!("failed: {cmd}");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Storm {
    CopyUp,
    Lookup,
}

#[derive(Clone, Copy, PartialEq)]
enum Tracer {
    Bare,
    Fentry,
    Kprobe,
    Bpftrace,
}

const TRACERS: [Tracer; 4] = [
    Tracer::Bare,
    Tracer::Fentry,
    Tracer::Kprobe,
    Tracer::Bpftrace,
];

fn lower(i: usize) -> PathBuf {
    Path::new(ROOT).join(format!("lower{i}"))
}

fn prepare_lowers() -> Result<()> {
    fs::create_dir_all(ROOT)?;
    sh(&format!(
        "mountpoint -q {ROOT} || mount -t tmpfs tmpfs {ROOT}"
    ))?;
    for i in 0..3 {
        fs::create_dir_all(lower(i).join("cu"))?;
        fs::create_dir_all(lower(i).join("lk"))?;
    }
    let block = vec![7u8; 4096];
    for f in 0..COPY_UP_FILES {
        fs::write(lower(f % 3).join("cu").join(format!("f{f}")), &block)?;
    }
    // Even names exist (spread over the layers), odd ones are missing.
    for n in (0..LOOKUP_NAMES).step_by(2) {
        fs::write(lower(n % 3).join("lk").join(format!("n{n}")), b"x")?;
    }
    Ok(())
}

/// A fresh mount: empty upper, cold dcache for the overlay.
fn mount_fresh() -> Result<PathBuf> {
    let merged = Path::new(ROOT).join("merged");
    let _ = Command::new("umount").arg(&merged).status();
    for d in ["upper", "work"] {
        let p = Path::new(ROOT).join(d);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
        fs::create_dir_all(&p)?;
    }
    fs::create_dir_all(&merged)?;
    sh(&format!(
        "mount -t overlay overlay -o lowerdir={}:{}:{},upperdir={ROOT}/upper,workdir={ROOT}/work {}",
        lower(0).display(),
        lower(1).display(),
        lower(2).display(),
        merged.display()
    ))?;
    Ok(merged)
}

/// The workload itself (run as a child so tracers can wrap it); prints elapsed ns.
pub fn workload(storm: &str, merged: &Path) -> Result<()> {
    let start = Instant::now();
    match storm {
        "copy-up" => {
            for f in 0..COPY_UP_FILES {
                let mut file = OpenOptions::new()
                    .append(true)
                    .custom_flags(0)
                    .open(merged.join("cu").join(format!("f{f}")))?;
                file.write_all(b"+")?;
            }
        }
        "lookup" => {
            for n in 0..LOOKUP_NAMES {
                let _ = fs::symlink_metadata(merged.join("lk").join(format!("n{n}")));
            }
        }
        other => bail!("unknown storm {other}"),
    }
    println!("elapsed_ns {}", start.elapsed().as_nanos());
    if std::env::var_os("OT_BPF_STATS").is_some() {
        print_bpf_stats();
    }
    Ok(())
}

/// Each loaded program's run count and run time (kernel.bpf_stats_enabled), as `prog NAME
/// COUNT NS` lines: read while the tracer's programs are still attached.
fn print_bpf_stats() {
    let Ok(out) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    else {
        return;
    };
    let Ok(progs) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    for p in progs.as_array().into_iter().flatten() {
        if let (Some(name), Some(cnt), Some(ns)) = (
            p["name"].as_str(),
            p["run_cnt"].as_u64(),
            p["run_time_ns"].as_u64(),
        ) {
            if cnt > 0 {
                println!("prog {name} {cnt} {ns}");
            }
        }
    }
}

/// Run counts and times per program name, summed over runs.
type ProgStats = std::collections::BTreeMap<String, (u64, u64)>;

fn run_once(
    storm: Storm,
    tracer: Tracer,
    overlay_trace: &Path,
    stats: &mut ProgStats,
) -> Result<u64> {
    let merged = mount_fresh()?;
    let me = std::env::current_exe()?;
    let name = if storm == Storm::CopyUp {
        "copy-up"
    } else {
        "lookup"
    };
    let wl = format!(
        "{} bench-workload {name} {}",
        me.display(),
        merged.display()
    );
    let cmd = match tracer {
        Tracer::Bare => wl,
        Tracer::Fentry => format!(
            "OT_BPF_STATS=1 {} run -q --probes fentry -- {wl}",
            overlay_trace.display()
        ),
        Tracer::Kprobe => format!(
            "OT_BPF_STATS=1 {} run -q --probes kprobe -- {wl}",
            overlay_trace.display()
        ),
        // -c runs the command once the probes are attached.
        Tracer::Bpftrace => format!("bpftrace -q -e '{BPFTRACE_PROGRAM}' -c '{wl}'"),
    };
    let out = Command::new("sh").arg("-c").arg(&cmd).output()?;
    if !out.status.success() {
        bail!("{cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let ["prog", name, cnt, ns] = f[..] {
            let e = stats.entry(name.to_string()).or_default();
            e.0 += cnt.parse::<u64>().unwrap_or(0);
            e.1 += ns.parse::<u64>().unwrap_or(0);
        }
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("elapsed_ns ")
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("no timing from: {cmd}"))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn in_vm(rounds: usize, overlay_trace: &Path) -> Result<()> {
    prepare_lowers()?;
    // Per-program run time: what each probe hit costs, per backend.
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let mut verdict_ok = true;
    for storm in [Storm::CopyUp, Storm::Lookup] {
        let mut t: [Vec<u64>; 4] = Default::default();
        let mut stats: [ProgStats; 4] = Default::default();
        for round in 0..rounds {
            // Attaching and detaching probes rewrites kernel text, which under emulation flushes
            // translated code for a while: rotate the order so no configuration always runs
            // right after another's detach, and let the machine settle before each timed run.
            for k in 0..TRACERS.len() {
                let i = (round + k) % TRACERS.len();
                std::thread::sleep(std::time::Duration::from_secs(3));
                t[i].push(run_once(storm, TRACERS[i], overlay_trace, &mut stats[i])?);
            }
            eprintln!("bench: round {}/{rounds} done", round + 1);
        }
        let [bare, fe, kp, bt] = t.map(|mut v| median(&mut v));
        let pct = |x: u64| (x as f64 / bare as f64 - 1.0) * 100.0;
        let name = match storm {
            Storm::CopyUp => format!("copy-up storm ({COPY_UP_FILES} copy-ups)"),
            Storm::Lookup => format!("cold lookup storm ({LOOKUP_NAMES} names, half missing)"),
        };
        println!("{name}, median of {rounds}:");
        println!("  bare                    {:>10.2} ms", bare as f64 / 1e6);
        for (label, x) in [
            ("overlay-trace (fentry)", fe),
            ("overlay-trace (kprobe)", kp),
            ("bpftrace", bt),
        ] {
            println!(
                "  {label:<23} {:>10.2} ms  overhead {:+.1}%  (ratio {:.3})",
                x as f64 / 1e6,
                pct(x),
                x as f64 / bare as f64
            );
        }
        let bt_over = pct(bt).max(0.0);
        for (label, x) in [("fentry", fe), ("kprobe", kp)] {
            println!(
                "  overlay-trace ({label}) overhead / bpftrace's: {:.2}",
                if bt_over > 0.0 {
                    pct(x).max(0.0) / bt_over
                } else {
                    f64::NAN
                }
            );
        }
        // Goal: overhead at most half of bpftrace's, with fentry.
        let met = pct(fe) <= bt_over / 2.0;
        println!(
            "  goal: overhead (fentry) at most half of bpftrace's: {}",
            if met { "met" } else { "NOT met" }
        );
        for (label, i) in [("fentry", 1), ("kprobe", 2)] {
            let per: Vec<String> = stats[i]
                .iter()
                .filter(|(_, (c, _))| *c > 0)
                .map(|(n, (c, ns))| format!("{n} {:.0} ns", *ns as f64 / *c as f64))
                .collect();
            if !per.is_empty() {
                println!(
                    "  per event ({label}, bpf_stats run_time_ns/run_cnt): {}",
                    per.join(", ")
                );
            }
        }
        verdict_ok &= met;
    }
    let _ = Command::new("umount")
        .arg(Path::new(ROOT).join("merged"))
        .status();
    println!(
        "bench: {}",
        if verdict_ok {
            "all goals met"
        } else {
            "some goals not met (see above)"
        }
    );
    Ok(())
}

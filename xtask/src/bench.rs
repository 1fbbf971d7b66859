//! The overhead benchmark. On the host, `cargo xtask bench` boots the VM and runs this same
//! binary there (`bench-in-vm`), which times two storms on fresh overlay mounts:
//!   copy-up storm: append one byte to each of COPY_UP_FILES lower files (one copy-up each);
//!   cold lookup storm: stat LOOKUP_NAMES names on a fresh mount, half of them missing.
//! Each round runs them bare, under overlay-trace, and under bpftrace with the same probes, in
//! alternation (emulation is noisy), and the medians are compared. The workload times itself, so
//! tracer start-up is not counted.

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
    let code = crate::in_vm(&format!(
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

#[derive(Clone, Copy)]
enum Tracer {
    Bare,
    OverlayTrace,
    Bpftrace,
}

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
    Ok(())
}

fn run_once(storm: Storm, tracer: Tracer, overlay_trace: &Path) -> Result<u64> {
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
        Tracer::OverlayTrace => format!("{} run -q -- {wl}", overlay_trace.display()),
        // -c runs the command once the probes are attached.
        Tracer::Bpftrace => format!("bpftrace -q -e '{BPFTRACE_PROGRAM}' -c '{wl}'"),
    };
    let out = Command::new("sh").arg("-c").arg(&cmd).output()?;
    if !out.status.success() {
        bail!("{cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
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
    let mut verdict_ok = true;
    for storm in [Storm::CopyUp, Storm::Lookup] {
        let mut t: [Vec<u64>; 3] = Default::default();
        for round in 0..rounds {
            // Attaching and detaching kprobes rewrites kernel text, which under emulation flushes
            // translated code for a while: rotate the order so no configuration always runs
            // right after another's detach, and let the machine settle before each timed run.
            let all = [Tracer::Bare, Tracer::OverlayTrace, Tracer::Bpftrace];
            for k in 0..3 {
                let i = (round + k) % 3;
                std::thread::sleep(std::time::Duration::from_secs(3));
                t[i].push(run_once(storm, all[i], overlay_trace)?);
            }
            eprintln!("bench: round {}/{rounds} done", round + 1);
        }
        let [bare, ot, bt] = t.map(|mut v| median(&mut v));
        let pct = |x: u64| (x as f64 / bare as f64 - 1.0) * 100.0;
        let (name, limit) = match storm {
            Storm::CopyUp => (
                format!("copy-up storm ({COPY_UP_FILES} copy-ups)"),
                Some(5.0),
            ),
            Storm::Lookup => (
                format!("cold lookup storm ({LOOKUP_NAMES} names, half missing)"),
                None,
            ),
        };
        println!("{name}, median of {rounds}:");
        println!("  bare           {:>10.2} ms", bare as f64 / 1e6);
        println!(
            "  overlay-trace  {:>10.2} ms  overhead {:+.1}%  (ratio {:.3})",
            ot as f64 / 1e6,
            pct(ot),
            ot as f64 / bare as f64
        );
        println!(
            "  bpftrace       {:>10.2} ms  overhead {:+.1}%  (ratio {:.3})",
            bt as f64 / 1e6,
            pct(bt),
            bt as f64 / bare as f64
        );
        println!("  overlay-trace / bpftrace: {:.3}", ot as f64 / bt as f64);
        let not_worse = ot <= bt;
        let under = limit.is_none_or(|l| pct(ot) < l);
        println!(
            "  goal: no worse than bpftrace{}: {}",
            limit
                .map(|l| format!(" and under {l}%"))
                .unwrap_or_default(),
            if not_worse && under { "met" } else { "NOT met" }
        );
        verdict_ok &= not_worse && under;
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

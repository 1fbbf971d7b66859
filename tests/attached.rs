//! A tracer `run` left running while a test works, and the parts of its report a test reads.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{out_dir, tracer};

/// A tracer `run` whose traced command only marks that the probes are attached, then waits.
pub struct AttachedRun {
    pub child: Child,
    pub ready: PathBuf,
}

impl AttachedRun {
    pub fn start(name: &str, args: &[&str]) -> Self {
        let ready = out_dir().join(format!("{name}.ready"));
        let _ = fs::remove_file(&ready);
        let child = tracer()
            .arg("run")
            .args(args)
            .args(["--", "sh", "-c"])
            .arg(format!("touch {}; exec sleep 600", ready.display()))
            .stdout(fs::File::create(out_dir().join(format!("{name}.out"))).unwrap())
            .stderr(fs::File::create(out_dir().join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !ready.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "the tracer never attached"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, ready }
    }
}

/// The mount of `dev` in a report; of those, the one whose mount point ends in `point`.
pub fn mount_at<'a>(report: &'a Value, dev: &str, point: &str) -> &'a Value {
    report["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["dev"] == dev
                && (point.is_empty()
                    || m["mount"]["mount_point"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(point)))
        })
        .unwrap_or_else(|| panic!("no mount {dev} at {point:?} in {report:#}"))
}

pub fn mount_of<'a>(report: &'a Value, dev: &str) -> &'a Value {
    mount_at(report, dev, "")
}

/// How many BPF programs the kernel holds (`bpftool prog show`).
pub fn bpf_programs() -> usize {
    let o = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .unwrap();
    assert!(o.status.success(), "bpftool prog show: {}", o.status);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .count()
}

/// The tracer's kprobe events now (their names carry a random token per run, not a pid).
pub fn tracer_kprobe_events() -> std::collections::BTreeSet<String> {
    fs::read_to_string("/sys/kernel/tracing/kprobe_events")
        .or_else(|_| fs::read_to_string("/sys/kernel/debug/tracing/kprobe_events"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(":overlay_trace/"))
        .map(str::to_string)
        .collect()
}

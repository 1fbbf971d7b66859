//! Tracers in pid namespaces of their own (each one pid 1, as in two containers) share one
//! tracefs: their kprobe events must not collide, and a tracer starting must remove a killed
//! one's events and no live one's.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use overlay_trace_tests::{Overlay, bin, out_dir, read_events};

/// `overlay-trace run --probes kprobe` as pid 1 of a new pid namespace; its traced command
/// marks that the probes are attached, then waits for `done`.
struct Contained {
    child: Child,
    name: &'static str,
}

impl Contained {
    fn start(name: &'static str, done: &Path) -> Self {
        let ready = out_dir().join(format!("pidns-{name}.ready"));
        let _ = fs::remove_file(&ready);
        let child = Command::new("unshare")
            .args(["-pf", "--mount-proc"])
            .arg(bin())
            .args(["run", "-q", "--probes", "kprobe", "--events"])
            .arg(out_dir().join(format!("pidns-{name}.ndjson")))
            .args(["--", "sh", "-c"])
            .arg(format!(
                "touch {r}; while [ ! -e {d} ]; do sleep 0.2; done",
                r = ready.display(),
                d = done.display()
            ))
            .stderr(fs::File::create(out_dir().join(format!("pidns-{name}.err"))).unwrap())
            .stdout(fs::File::create(out_dir().join(format!("pidns-{name}.out"))).unwrap())
            .spawn()
            .unwrap();
        let mut c = Contained { child, name };
        let t = Instant::now();
        while !ready.exists() {
            if let Some(st) = c.child.try_wait().unwrap() {
                panic!("tracer {name} ended ({st}) before attaching: {}", c.err());
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "{name} never attached"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn err(&self) -> String {
        fs::read_to_string(out_dir().join(format!("pidns-{}.err", self.name))).unwrap_or_default()
    }

    /// The traced command's end was asked for: the tracer's exit and its copy-ups on `dev`.
    fn finish(mut self, dev: &str) -> BTreeSet<String> {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "tracer {}: {st}: {}", self.name, self.err());
        read_events(&out_dir().join(format!("pidns-{}.ndjson", self.name)))
            .iter()
            .filter(|e| e["type"] == "copy_up" && e["dev"] == dev)
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    }

    /// The tracer itself, the namespace's pid 1 (unshare's child).
    fn tracer_pid(&self) -> i32 {
        let kids =
            fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id())).unwrap();
        kids.split_whitespace().next().unwrap().parse().unwrap()
    }
}

/// The tokens of the tracers whose kprobe events exist now ("ot<token>_<program>").
fn tokens() -> BTreeSet<String> {
    let text = fs::read_to_string("/sys/kernel/tracing/kprobe_events").unwrap();
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.split_once(":overlay_trace/ot"))
        .filter_map(|(_, rest)| Some(rest.split_once('_')?.0.to_string()))
        .collect()
}

fn copy_up(ov: &Overlay, names: std::ops::Range<usize>) -> BTreeSet<String> {
    for i in names.clone() {
        fs::OpenOptions::new()
            .append(true)
            .open(ov.merged().join(format!("f{i}")))
            .unwrap();
    }
    names.map(|i| format!("/f{i}")).collect()
}

#[test]
#[ignore = "needs kprobes on overlayfs (runs in the VM)"]
fn tracers_in_pid_namespaces_keep_their_own_probes() {
    let ov = Overlay::build(1, "", |o| {
        for i in 0..12 {
            o.put(0, &format!("f{i}"), 64);
        }
    });
    let dev = ov.dev();
    let done_ab = out_dir().join("pidns-ab.done");
    let done_c = out_dir().join("pidns-c.done");
    let _ = fs::remove_file(&done_ab);
    let _ = fs::remove_file(&done_c);

    // Two tracers, both pid 1: both attach, both see the same copy-ups.
    let before = tokens();
    let a = Contained::start("a", &done_ab);
    let with_a = tokens();
    let b = Contained::start("b", &done_c);
    let with_ab = tokens();
    let only = |new: &BTreeSet<String>, old: &BTreeSet<String>| -> String {
        let d: Vec<&String> = new.difference(old).collect();
        assert_eq!(d.len(), 1, "one tracer's events more: {old:?} -> {new:?}");
        d[0].clone()
    };
    let (ta, tb) = (only(&with_a, &before), only(&with_ab, &with_a));
    assert!(with_ab.contains(&ta));
    let first = copy_up(&ov, 0..6);

    // One killed: its events stay until the next tracer starts, which removes them, not A's.
    let mut b = b;
    unsafe { libc::kill(b.tracer_pid(), libc::SIGKILL) };
    let _ = b.child.wait();
    assert!(
        tokens().contains(&tb),
        "a killed tracer cannot remove its events"
    );
    let c = Contained::start("c", &done_c);
    let with_ac = tokens();
    let tc = only(&with_ac, &with_ab);
    assert!(!with_ac.contains(&tb), "B's events left: {with_ac:?}");
    assert!(with_ac.contains(&ta), "A's events removed: {with_ac:?}");
    let second = copy_up(&ov, 6..12);

    fs::write(&done_ab, "").unwrap();
    fs::write(&done_c, "").unwrap();
    let seen_a = a.finish(&dev);
    let seen_c = c.finish(&dev);
    // The oracle: what the upper dir holds.
    let upper: BTreeSet<String> = ov.upper_paths().into_iter().collect();
    let all: BTreeSet<String> = first.union(&second).cloned().collect();
    assert_eq!(all, upper);
    assert_eq!(seen_a, all, "A (alive throughout) saw every copy-up");
    assert_eq!(seen_c, second, "C saw those after it started");
    // Nothing of theirs is left.
    let after = tokens();
    assert!(!after.contains(&ta) && !after.contains(&tc), "{after:?}");
}

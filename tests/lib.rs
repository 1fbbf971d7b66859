//! Helpers for the integration tests: the overlay-trace binary, real overlay mounts on a private
//! tmpfs, the events file, and bpftrace as an independent counter.
//!
//! Tests that need kprobes on overlayfs are `#[ignore]`d natively (this host has no kprobes) and
//! run inside the VM by `cargo xtask test`, which passes `--ignored`.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

/// The overlay-trace binary: $OVERLAY_TRACE_BIN, else the workspace's debug build.
pub fn bin() -> PathBuf {
    let p = match std::env::var_os("OVERLAY_TRACE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/overlay-trace"),
    };
    assert!(
        p.exists(),
        "{} does not exist: build it first (`cargo xtask test` does)",
        p.display()
    );
    p
}

/// An invocation of the tracer, the one way the tests build one: a `Command` for the binary
/// (every `Command` method works on it), with the flags the tests use spelled once.
///
/// `tracer().run().json(&p).events(&e).sh("echo x >> f").output()`
pub struct Tracer(Command);

pub fn tracer() -> Tracer {
    Tracer(Command::new(bin()))
}

impl Tracer {
    /// `run -q`: tracing without the live status line.
    pub fn run(mut self) -> Self {
        self.0.args(["run", "-q"]);
        self
    }
    pub fn json(mut self, p: &Path) -> Self {
        self.0.arg("--json").arg(p);
        self
    }
    pub fn events(mut self, p: &Path) -> Self {
        self.0.arg("--events").arg(p);
        self
    }
    /// More flags, in a chain (`Command::args` returns `&mut Command`).
    pub fn with(mut self, flags: &[&str]) -> Self {
        self.0.args(flags);
        self
    }
    /// `-- sh -c SCRIPT`: the traced command.
    pub fn sh(mut self, script: &str) -> Self {
        self.0.args(["--", "sh", "-c", script]);
        self
    }
    /// `-- bash -c SCRIPT`: the traced command, for scripts that need bash.
    pub fn bash(mut self, script: &str) -> Self {
        self.0.args(["--", "bash", "-c", script]);
        self
    }
}

impl std::ops::Deref for Tracer {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.0
    }
}

impl std::ops::DerefMut for Tracer {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.0
    }
}

pub fn overlay_trace(args: &[&str]) -> Output {
    tracer()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
}

/// A JSON file written by the tracer (a report).
pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Where a test may write files the host can read afterwards (the VM shares the repo).
pub fn out_dir() -> PathBuf {
    // VMs that run at once (the kernel matrix beside the main run) each name their own.
    let d = std::env::var_os("OVERLAY_TRACE_TEST_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-out"),
        PathBuf::from,
    );
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a shell command that must succeed (its stderr in the panic when it does not).
pub fn sh(cmd: &str) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A real overlay mount with `lowers` lower layers on its own tmpfs under /run (guest-private in
/// the VM). `lower(0)` is the topmost lower layer. Unmounted on drop.
pub struct Overlay {
    pub root: PathBuf,
    pub lowers: usize,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Overlay {
    /// `populate` runs before the mount, so lower layers can be filled.
    pub fn build(lowers: usize, extra_opts: &str, populate: impl FnOnce(&Overlay)) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let root = PathBuf::from(format!(
            "/run/overlay-trace-test-{}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&root).unwrap();
        sh(&format!("mount -t tmpfs tmpfs {}", root.display()));
        let o = Overlay { root, lowers };
        for i in 0..lowers {
            fs::create_dir_all(o.lower(i)).unwrap();
        }
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(o.root.join(d)).unwrap();
        }
        populate(&o);
        let lowerdir: Vec<String> = (0..lowers)
            .map(|i| o.lower(i).display().to_string())
            .collect();
        sh(&format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={}{} {}",
            lowerdir.join(":"),
            o.upper().display(),
            o.root.join("work").display(),
            extra_opts,
            o.merged().display()
        ));
        o
    }

    pub fn lower(&self, i: usize) -> PathBuf {
        self.root.join(format!("lower{i}"))
    }
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn merged(&self) -> PathBuf {
        self.root.join("merged")
    }

    /// The overlay superblock as mountinfo and the events print it: "major:minor".
    pub fn dev(&self) -> String {
        let d = fs::metadata(self.merged()).unwrap().dev();
        format!("{}:{}", libc::major(d), libc::minor(d))
    }

    /// The kernel's internal encoding (major << 20 | minor), as bpftrace prints `s_dev`.
    pub fn kernel_dev(&self) -> u64 {
        let d = fs::metadata(self.merged()).unwrap().dev();
        ((libc::major(d) as u64) << 20) | libc::minor(d) as u64
    }

    /// Writes `size` bytes of a repeating pattern into lower layer `layer` at `rel`.
    pub fn put(&self, layer: usize, rel: &str, size: usize) {
        let p = self.lower(layer).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        fs::write(p, data).unwrap();
    }

    /// The visible lower entry for `rel` (topmost layer that has it), if any.
    pub fn from_below(&self, rel: &str) -> Option<(usize, fs::Metadata)> {
        (0..self.lowers).find_map(|i| {
            fs::symlink_metadata(self.lower(i).join(rel))
                .ok()
                .map(|m| (i, m))
        })
    }

    /// Every path under upperdir ("/a/b"), directories included.
    pub fn upper_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.upper(), &self.upper(), &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(format!("/{}", p.strip_prefix(base).unwrap().display()));
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(base, &p, out);
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.merged()).status();
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = fs::remove_dir(&self.root);
    }
}

/// Lines of an `--events` file.
pub fn read_events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

/// `report events.ndjson --json` rebuilds the live `--json` report of the same run.
pub fn assert_replay_equals_live(events: &std::path::Path, live: &std::path::Path) {
    let replayed = events.with_extension("replayed.json");
    let o = tracer()
        .arg("report")
        .arg(events)
        .arg("--json")
        .arg(&replayed)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("overlay-trace"), "{}", stdout(&o));
    let read = |p: &std::path::Path| -> Value {
        serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(live), read(&replayed));
    assert!(a["mounts"].as_array().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        a, b,
        "the replayed report equals the live one, field for field"
    );
}

/// Each container's root mounts in a JSON report, by container name: the heaviest mount (they come
/// heaviest first) stands for the container, and its copy-ups are those of all its root mounts.
/// Docker mounts a container's root more than once while creating and starting it (each a mount
/// of its own in the report), and which one a process writes through depends on timing.
pub fn copy_ups_by_container(
    report: &Value,
    events: &[Value],
) -> BTreeMap<String, (Value, std::collections::BTreeSet<String>)> {
    let mut out: BTreeMap<String, (Value, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for m in report["mounts"].as_array().into_iter().flatten() {
        // The container's root, not Docker's brief init-layer mount.
        let Some(name) = m["container"]["name"]
            .as_str()
            .filter(|_| m["container"]["role"].is_null())
        else {
            continue;
        };
        let paths = events
            .iter()
            .filter(|e| {
                e["type"] == "copy_up" && e["dev"] == m["dev"] && e["mount_gen"] == m["mount_gen"]
            })
            .filter_map(|e| e["path"].as_str().map(str::to_string));
        let entry = out
            .entry(name.to_string())
            .or_insert_with(|| (m.clone(), Default::default()));
        entry.1.extend(paths);
    }
    out
}

pub mod attached;
pub mod bpftrace;
pub mod disks;
pub mod runtimes;
pub mod serving;
pub mod tenants;
pub use bpftrace::{Bpftrace, bpftrace_map};

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
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
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

pub fn overlay_trace(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Where a test may write files the host can read afterwards (the VM shares the repo).
pub fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-out");
    fs::create_dir_all(&d).unwrap();
    d
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "failed: {cmd}");
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

/// bpftrace running a program; `stop` interrupts it and returns what it printed (map dumps).
pub struct Bpftrace {
    child: Child,
    out: PathBuf,
}

impl Bpftrace {
    /// Starts bpftrace and waits until its BEGIN probe printed "ready" (probes attached).
    pub fn start(program: &str, out: PathBuf) -> Self {
        let file = fs::File::create(&out).unwrap();
        let child = Command::new("bpftrace")
            .arg("-e")
            .arg(format!("BEGIN {{ printf(\"ready\\n\"); }} {program}"))
            .stdout(file)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bpftrace");
        let started = Instant::now();
        loop {
            if fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("ready")
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "bpftrace did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Bpftrace { child, out }
    }

    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap();
        fs::read_to_string(&self.out).unwrap()
    }
}

/// Parses bpftrace map lines such as `@copyups[54]: 7` into key -> value.
pub fn bpftrace_map(output: &str, map: &str) -> BTreeMap<String, u64> {
    let prefix = format!("@{map}[");
    let mut out = BTreeMap::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            if let Some((k, v)) = rest.split_once("]: ") {
                out.insert(k.to_string(), v.trim().parse().unwrap());
            }
        } else if let Some(v) = line.strip_prefix(&format!("@{map}: ")) {
            out.insert(String::new(), v.trim().parse().unwrap());
        }
    }
    out
}

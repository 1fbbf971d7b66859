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
pub mod tenants;
pub use bpftrace::{Bpftrace, bpftrace_map};

/// Real container runtimes in the VM: dockerd (tmpfs data root, no network), podman (its storage
/// on a tmpfs) and containerd (its own root, state and socket on a tmpfs), started by the tests.
pub mod runtimes {
    use std::{
        fs,
        process::{Child, Command, Output},
        time::{Duration, Instant},
    };

    use super::{out_dir, stderr, stdout};

    pub const ROOT: &str = "/run/overlay-trace-docker";

    pub struct Dockerd {
        child: Child,
    }

    impl Dockerd {
        pub fn start() -> Self {
            fs::create_dir_all(ROOT).unwrap();
            sh(&format!(
                "mountpoint -q {ROOT} || mount -t tmpfs tmpfs {ROOT}"
            ));
            let spawn = |attempt: u32| {
                let log =
                    fs::File::create(out_dir().join(format!("dockerd.{attempt}.log"))).unwrap();
                Command::new("dockerd")
                    .args([
                        "--data-root",
                        &format!("{ROOT}/data"),
                        "--exec-root",
                        &format!("{ROOT}/exec"),
                    ])
                    .args([
                        "--pidfile",
                        &format!("{ROOT}/docker.pid"),
                        "--host",
                        &format!("unix://{ROOT}/docker.sock"),
                    ])
                    .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("dockerd")
            };
            let mut attempt = 1;
            let mut child = spawn(attempt);
            let started = Instant::now();
            while !docker(&["info"]).status.success() {
                // dockerd gives up when the containerd it starts is slow to answer (a loaded
                // host under emulation): it is started again, up to 3 times.
                if child.try_wait().ok().flatten().is_some() && attempt < 3 {
                    attempt += 1;
                    let _ = fs::remove_file(format!("{ROOT}/docker.pid"));
                    child = spawn(attempt);
                }
                if started.elapsed() >= Duration::from_secs(600) {
                    // Not left running into the tests that follow.
                    let _ = child.kill();
                    let _ = child.wait();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "dockerd did not start: {}",
                    fs::read_to_string(out_dir().join(format!("dockerd.{attempt}.log")))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            Dockerd { child }
        }
    }

    impl Drop for Dockerd {
        fn drop(&mut self) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg("docker rm -f $(docker ps -aq) >/dev/null 2>&1")
                .env("DOCKER_HOST", host())
                .status();
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }

    pub fn host() -> String {
        format!("unix://{ROOT}/docker.sock")
    }

    pub fn sh(cmd: &str) {
        let st = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("DOCKER_HOST", host())
            .status()
            .unwrap();
        assert!(st.success(), "failed: {cmd}");
    }

    pub fn docker(args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", host())
            .output()
            .unwrap()
    }

    pub fn docker_ok(args: &[&str]) -> String {
        let o = docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// Busybox as an image root: `sh` and friends, /etc/greeting and /etc/app.conf.
    pub fn busybox_rootfs(dir: &std::path::Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
        for t in [
            "sh", "echo", "cat", "sleep", "chmod", "touch", "mkdir", "ls",
        ] {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(t));
        }
        fs::write(dir.join("etc/greeting"), "hello\n").unwrap();
        fs::write(dir.join("etc/app.conf"), "cfg\n").unwrap();
        fs::write(dir.join("etc/untouched"), "same\n").unwrap();
    }

    /// Podman with its storage on a tmpfs (the guest's own mount: the host's is untouched) and
    /// `localhost/ot-bb:1` imported from a busybox root.
    pub struct Podman;

    impl Podman {
        pub fn start() -> Self {
            let storage = "/var/lib/containers";
            fs::create_dir_all(storage).unwrap();
            sh(&format!(
                "mountpoint -q {storage} || mount -t tmpfs tmpfs {storage}"
            ));
            let rootfs = std::path::Path::new("/run/ot-podman-rootfs");
            busybox_rootfs(rootfs);
            sh(&format!(
                "tar -C {} -c . | podman import - localhost/ot-bb:1 >/dev/null",
                rootfs.display()
            ));
            Podman
        }

        pub fn run(args: &[&str]) -> Output {
            Command::new("podman").args(args).output().unwrap()
        }

        /// What `podman diff` says a container changed that existed below: its copy-ups.
        pub fn changed(name: &str) -> std::collections::BTreeSet<String> {
            let o = Self::run(&["diff", name]);
            assert!(o.status.success(), "podman diff: {}", stderr(&o));
            stdout(&o)
                .lines()
                .filter_map(|l| l.strip_prefix("C ").map(str::to_string))
                .collect()
        }
    }

    impl Drop for Podman {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rm", "-af"]).output();
        }
    }

    pub const CTRD: &str = "/run/ot-containerd";

    /// containerd on a tmpfs, with `docker.io/library/ot-bb:1` imported into namespace k8s.io
    /// from an OCI layout made here (no registry).
    pub struct Containerd {
        child: Child,
    }

    impl Containerd {
        pub fn start() -> Self {
            fs::create_dir_all(CTRD).unwrap();
            sh(&format!(
                "mountpoint -q {CTRD} || mount -t tmpfs tmpfs {CTRD}"
            ));
            let log = fs::File::create(out_dir().join("containerd.log")).unwrap();
            let child = Command::new("containerd")
                .args([
                    "--root",
                    &format!("{CTRD}/root"),
                    "--state",
                    &format!("{CTRD}/state"),
                ])
                .args(["--address", &format!("{CTRD}/containerd.sock")])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("containerd");
            let started = Instant::now();
            while !Self::ctr(&["version"]).status.success() {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "containerd did not start"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            let rootfs = std::path::Path::new(CTRD).join("rootfs");
            busybox_rootfs(&rootfs);
            let oci = std::path::Path::new(CTRD).join("oci.tar");
            oci_image_tar(&rootfs, &oci, "docker.io/library/ot-bb:1");
            let o = Self::ctr(&["images", "import", oci.to_str().unwrap()]);
            assert!(o.status.success(), "ctr import: {}", stderr(&o));
            Containerd { child }
        }

        pub fn ctr(args: &[&str]) -> Output {
            Command::new("ctr")
                .args([
                    "--address",
                    &format!("{CTRD}/containerd.sock"),
                    "--namespace",
                    "k8s.io",
                ])
                .args(args)
                .output()
                .unwrap()
        }
    }

    impl Drop for Containerd {
        fn drop(&mut self) {
            // SAFETY: signalling the daemon we started.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }

    /// An OCI image layout tarball of one layer (`rootfs` as a tar), named `name`.
    pub fn oci_image_tar(rootfs: &std::path::Path, out: &std::path::Path, name: &str) {
        let script = r#"
import hashlib, io, json, subprocess, sys, tarfile
rootfs, out, name = sys.argv[1:4]
layer = subprocess.run(["tar", "-C", rootfs, "-c", "."], check=True, capture_output=True).stdout
def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [digest(layer)]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": digest(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name}}]}).encode()
with tarfile.open(out, "w") as t:
    def add(n, b):
        i = tarfile.TarInfo(n); i.size = len(b); t.addfile(i, io.BytesIO(b))
    add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    add("index.json", index)
    for b in (layer, config, manifest):
        add("blobs/sha256/" + digest(b)[7:], b)
"#;
        let st = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(rootfs)
            .arg(out)
            .arg(name)
            .status()
            .unwrap();
        assert!(st.success(), "building the OCI image");
    }
}

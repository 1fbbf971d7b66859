//! Real container runtimes in the VM: dockerd (tmpfs data root, no network), podman (its storage
//! on a tmpfs) and containerd (its own root, state and socket on a tmpfs), started by the tests.

use std::{
    fs,
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use super::{out_dir, stderr, stdout};

pub const ROOT: &str = "/run/overlay-trace-docker";

/// A dockerd for one test, or the one the Docker tests of a VM boot share: with
/// `OVERLAY_TRACE_SHARED_DOCKERD=1` (set by `cargo xtask test` around those tests, which it runs
/// one after another, stopping that dockerd after the last) a running one is used and one
/// started is left running; each test's containers are removed when it ends either way.
/// Starting dockerd costs tens of seconds under emulation.
pub struct Dockerd {
    child: Option<Child>,
}

fn shared() -> bool {
    std::env::var_os("OVERLAY_TRACE_SHARED_DOCKERD").is_some_and(|v| v == "1")
}

impl Dockerd {
    pub fn start() -> Self {
        if shared() && docker(&["info"]).status.success() {
            return Dockerd { child: None };
        }
        fs::create_dir_all(ROOT).unwrap();
        sh(&format!(
            "mountpoint -q {ROOT} || mount -t tmpfs tmpfs {ROOT}"
        ));
        let spawn = |attempt: u32| {
            let log = fs::File::create(out_dir().join(format!("dockerd.{attempt}.log"))).unwrap();
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
        Dockerd {
            child: (!shared()).then_some(child),
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("docker rm -f $(docker ps -aq) >/dev/null 2>&1")
            .env("DOCKER_HOST", host())
            .status();
        if let Some(child) = &mut self.child {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
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

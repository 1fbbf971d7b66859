//! Containers on a real dockerd inside the VM (Debian docker.io, tmpfs data root, no network):
//! attribution of copy-ups to the right container, checked against `docker diff`; the exit status
//! of a traced `docker run`; `--container` filtering in the kernel and its error for unknown names.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use overlay_trace_tests::{bin, copy_ups_by_container, out_dir, read_events, stderr, stdout};
use serde_json::Value;

use overlay_trace_tests::runtimes::{Dockerd, ROOT, docker_ok, host, sh};

fn tracer() -> Command {
    let mut c = Command::new(bin());
    c.env("DOCKER_HOST", host());
    c
}

/// A three-layer image: a busybox root imported from a tarball, then two commits.
fn build_image() {
    let rootfs = PathBuf::from(ROOT).join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for t in [
        "sh", "echo", "cat", "chmod", "touch", "sleep", "mkdir", "head", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(t)).unwrap();
    }
    for d in ["etc", "data", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::write(rootfs.join("etc/motd"), "base\n").unwrap();
    fs::write(rootfs.join("etc/motd2"), "base2\n").unwrap();
    fs::write(rootfs.join("data/base.txt"), vec![b'b'; 1 << 20]).unwrap();
    sh(&format!(
        "tar -C {} -c . | docker import - ot-base:1 >/dev/null",
        rootfs.display()
    ));
    docker_ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "ot-l2",
        "ot-base:1",
        "sh",
        "-c",
        "mkdir -p /opt/dir && echo two > /opt/dir/two.txt && echo l2 > /data/l2.txt",
    ]);
    docker_ok(&["commit", "ot-l2", "ot-img:2"]);
    docker_ok(&[
        "run",
        "--network",
        "none",
        "--name",
        "ot-l3",
        "ot-img:2",
        "sh",
        "-c",
        "mkdir -p /srv && echo three > /srv/three.txt",
    ]);
    docker_ok(&["commit", "ot-l3", "ot-img:3"]);
}

/// What `docker diff` says a container changed that already existed below: its copy-ups.
fn report_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn changed_by_docker_diff(name: &str) -> BTreeSet<String> {
    docker_ok(&["diff", name])
        .lines()
        .filter_map(|l| l.strip_prefix("C ").map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs kprobes on overlayfs and dockerd: runs in the VM via `cargo xtask test`"]
fn containers_are_attributed_and_filtered() {
    let _d = Dockerd::start();
    build_image();
    let dir = out_dir();
    let (events, report) = (dir.join("docker.ndjson"), dir.join("docker.json"));

    // Two containers at once, with different writes.
    let o = tracer()
        .args([
            "run",
            "-q",
            "--events",
            events.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
            "--",
        ])
        .args([
            "sh",
            "-c",
            "docker run -d --network none --name alpha ot-img:3 sh -c \
            'echo a >> /etc/motd; echo a >> /data/base.txt; touch /opt/dir/new; sleep 8' && \
            docker run -d --network none --name beta ot-img:3 sh -c \
            'chmod 600 /etc/motd2; echo b >> /srv/three.txt; echo b >> /data/l2.txt; sleep 8' && \
            docker wait alpha beta",
        ])
        .env("DOCKER_HOST", host())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let by = copy_ups_by_container(&report_json(&report), &read_events(&events));
    for name in ["alpha", "beta"] {
        let (m, traced) = by
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in report: {}", stdout(&o)));
        let expected = changed_by_docker_diff(name);
        assert!(!expected.is_empty());
        assert_eq!(traced, &expected, "{name}: copy-ups vs docker diff");
        assert_eq!(m["container"]["image"], "ot-img:3");
        assert_eq!(m["container"]["runtime"], "docker");
        assert_eq!(m["layers"], 4, "three image layers and Docker's init layer");
        assert!(
            m["mount_ns"].as_u64().is_some_and(|t| t > 0),
            "mount time of {name}: {m}"
        );
    }
    assert!(by["alpha"].1.contains("/etc/motd") && !by["alpha"].1.contains("/etc/motd2"));
    assert!(by["beta"].1.contains("/etc/motd2") && !by["beta"].1.contains("/etc/motd"));
    assert!(stdout(&o).contains("container alpha ("), "{}", stdout(&o));
    // The events file alone rebuilds the same report, containers and all.
    overlay_trace_tests::assert_replay_equals_live(&events, &report);

    // The traced command's status comes back.
    let o = tracer()
        .args([
            "run",
            "-q",
            "--",
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "ot-img:3",
            "sh",
            "-c",
            "exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // --container: only gamma's superblock is traced, though delta copies up too.
    for n in ["gamma", "delta"] {
        docker_ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            n,
            "ot-img:3",
            "sleep",
            "600",
        ]);
    }
    let o = tracer()
        .args(["run", "-q", "--container", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("no running container matches \"nope\"; running containers:")
            && err.contains("gamma")
            && err.contains("delta"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (events, report) = (
        dir.join("docker-filter.ndjson"),
        dir.join("docker-filter.json"),
    );
    let o = tracer()
        .args(["run", "-q", "--container", "gamma", "--events", events.to_str().unwrap(), "--json", report.to_str().unwrap(), "--"])
        .args(["sh", "-c", "docker exec gamma sh -c 'echo g >> /etc/motd' && docker exec delta sh -c 'echo d >> /etc/motd'"])
        .env("DOCKER_HOST", host())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        changed_by_docker_diff("delta").contains("/etc/motd"),
        "delta did copy up"
    );
    let by = copy_ups_by_container(&report_json(&report), &read_events(&events));
    assert_eq!(by["gamma"].1, changed_by_docker_diff("gamma"));
    assert!(
        by.get("delta").is_none_or(|(_, p)| p.is_empty()),
        "delta was filtered out: {:?}",
        by.get("delta")
    );
    let r: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["container"]["name"] == "gamma"),
        "only gamma: {r}"
    );
}

//! Containers on a real dockerd inside the VM (Debian docker.io, tmpfs data root, no network):
//! attribution of copy-ups to the right container, checked against `docker diff`; `--container`
//! filtering in the kernel, following a restart, and its error for unknown names. (A traced
//! command's exit status is kernel_trace's.)

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
};

use overlay_trace_tests::{
    Tracer, copy_ups_by_container, out_dir, read_events, read_json, stderr, stdout,
};
use serde_json::Value;

use overlay_trace_tests::runtimes::{Dockerd, ROOT, docker_ok, host, sh};

/// The tracer, told where the test's dockerd listens.
fn tracer() -> Tracer {
    let mut c = overlay_trace_tests::tracer();
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
    let by = copy_ups_by_container(&read_json(&report), &read_events(&events));
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
    let by = copy_ups_by_container(&read_json(&report), &read_events(&events));
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

    // --container follows a restart: gamma stops, another container takes its root's device
    // number and copies up (never traced), gamma starts again on a new number and is traced.
    // (Docker commands cost tens of seconds each under emulation: as few as will do.)
    docker_ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "eps",
        "ot-img:3",
        "sh",
        "-c",
        "echo e >> /etc/motd2; exec sleep 600",
    ]);
    // A container's merged dir and upper dir keep their paths across restarts.
    let dirs = docker_ok(&[
        "inspect",
        "-f",
        "{{.GraphDriver.Data.MergedDir}} {{.GraphDriver.Data.UpperDir}}",
        "gamma",
        "eps",
    ]);
    let dirs: Vec<&str> = dirs.split_whitespace().collect();
    let (gamma_root, eps_root, eps_upper) = (dirs[0], dirs[2], dirs[3]);
    let devs = dir.join("docker-restart.devs");
    let (events, report) = (
        dir.join("docker-restart.ndjson"),
        dir.join("docker-restart.json"),
    );
    let script = format!(
        "set -e; echo \"before $(mountpoint -d {gamma_root})\" > {d}; \
         docker stop -t 1 gamma >/dev/null; docker start eps >/dev/null; \
         echo \"eps $(mountpoint -d {eps_root})\" >> {d}; \
         while [ ! -e {eps_upper}/etc/motd2 ]; do sleep 0.2; done; \
         docker start gamma >/dev/null; echo \"after $(mountpoint -d {gamma_root})\" >> {d}; \
         docker exec gamma sh -c 'echo 2 >> /data/base.txt'",
        d = devs.display()
    );
    let o = tracer()
        .args([
            "run",
            "-q",
            "--container",
            "gamma",
            "--events",
            events.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
            "--",
        ])
        .args(["sh", "-c", &script])
        .env("DOCKER_HOST", host())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let devs = fs::read_to_string(&devs).unwrap();
    let dev = |w: &str| {
        devs.lines()
            .find_map(|l| l.strip_prefix(&format!("{w} ")))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        dev("eps"),
        dev("before"),
        "eps took gamma's old number: {devs}"
    );
    assert_ne!(dev("after"), dev("before"), "{devs}");
    assert!(
        changed_by_docker_diff("eps").contains("/etc/motd2"),
        "eps did copy up"
    );
    let gamma_now = changed_by_docker_diff("gamma");
    let by = copy_ups_by_container(&read_json(&report), &read_events(&events));
    let want: BTreeSet<String> = ["/data", "/data/base.txt"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(want.is_subset(&gamma_now), "{gamma_now:?}");
    assert_eq!(
        by["gamma"].1, want,
        "both of gamma's roots traced, nothing else"
    );
    assert!(
        !by.contains_key("eps"),
        "eps never traced: {:?}",
        by.get("eps")
    );
    let r = read_json(&report);
    let mounts = r["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().all(|m| m["container"]["name"] == "gamma"),
        "only gamma: {r}"
    );
    // Every call traced was on one of gamma's two roots.
    let roots: BTreeSet<(String, u64)> = mounts
        .iter()
        .map(|m| {
            (
                m["dev"].as_str().unwrap().to_string(),
                m["mount_gen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(roots.len(), 2, "gamma's root before and after: {roots:?}");
    assert!(
        read_events(&events)
            .iter()
            .filter(|e| e["type"] == "copy_up" || e["type"] == "lookup")
            .all(|e| roots.contains(&(
                e["dev"].as_str().unwrap().to_string(),
                e["mount_gen"].as_u64().unwrap()
            ))),
        "a call on another overlay was traced"
    );
}

/// Which image layer, and which Dockerfile line, each copied-up object came from. An image built
/// with `docker build` (offline, FROM a locally imported base) with three `RUN` layers, each
/// making files of known size; a container appends to files of the first and the third and
/// chmods one of the second. The oracle is the Dockerfile itself: each file was made by one
/// known `RUN` line.
#[test]
#[ignore = "needs kprobes on overlayfs and dockerd: runs in the VM via `cargo xtask test`"]
fn copy_ups_are_attributed_to_their_image_layer_and_instruction() {
    let _d = Dockerd::start();
    let rootfs = PathBuf::from(ROOT).join("layers-rootfs");
    overlay_trace_tests::runtimes::busybox_rootfs(&rootfs);
    sh(&format!(
        "tar -C {} -c . | docker import - ot-lbase:1 >/dev/null",
        rootfs.display()
    ));
    let ctx = PathBuf::from(ROOT).join("layers-ctx");
    fs::create_dir_all(&ctx).unwrap();
    // The files, and what each RUN line wrote (its size is the bytes its copy-up copies).
    let layers = [
        ("l1/a.txt", "one\n", "echo one"),
        ("l2/b.conf", "second\n", "echo second"),
        ("l3/c.log", "third line\n", "echo 'third line'"),
    ];
    let mut dockerfile = String::from("FROM ot-lbase:1\n");
    for (path, _, echo) in layers {
        let dir = path.split('/').next().unwrap();
        dockerfile.push_str(&format!("RUN mkdir -p /{dir} && {echo} > /{path}\n"));
    }
    fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    sh(&format!(
        "DOCKER_BUILDKIT=0 docker build -q -t ot-layers:1 {} >/dev/null",
        ctx.display()
    ));

    let dir = out_dir();
    let (events, report) = (dir.join("layers.ndjson"), dir.join("layers.json"));
    let o = tracer()
        .args(["run", "-q", "--events", events.to_str().unwrap()])
        .args(["--json", report.to_str().unwrap(), "--"])
        .args([
            "docker",
            "run",
            "--network",
            "none",
            "--name",
            "lay",
            "ot-layers:1",
            "sh",
            "-c",
            "echo x >> /l1/a.txt; chmod 600 /l2/b.conf; echo z >> /l3/c.log",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    println!("{}", stdout(&o));
    let changed = changed_by_docker_diff("lay");
    for (path, _, _) in layers {
        assert!(changed.contains(&format!("/{path}")), "{changed:?}");
    }

    // The container's root mounts, and their copy-ups by source layer.
    let r = read_json(&report);
    let mounts: Vec<&Value> = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["container"]["name"] == "lay" && m["container"]["role"].is_null())
        .collect();
    assert!(!mounts.is_empty(), "{r}");
    let mut by_instruction: BTreeMap<String, (u64, u64, Value)> = BTreeMap::new();
    let mut total = 0;
    for m in &mounts {
        total += m["copy_up"]["count"].as_u64().unwrap();
        for l in m["copy_up"]["by_layer"].as_array().into_iter().flatten() {
            let what = l["created_by"].as_str().unwrap_or("(none)").to_string();
            let e = by_instruction
                .entry(what)
                .or_insert((0, 0, l["image_layer"].clone()));
            e.0 += l["count"].as_u64().unwrap();
            e.1 += l["data_bytes"].as_u64().unwrap();
        }
    }
    println!("{by_instruction:#?}");
    assert_eq!(
        by_instruction.values().map(|v| v.0).sum::<u64>(),
        total,
        "every copy-up has a source layer row"
    );
    assert!(
        !by_instruction.contains_key("(none)"),
        "no copy-up of an unknown layer: {by_instruction:?}"
    );
    for (i, (path, content, echo)) in layers.iter().enumerate() {
        let (instruction, (count, bytes, image_layer)) = by_instruction
            .iter()
            .find(|(k, _)| k.starts_with("RUN ") && k.contains(echo))
            .unwrap_or_else(|| panic!("no row for {echo}: {by_instruction:?}"));
        // The directory the RUN line made and the file in it.
        assert_eq!(*count, 2, "{instruction}: /{path} and its directory");
        assert_eq!(
            *bytes,
            content.len() as u64,
            "{instruction}: the file's bytes"
        );
        // Bottom first: the imported base is 1, the RUN lines 2, 3, 4 of 4.
        assert_eq!(image_layer, &serde_json::json!([i + 2, 4]), "{instruction}");
    }
    // The text report says it per layer, with the instruction.
    assert!(
        stdout(&o).contains("by source layer:") && stdout(&o).contains("layer 4/4"),
        "{}",
        stdout(&o)
    );
    // Each copy-up's layer follows it as a `source_layer` record, and the events file replays
    // to the same report.
    let evs = read_events(&events);
    let layered = evs.iter().filter(|e| e["type"] == "source_layer").count();
    let copied = evs
        .iter()
        .filter(|e| e["type"] == "copy_up" && e["path"] == "/l3/c.log")
        .count();
    assert!(
        copied > 0 && layered >= copied,
        "{copied} copy-ups of /l3/c.log, {layered} layers"
    );
    overlay_trace_tests::assert_replay_equals_live(&events, &report);
}

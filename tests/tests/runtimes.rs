//! podman and containerd run for real in the VM, as Docker does in docker.rs: each container is
//! named (runtime, name, id, image) and its copy-ups equal what its runtime says it changed.
//! podman's container runs beside a Docker one: each mount attributed to the right runtime.

use std::{collections::BTreeSet, fs, path::Path};

use overlay_trace_tests::{
    copy_ups_by_container, out_dir, read_events,
    runtimes::{CTRD, Containerd, Dockerd, Podman, docker_ok, host},
    stderr, stdout,
};
use overlay_trace_tests::{read_json, tracer};
use serde_json::Value;

/// The mount of the container named `name` and the copy-ups of all its root mounts.
fn mount_of(r: &Value, events: &[Value], name: &str) -> (Value, BTreeSet<String>) {
    copy_ups_by_container(r, events)
        .remove(name)
        .unwrap_or_else(|| panic!("{name} is not named in the report: {r}"))
}

fn trace(name: &str, script: &str) -> (Value, Vec<Value>, String) {
    let (json, events) = (
        out_dir().join(format!("{name}.json")),
        out_dir().join(format!("{name}.ndjson")),
    );
    let o = tracer()
        .env("DOCKER_HOST", host())
        .args([
            "run",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--",
        ])
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (read_json(&json), read_events(&events), stdout(&o))
}

#[test]
#[ignore = "needs kprobes on overlayfs and containerd: runs in the VM via `cargo xtask test`"]
fn a_containerd_task_is_named_from_its_cri_annotations() {
    let _c = Containerd::start();
    // ctr sets OCI annotations in the task's spec: the ones the CRI plugin would set for a pod.
    let script = format!(
        "ctr --address {CTRD}/containerd.sock --namespace k8s.io run --snapshotter overlayfs \
         --annotation io.kubernetes.cri.sandbox-name=web-pod \
         --annotation io.kubernetes.cri.sandbox-namespace=shop \
         --annotation io.kubernetes.cri.container-name=app \
         --annotation io.kubernetes.cri.image-name=docker.io/library/ot-bb:1 \
         docker.io/library/ot-bb:1 task1 sh -c 'echo x >> /etc/greeting; echo y >> /etc/app.conf; sleep 3'"
    );
    let (r, events, out) = trace("containerd", &script);
    println!("{out}");
    let (m, traced) = mount_of(&r, &events, "web-pod/app");
    assert_eq!(m["container"]["runtime"], "containerd");
    assert_eq!(m["container"]["id"], "task1");
    assert_eq!(m["container"]["namespace"], "shop");
    assert_eq!(m["container"]["image"], "docker.io/library/ot-bb:1");
    // The oracle: what the task's snapshot upper dir holds that existed in the image.
    let upper = m["mount"]["upperdir"]
        .as_str()
        .expect("upperdir")
        .to_string();
    let rootfs = Path::new(CTRD).join("rootfs");
    let mut from_below = BTreeSet::new();
    collect(Path::new(&upper), Path::new(&upper), &mut from_below);
    from_below.retain(|p| rootfs.join(&p[1..]).symlink_metadata().is_ok());
    assert!(from_below.contains("/etc/greeting"), "{from_below:?}");
    assert_eq!(traced, from_below, "copy-ups vs the snapshot's upper dir");
}

fn collect(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        out.insert(format!("/{}", p.strip_prefix(base).unwrap().display()));
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect(base, &p, out);
        }
    }
}

/// A Docker and a podman container started at once: each mount named by its own runtime (podman's
/// with its full id, image and the digest of the layer each copy-up came from), and each one's
/// copy-ups equal to what its runtime's `diff` says it changed.
#[test]
#[ignore = "needs kprobes on overlayfs, dockerd and podman: runs in the VM via `cargo xtask test`"]
fn docker_and_podman_started_together_are_each_attributed() {
    let _d = Dockerd::start();
    let _p = Podman::start();
    let rootfs = Path::new("/run/ot-podman-rootfs");
    overlay_trace_tests::runtimes::sh(&format!(
        "tar -C {} -c . | docker import - ot-bb:1 >/dev/null",
        rootfs.display()
    ));
    let (r, events, out) = trace(
        "two_runtimes",
        "docker run -d --network none --name dk ot-bb:1 sh -c 'echo d >> /etc/greeting; sleep 4' >/dev/null & \
         podman run --network none --name pd localhost/ot-bb:1 sh -c 'echo p >> /etc/app.conf; chmod 600 /etc/untouched; sleep 4' & \
         wait; docker wait dk >/dev/null",
    );
    println!("{out}");
    let (dk, dk_paths) = mount_of(&r, &events, "dk");
    let (pd, pd_paths) = mount_of(&r, &events, "pd");
    assert_eq!(dk["container"]["runtime"], "docker");
    assert_eq!(pd["container"]["runtime"], "podman");
    assert_ne!(
        (dk["dev"].clone(), dk["mount_gen"].clone()),
        (pd["dev"].clone(), pd["mount_gen"].clone())
    );
    let docker_changed: BTreeSet<String> = docker_ok(&["diff", "dk"])
        .lines()
        .filter_map(|l| l.strip_prefix("C ").map(str::to_string))
        .collect();
    assert_eq!(dk_paths, docker_changed, "docker: copy-ups vs docker diff");
    assert_eq!(
        pd_paths,
        Podman::changed("pd"),
        "podman: copy-ups vs podman diff"
    );
    assert!(dk_paths.contains("/etc/greeting") && !dk_paths.contains("/etc/app.conf"));
    assert!(
        pd_paths.contains("/etc/app.conf")
            && pd_paths.contains("/etc/untouched")
            && !pd_paths.contains("/etc/greeting")
    );
    podman_is_named_with_its_layer(&pd, &out);
}

/// podman's container `pd`: its full id and image, its line in the text report, and every
/// copy-up from the image's one layer, named by the digest podman gives it.
fn podman_is_named_with_its_layer(pd: &Value, out: &str) {
    assert_eq!(pd["container"]["image"], "localhost/ot-bb:1");
    let id = String::from_utf8(Podman::run(&["inspect", "-f", "{{.Id}}", "pd"]).stdout).unwrap();
    assert_eq!(pd["container"]["id"], id.trim(), "the full container id");
    assert!(
        out.contains(&format!("container pd ({}, podman)", &id.trim()[..12])),
        "{out}"
    );
    let layers = String::from_utf8(
        Podman::run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            "localhost/ot-bb:1",
        ])
        .stdout,
    )
    .unwrap();
    let digests: Vec<String> = serde_json::from_str(layers.trim()).unwrap();
    assert_eq!(digests.len(), 1, "{layers}");
    let by_layer = pd["copy_up"]["by_layer"].as_array().expect("by_layer");
    assert!(!by_layer.is_empty());
    for l in by_layer {
        assert_eq!(l["digest"].as_str(), Some(digests[0].as_str()), "{l}");
        assert_eq!(l["image_layer"], serde_json::json!([1, 1]), "{l}");
    }
}

//! A tenant cannot forge a runtime's labels: an unprivileged user in a user and mount namespace
//! of its own mounts an overlay where containerd mounts a Kubernetes container's root (a tmpfs
//! over `/run/containerd` in its namespace, a `config.json` of its making beside it) and copies
//! up on it. The tracer counts its copy-ups but names no runtime, pod or namespace for it.

use std::fs;

use overlay_trace_tests::{out_dir, read_json, stderr, stdout, tracer};

/// What the tenant runs (as `nobody`, in `unshare -Urm`): the forged task directory, the
/// overlay, two copy-ups; the upper dir's entries printed (the oracle), and the process kept a
/// moment so that its namespace can be read.
const TENANT: &str = r#"
set -e
mount -t tmpfs forged /run/containerd
task=/run/containerd/io.containerd.runtime.v2.task/kube-system/etcd-forged
mkdir -p $task/rootfs /run/containerd/l /run/containerd/u /run/containerd/w
cat > $task/config.json <<'EOF'
{"annotations": {"io.kubernetes.cri.container-type": "container",
 "io.kubernetes.cri.container-name": "etcd", "io.kubernetes.cri.sandbox-name": "etcd-node",
 "io.kubernetes.cri.sandbox-namespace": "kube-system",
 "io.kubernetes.cri.image-name": "registry.k8s.io/etcd:3.5"}}
EOF
echo a > /run/containerd/l/f
echo b > /run/containerd/l/g
mount -t overlay overlay -o lowerdir=/run/containerd/l,upperdir=/run/containerd/u,workdir=/run/containerd/w $task/rootfs
echo x >> $task/rootfs/f
echo y >> $task/rootfs/g
echo "upper: $(ls -A /run/containerd/u | wc -l)"
sleep 6
"#;

#[test]
#[ignore = "needs kprobes on overlayfs and unprivileged user namespaces (runs in the VM)"]
fn a_tenants_mount_at_a_runtimes_path_gets_no_runtime_labels() {
    fs::create_dir_all("/run/containerd").unwrap();
    let json = out_dir().join("forged.json");
    let o = tracer()
        .run()
        .json(&json)
        .args([
            "--",
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .args(["unshare", "-Urm", "sh", "-c", TENANT])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let upper: u64 = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("upper: "))
        .expect("the tenant's upper dir")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(upper, 2);
    let report = read_json(&json);
    let ours = fs::read_link("/proc/self/ns/user").unwrap();
    let forged: Vec<_> = report["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["mount"]["mount_point"]
                .as_str()
                .is_some_and(|p| p.ends_with("/etcd-forged/rootfs"))
        })
        .collect();
    assert_eq!(
        forged.len(),
        1,
        "the tenant's mount, named by its mount point: {report}"
    );
    let m = forged[0];
    assert_eq!(m["copy_up"]["count"].as_u64(), Some(upper), "{m}");
    assert!(
        m["container"].is_null(),
        "a runtime's labels on a tenant's mount: {m}"
    );
    let userns = m["mount"]["userns"].as_u64().expect("its user namespace");
    assert_ne!(
        format!("user:[{userns}]"),
        ours.to_string_lossy(),
        "the tenant's user namespace is not ours"
    );
}

//! containerd (CRI or plain): the shim mounts a task's root filesystem at
//! `.../io.containerd.runtime.v2.task/<namespace>/<container-id>/rootfs`, so the mount point
//! names the container. (Pod names come from CRI labels, which need containerd's API: not read.)

use super::Container;

pub fn from_mount_point(mount_point: &str) -> Option<Container> {
    let rest = mount_point.split("/io.containerd.runtime.v2.task/").nth(1)?;
    let mut parts = rest.split('/');
    let (ns, id, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if leaf != "rootfs" || parts.next().is_some() || id.is_empty() {
        return None;
    }
    Some(Container {
        runtime: "containerd".into(),
        id: id.into(),
        name: id.chars().take(12).collect(),
        image: String::new(),
        namespace: Some(ns.into()), role: None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_rootfs_mount_point() {
        let c = from_mount_point(
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0/rootfs",
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(c.short_id(), "0f1e2d3c4b5a");
        assert!(from_mount_point("/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/rootfs/sub").is_none());
        assert!(from_mount_point("/var/lib/docker/overlay2/x/merged").is_none());
    }
}

//! containerd (CRI or plain): the shim mounts a task's root filesystem at
//! `.../io.containerd.runtime.v2.task/<namespace>/<container-id>/rootfs`, so the mount point names
//! the container. Next to it, the OCI bundle's config.json carries the CRI annotations
//! (`io.kubernetes.cri.sandbox-name`, `...sandbox-namespace`, `...container-name`,
//! `...image-name`): the Kubernetes pod, its namespace, the container and its image.

use std::path::Path;

use serde_json::Value;

use crate::stream::names::Container;

const POD: &str = "io.kubernetes.cri.sandbox-name";
const POD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CONTAINER: &str = "io.kubernetes.cri.container-name";
const IMAGE: &str = "io.kubernetes.cri.image-name";

pub fn from_mount_point(mount_point: &str) -> Option<Container> {
    let rest = mount_point
        .split("/io.containerd.runtime.v2.task/")
        .nth(1)?;
    let mut parts = rest.split('/');
    let (ns, id, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if leaf != "rootfs" || parts.next().is_some() || id.is_empty() {
        return None;
    }
    let mut c = Container {
        runtime: "containerd".into(),
        id: id.into(),
        name: id.chars().take(12).collect(),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let bundle = Path::new(mount_point).parent()?;
    // The mount point may come from another mount namespace: read it as untrusted.
    if let Some(spec) = crate::base::safe_fs::read_metadata(bundle, Path::new("config.json"))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        apply_cri_annotations(&mut c, &spec);
    }
    Some(c)
}

/// Names a CRI container `<pod>/<container>` in namespace `<pod namespace>`.
pub fn apply_cri_annotations(c: &mut Container, spec: &Value) {
    let a = &spec["annotations"];
    let get = |k: &str| a[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(pod) = get(POD) {
        c.name = match get(CONTAINER) {
            Some(ctr) => format!("{pod}/{ctr}"),
            None => pod.clone(),
        };
        c.pod = Some(pod);
    }
    if let Some(ns) = get(POD_NAMESPACE) {
        c.namespace = Some(ns);
    }
    if let Some(image) = get(IMAGE) {
        c.image = image;
    }
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
        assert!(
            from_mount_point("/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/rootfs/sub")
                .is_none()
        );
        assert!(from_mount_point("/var/lib/docker/overlay2/x/merged").is_none());
    }

    #[test]
    fn bundle_annotations_name_the_pod() {
        // The annotations containerd's CRI plugin writes into a container's OCI spec.
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir
            .path()
            .join("io.containerd.runtime.v2.task/k8s.io/abcdef0123456789");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"ociVersion":"1.1.0","annotations":{"io.kubernetes.cri.container-type":"container",
               "io.kubernetes.cri.container-name":"web","io.kubernetes.cri.sandbox-name":"shop-7d9f",
               "io.kubernetes.cri.sandbox-namespace":"prod","io.kubernetes.cri.image-name":"registry.local/shop:1.2"}}"#,
        )
        .unwrap();
        let c = from_mount_point(bundle.join("rootfs").to_str().unwrap()).unwrap();
        assert_eq!(c.name, "shop-7d9f/web");
        assert_eq!(c.namespace.as_deref(), Some("prod"));
        assert_eq!(c.image, "registry.local/shop:1.2");
        assert_eq!(c.id, "abcdef0123456789");
    }
}

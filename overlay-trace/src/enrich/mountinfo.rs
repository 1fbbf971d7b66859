//! Overlay mounts from mountinfo: superblock device -> mount point and layers. Events carry only
//! the device; this is how a report names the mount.

use crate::stream::names::OverlayMount;
use std::{collections::BTreeMap, fs};

use anyhow::{Context as _, Result};

use crate::stream::event::Dev;

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text, keeping overlay mounts. Bind mounts of the same superblock keep the
/// first mount point seen.
pub fn parse_mountinfo(text: &str) -> BTreeMap<Dev, OverlayMount> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 || r[0] != "overlay" {
            continue;
        }
        let Some((major, minor)) = l[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let dev = Dev { major, minor };
        let mut m = OverlayMount {
            dev,
            mount_point: unescape(l[4]),
            lowerdirs: Vec::new(),
            upperdir: None,
            workdir: None,
            ns_pid: None,
            userns: None,
        };
        for opt in r[2].split(',') {
            if let Some(v) = opt.strip_prefix("lowerdir=") {
                m.lowerdirs = v
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(unescape)
                    .collect();
            } else if let Some(v) = opt.strip_prefix("upperdir=") {
                m.upperdir = Some(unescape(v));
            } else if let Some(v) = opt.strip_prefix("workdir=") {
                m.workdir = Some(unescape(v));
            }
        }
        out.entry(dev).or_insert(m);
    }
    out
}

/// Our mountinfo's overlays. Read as bytes: any user can mount (FUSE, a user namespace) at a
/// path that is not UTF-8, and that must not make every other mount unreadable; such a path
/// shows with U+FFFD.
pub fn read_overlay_mounts() -> Result<BTreeMap<Dev, OverlayMount>> {
    let bytes = fs::read("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as a Docker host prints them (overlay2 with a relative-layer mount, plus noise).
    const MOUNTINFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
612 29 0:52 / /var/lib/docker/overlay2/3f0c/merged rw,relatime shared:300 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/3f0c/diff,workdir=/var/lib/docker/overlay2/3f0c/work,nouserxattr
613 29 0:52 / /mnt/bind\\040here rw - overlay overlay rw,lowerdir=/x,upperdir=/y,workdir=/z
700 29 0:60 / /ro rw - overlay none ro,lowerdir=/a:/b:/c
";

    #[test]
    fn overlay_mounts_with_layers() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 2);
        let d = &m[&Dev {
            major: 0,
            minor: 52,
        }];
        assert_eq!(d.mount_point, "/var/lib/docker/overlay2/3f0c/merged");
        assert_eq!(
            d.lowerdirs,
            vec![
                "/var/lib/docker/overlay2/l/ABC",
                "/var/lib/docker/overlay2/l/DEF"
            ]
        );
        assert_eq!(
            d.upperdir.as_deref(),
            Some("/var/lib/docker/overlay2/3f0c/diff")
        );
        let ro = &m[&Dev {
            major: 0,
            minor: 60,
        }];
        assert_eq!(ro.lowerdirs.len(), 3);
        assert_eq!(ro.upperdir, None);
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape("/mnt/bind\\040here"), "/mnt/bind here");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}

//! Which lower layer a path of an overlay comes from, looked up in the lowerdirs themselves
//! (read-only, so what they hold is what the kernel merged): a copied-up object's source is the
//! topmost lowerdir holding it; a directory was made by the lowest layer it shows from (every
//! layer adding beneath it holds it too). Lowerdirs come from mountinfo, possibly another user's
//! paths: looked up beneath a root we chose, no symlinks followed, run with a time budget.

use std::path::Path;

use crate::base::safe_fs;

/// The index (1 = topmost) of the first lowerdir holding `path` (a path inside the overlay,
/// starting with '/'), or None if none does or the path cannot be looked up safely. The
/// lowerdirs are resolved as the mount's own namespace sees them: beneath `root` (`/`, or
/// `/proc/<pid>/root` of a process in the mount namespace the mount was made in, held open). A
/// relative lowerdir (relative to the mounter's directory then) cannot be resolved: None. This
/// opens paths another user may control: run it with a budget (`enrich::budget`).
pub fn source_layer<'a>(
    root: &std::os::fd::OwnedFd,
    lowerdirs: impl IntoIterator<Item = &'a str>,
    path: &str,
) -> Option<u32> {
    let rel = path.trim_start_matches('/');
    if !safe_fs::is_confined(rel) {
        return None;
    }
    for (i, dir) in lowerdirs.into_iter().enumerate() {
        if !dir.starts_with('/') {
            return None;
        }
        let Ok(layer) = safe_fs::open_dir_in_root(root, dir) else {
            continue;
        };
        if safe_fs::entry_exists_beneath(&layer, Path::new(rel)) {
            return Some(i as u32 + 1);
        }
    }
    None
}

/// The index of the lowest lowerdir whose directory `path` shows in the merged view: the layer
/// that made the directory (every layer that adds something beneath it holds it too, so the
/// topmost holder is only the last to add). Scanned from the top; a layer where the path, or one
/// of the directories above it, is opaque, a whiteout or not a directory hides the layers below.
/// Same safety as `source_layer`: beneath `root`, no symlinks, run with a budget.
pub fn dir_origin_layer<'a>(
    root: &std::os::fd::OwnedFd,
    lowerdirs: impl IntoIterator<Item = &'a str>,
    path: &str,
) -> Option<u32> {
    use safe_fs::Entry;
    let rel = Path::new(path.trim_start_matches('/'));
    if !safe_fs::is_confined(&rel.to_string_lossy()) {
        return None;
    }
    let hides_below = |e: Entry| !matches!(e, Entry::Missing | Entry::Dir { opaque: false });
    let mut origin = None;
    for (i, dir) in lowerdirs.into_iter().enumerate() {
        if !dir.starts_with('/') {
            return None;
        }
        let Ok(layer) = safe_fs::open_dir_in_root(root, dir) else {
            continue;
        };
        let here = safe_fs::entry_beneath(&layer, rel);
        match here {
            Entry::Dir { .. } => origin = Some(i as u32 + 1),
            Entry::Missing => {}
            // Not a directory here: the directory came from a layer above, if any.
            _ => break,
        }
        let above_hides = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| hides_below(safe_fs::entry_beneath(&layer, a)));
        if hides_below(here) || above_hides {
            break;
        }
    }
    origin
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_topmost_lowerdir_holding_the_path_is_the_source() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(a.join("etc")).unwrap();
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(b.join("etc/conf"), "x").unwrap();
        fs::write(a.join("etc/only-top"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.join("etc/link")).unwrap();
        let dirs = [a.display().to_string(), b.display().to_string()];
        let root = safe_fs::open_dir(Path::new("/")).unwrap();
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/etc/conf"),
            Some(2)
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/etc/only-top"),
            Some(1)
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/etc"),
            Some(1),
            "a directory: the topmost"
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/etc/link"),
            Some(1),
            "the symlink itself"
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/nothere"),
            None
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/etc/../../x"),
            None,
            "never outside a layer"
        );
    }

    #[test]
    fn a_directory_comes_from_the_lowest_layer_it_shows_from() {
        let d = tempfile::tempdir().unwrap();
        let l: Vec<_> = (1..=4).map(|i| d.path().join(format!("l{i}"))).collect();
        // l3 made /srv/old, l2 and l1 added files beneath it, l4 (below) has a /srv/old too.
        for (i, f) in [
            (0, "srv/old/a"),
            (1, "srv/old/b"),
            (2, "srv/old/c"),
            (3, "srv/old/d"),
        ] {
            fs::create_dir_all(l[i].join(f).parent().unwrap()).unwrap();
            fs::write(l[i].join(f), "x").unwrap();
        }
        let root = safe_fs::open_dir(Path::new("/")).unwrap();
        let dirs: Vec<String> = l.iter().map(|p| p.display().to_string()).collect();
        let origin =
            |dirs: &[String]| dir_origin_layer(&root, dirs.iter().map(String::as_str), "/srv/old");
        assert_eq!(
            origin(&dirs),
            Some(4),
            "the lowest holder, nothing hiding it"
        );
        assert_eq!(
            source_layer(&root, dirs.iter().map(String::as_str), "/srv/old"),
            Some(1),
            "a copy-up's source is the topmost"
        );
        // A file where the directory would be, in l3: l4's is hidden, the directory is l2's.
        fs::remove_dir_all(l[2].join("srv/old")).unwrap();
        fs::write(l[2].join("srv/old"), "x").unwrap();
        assert_eq!(origin(&dirs), Some(2));
        assert_eq!(origin(&dirs[2..]), None, "only a file at the top");
        // An opaque /srv in l2 (set as an unprivileged overlay sets it, where xattrs allow).
        let opaque = std::ffi::CString::new(l[1].join("srv").display().to_string()).unwrap();
        // SAFETY: valid C strings and a 1-byte value.
        let set = unsafe {
            libc::setxattr(
                opaque.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if set == 0 {
            fs::remove_file(l[2].join("srv/old")).unwrap();
            fs::create_dir_all(l[2].join("srv/old")).unwrap();
            assert_eq!(origin(&dirs), Some(2), "nothing below an opaque /srv shows");
        }
        assert_eq!(origin(&dirs[..0]), None);
        let outside = vec!["relative/dir".to_string()];
        assert_eq!(
            origin(&outside),
            None,
            "a relative lowerdir is not resolved"
        );
    }

    #[test]
    fn lowerdirs_are_resolved_beneath_the_mounts_own_root() {
        // As /proc/<pid>/root of a process in another mount namespace: "/x/lower" means
        // <root>/x/lower, and an absolute symlink in the layer path stays beneath the root.
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        fs::create_dir_all(r.join("x/lower/etc")).unwrap();
        fs::write(r.join("x/lower/etc/conf"), "x").unwrap();
        std::os::unix::fs::symlink("/x/lower", r.join("link")).unwrap();
        let root = safe_fs::open_dir(&r).unwrap();
        assert_eq!(source_layer(&root, ["/x/lower"], "/etc/conf"), Some(1));
        assert_eq!(source_layer(&root, ["/link"], "/etc/conf"), Some(1));
        assert_eq!(
            source_layer(&root, ["/nope", "/x/lower"], "/etc/conf"),
            Some(2)
        );
        assert_eq!(
            source_layer(&root, ["x/lower"], "/etc/conf"),
            None,
            "relative: unknown"
        );
    }
}

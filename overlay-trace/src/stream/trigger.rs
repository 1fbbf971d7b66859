//! What asked for a copy-up: the system call the copying thread was in (read by the kernel side
//! from the registers saved at system call entry), by name, and the kind of change it makes.
//! Records carry the name, so a replay means the same on any machine.

use serde::Serialize;

/// The kinds of change that make overlayfs copy an object up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An open for writing (or with O_TRUNC); `open_flags` says which.
    Open,
    /// `truncate`/`ftruncate`: the data is copied, then cut.
    Truncate,
    Chmod,
    Chown,
    /// Access or modification times (`touch`).
    Utimes,
    /// An extended attribute set or removed (`setfattr`, capabilities, ACLs).
    Xattr,
    Rename,
    /// A hard link to a lower file.
    Link,
    /// A new name made in a lower directory (mkdir, mknod, symlink): the directory is copied.
    Create,
    /// A name removed from a lower directory (unlink, rmdir): the directory is copied.
    Remove,
    /// Anything else (io_uring, ioctl...).
    Other,
}

impl Trigger {
    pub const ALL: [Trigger; 11] = [
        Trigger::Open,
        Trigger::Truncate,
        Trigger::Chmod,
        Trigger::Chown,
        Trigger::Utimes,
        Trigger::Xattr,
        Trigger::Rename,
        Trigger::Link,
        Trigger::Create,
        Trigger::Remove,
        Trigger::Other,
    ];

    /// The trigger named `name` (as `name()` writes it).
    pub fn from_name(name: &str) -> Option<Trigger> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Changes of metadata alone: with `metacopy=on` they copy no data (overlayfs copies the
    /// data of a metacopy file when it is first opened for writing).
    pub fn metadata_only(self) -> bool {
        matches!(
            self,
            Trigger::Chmod
                | Trigger::Chown
                | Trigger::Utimes
                | Trigger::Xattr
                | Trigger::Rename
                | Trigger::Link
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Trigger::Open => "open",
            Trigger::Truncate => "truncate",
            Trigger::Chmod => "chmod",
            Trigger::Chown => "chown",
            Trigger::Utimes => "utimes",
            Trigger::Xattr => "xattr",
            Trigger::Rename => "rename",
            Trigger::Link => "link",
            Trigger::Create => "create",
            Trigger::Remove => "remove",
            Trigger::Other => "other",
        }
    }

    /// The kind of change system call `name` makes (`Other` for names not listed).
    pub fn of_syscall(name: &str) -> Trigger {
        SYSCALLS
            .iter()
            .find(|(_, n, _)| *n == name)
            .map_or(Trigger::Other, |(_, _, t)| *t)
    }
}

/// x86_64 system call numbers, names, and the change each makes. Calls that never copy up
/// (read, stat...) are absent: a number not listed is shown as `#<nr>`.
const SYSCALLS: &[(u32, &str, Trigger)] = &[
    (1, "write", Trigger::Other),
    (2, "open", Trigger::Open),
    (16, "ioctl", Trigger::Other),
    (59, "execve", Trigger::Other),
    (76, "truncate", Trigger::Truncate),
    (77, "ftruncate", Trigger::Truncate),
    (82, "rename", Trigger::Rename),
    (83, "mkdir", Trigger::Create),
    (84, "rmdir", Trigger::Remove),
    (85, "creat", Trigger::Open),
    (86, "link", Trigger::Link),
    (87, "unlink", Trigger::Remove),
    (88, "symlink", Trigger::Create),
    (90, "chmod", Trigger::Chmod),
    (91, "fchmod", Trigger::Chmod),
    (92, "chown", Trigger::Chown),
    (93, "fchown", Trigger::Chown),
    (94, "lchown", Trigger::Chown),
    (132, "utime", Trigger::Utimes),
    (133, "mknod", Trigger::Create),
    (188, "setxattr", Trigger::Xattr),
    (189, "lsetxattr", Trigger::Xattr),
    (190, "fsetxattr", Trigger::Xattr),
    (197, "removexattr", Trigger::Xattr),
    (198, "lremovexattr", Trigger::Xattr),
    (199, "fremovexattr", Trigger::Xattr),
    (235, "utimes", Trigger::Utimes),
    (257, "openat", Trigger::Open),
    (258, "mkdirat", Trigger::Create),
    (259, "mknodat", Trigger::Create),
    (260, "fchownat", Trigger::Chown),
    (261, "futimesat", Trigger::Utimes),
    (263, "unlinkat", Trigger::Remove),
    (264, "renameat", Trigger::Rename),
    (265, "linkat", Trigger::Link),
    (266, "symlinkat", Trigger::Create),
    (268, "fchmodat", Trigger::Chmod),
    (280, "utimensat", Trigger::Utimes),
    (285, "fallocate", Trigger::Other),
    (304, "open_by_handle_at", Trigger::Open),
    (316, "renameat2", Trigger::Rename),
    (426, "io_uring_enter", Trigger::Other),
    (437, "openat2", Trigger::Open),
    (452, "fchmodat2", Trigger::Chmod),
    (463, "setxattrat", Trigger::Xattr),
    (466, "removexattrat", Trigger::Xattr),
];

/// The name of system call `nr` as the kernel side read it (`NO_SYSCALL`: None).
pub fn syscall_name(nr: u32) -> Option<String> {
    if nr == overlay_trace_common::NO_SYSCALL || !cfg!(target_arch = "x86_64") {
        return None;
    }
    Some(
        SYSCALLS
            .iter()
            .find(|(n, _, _)| *n == nr)
            .map_or_else(|| format!("#{nr}"), |(_, name, _)| (*name).to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_kinds() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        assert_eq!(syscall_name(260).as_deref(), Some("fchownat"));
        assert_eq!(syscall_name(999).as_deref(), Some("#999"));
        assert_eq!(syscall_name(overlay_trace_common::NO_SYSCALL), None);
        assert_eq!(Trigger::of_syscall("fchownat"), Trigger::Chown);
        assert_eq!(Trigger::of_syscall("#999"), Trigger::Other);
        assert!(Trigger::of_syscall("utimensat").metadata_only());
        assert!(!Trigger::of_syscall("openat").metadata_only());
        // Every name once, every number once.
        let mut names: Vec<_> = SYSCALLS.iter().map(|s| s.1).collect();
        let mut nrs: Vec<_> = SYSCALLS.iter().map(|s| s.0).collect();
        names.sort();
        names.dedup();
        nrs.sort();
        nrs.dedup();
        assert_eq!((names.len(), nrs.len()), (SYSCALLS.len(), SYSCALLS.len()));
    }
}

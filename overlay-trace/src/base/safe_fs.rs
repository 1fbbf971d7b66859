//! File access for a process that runs as root on a shared host: everything that another user,
//! a container or an edited scenario could have placed is opened *beneath* a directory we chose
//! (`openat2` with `RESOLVE_BENEATH`: neither `..` nor a symlink leads out), and metadata is read
//! only from regular files, without blocking (a FIFO never hangs us), up to a size cap (a huge
//! file or `/dev/zero` never exhausts memory).

use std::{
    ffi::CString,
    fs::File,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Component, Path},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Metadata files larger than this are not read (config.v2.json of a real container: ~10 KiB).
pub const METADATA_MAX: u64 = 4 << 20;

/// Is `rel` a relative path that stays where it starts: no root, no `..`, not empty?
pub fn is_confined(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty()
        && !rel.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)))
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("{}: NUL in path", p.display()))
}

/// openat2(2) of `rel` from `dir` with `flags` (O_CLOEXEC added) and `resolve`.
fn openat2(
    dir: &OwnedFd,
    rel: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let path = cstring(rel)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    // SAFETY: open_how is plain data; zeroed is its documented initial state.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = resolve;
    // SAFETY: valid pointers for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens `rel` beneath the directory `dir` (`openat2`, `RESOLVE_BENEATH`). `flags` as for open(2);
/// O_CLOEXEC is added.
pub fn open_beneath(dir: &OwnedFd, rel: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    openat2(
        dir,
        rel,
        flags,
        mode,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens the directory `path` as a process whose root is `root` sees it (`openat2` with
/// `RESOLVE_IN_ROOT`: `..` and absolute symlinks stay inside `root`). `root` is `/` for our own
/// mount namespace, or `/proc/<pid>/root` for a path that belongs to another one: paths from
/// another process's mountinfo are looked up in its namespace, never as host paths.
pub fn open_dir_in_root(root: &OwnedFd, path: &str) -> std::io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        root,
        Path::new(rel),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Whether `rel` names an entry beneath `dir` (of any type; a symlink itself, not followed, and
/// no symlink on the way).
pub fn entry_exists_beneath(dir: &OwnedFd, rel: &Path) -> bool {
    openat2(
        dir,
        rel,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
    .is_ok()
}

/// What a lower layer holds at a path, as overlayfs reads it when it merges layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    /// A directory; opaque (the `overlay.opaque` xattr, trusted or user, is "y") hides the layers
    /// below it.
    Dir {
        opaque: bool,
    },
    /// A whiteout (a character device 0/0): the name is deleted, hiding the layers below.
    Whiteout,
    /// Anything else (a file, a symlink): it too hides what the layers below hold there.
    Other,
}

/// What `rel` beneath `dir` is (no symlink followed on the way, none at the end). A directory is
/// opened to read its xattrs: opening one never blocks, and `O_DIRECTORY` refuses anything else.
pub fn entry_beneath(dir: &OwnedFd, rel: &Path) -> Entry {
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let Ok(fd) = openat2(dir, rel, libc::O_PATH | libc::O_NOFOLLOW, 0, resolve) else {
        return Entry::Missing;
    };
    let Ok(meta) = File::from(fd).metadata() else {
        return Entry::Missing;
    };
    let kind = meta.mode() & libc::S_IFMT;
    if kind == libc::S_IFCHR && meta.rdev() == 0 {
        return Entry::Whiteout;
    }
    if kind != libc::S_IFDIR {
        return Entry::Other;
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let opaque = openat2(dir, rel, flags, 0, resolve).is_ok_and(|d| {
        ["trusted.overlay.opaque", "user.overlay.opaque"]
            .iter()
            .any(|name| xattr_is_y(&d, name))
    });
    Entry::Dir { opaque }
}

/// Whether the xattr `name` of the open file `fd` is "y".
fn xattr_is_y(fd: &OwnedFd, name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    let mut v = [0u8; 2];
    // SAFETY: a valid fd, C string and buffer of v.len() bytes.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}

/// Opens a directory to serve as the root of `open_beneath`.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot open {}", path.display()));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates every directory of `rel` beneath `dir` (like `mkdir -p`, never leaving `dir`).
pub fn create_dirs_beneath(dir: &OwnedFd, rel: &Path) -> Result<()> {
    let mut sofar = std::path::PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            bail!("{}: not a confined path", rel.display())
        };
        let parent = if sofar.as_os_str().is_empty() {
            dir.try_clone()?
        } else {
            open_beneath(dir, &sofar, libc::O_PATH | libc::O_DIRECTORY, 0)
                .with_context(|| sofar.display().to_string())?
        };
        let n = cstring(Path::new(name))?;
        // SAFETY: valid fd and C string.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), n.as_ptr(), 0o755) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e)
                    .with_context(|| format!("cannot create {}", sofar.join(name).display()));
            }
        }
        sofar.push(name);
    }
    Ok(())
}

/// Reads a regular file of metadata beneath `root`: no symlink or `..` out of it, no FIFO or
/// device, at most `METADATA_MAX` bytes. None when any of that fails.
pub fn read_metadata(root: &Path, rel: &Path) -> Option<String> {
    let dir = open_dir(root).ok()?;
    let fd = open_beneath(
        &dir,
        rel,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
        0,
    )
    .ok()?;
    read_capped(File::from(fd))
}

/// Reads a regular file by absolute path (its last component not a symlink), capped, without
/// blocking: for files in places only root can write (/etc, /proc).
pub fn read_small_file(path: &Path) -> Option<String> {
    let c = cstring(path).ok()?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd we own.
    read_capped(unsafe { File::from_raw_fd(fd) })
}

fn read_capped(f: File) -> Option<String> {
    let meta = f.metadata().ok()?;
    // /proc files report size 0: they are regular files and small.
    if !meta.file_type().is_file() || meta.size() > METADATA_MAX {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(METADATA_MAX).read_to_end(&mut bytes).ok()?;
    // Lossy: a mountinfo or command line may hold a name that is not UTF-8 (any user can make
    // one), which must not hide the rest of the file.
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A file the user named (a report, a scenario), read whole but at most `max` bytes: a device
/// such as /dev/zero, or a pipe that never ends, is refused with one line instead of filling
/// memory. Pipes are read (`report <(...)`).
pub fn read_user_file(path: &Path, max: u64) -> Result<String> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "{}: longer than {} MiB: not a file this command reads",
            path.display(),
            max >> 20
        );
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_user_file_is_refused() {
        let e = read_user_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(format!("{e}").contains("longer than 1 MiB"), "{e}");
        let e = read_user_file(Path::new("/dev/urandom"), 1 << 20).unwrap_err();
        assert!(format!("{e}").contains("longer than"), "{e}");
    }

    #[test]
    fn confined_paths() {
        for ok in ["a", "a/b", "./a", "a/./b", "var/log/x{i}.log"] {
            assert!(is_confined(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", ".", "a\0b"] {
            assert!(!is_confined(bad), "{bad}");
        }
    }

    #[test]
    fn nothing_leads_out_and_nothing_hangs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(d.path().join("secret"), "outside").unwrap();
        std::fs::write(root.join("ok.json"), "{}").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("rel")).unwrap();
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::File::create(root.join("huge"))
            .unwrap()
            .set_len(METADATA_MAX + 1)
            .unwrap();
        assert_eq!(
            read_metadata(&root, Path::new("ok.json")).as_deref(),
            Some("{}")
        );
        for bad in ["link", "rel", "../secret", "fifo", "huge"] {
            assert_eq!(read_metadata(&root, Path::new(bad)), None, "{bad}");
        }
        // A directory made beneath, and a symlinked parent that would lead out refused.
        let dir = open_dir(&root).unwrap();
        create_dirs_beneath(&dir, Path::new("x/y/z")).unwrap();
        assert!(root.join("x/y/z").is_dir());
        std::os::unix::fs::symlink(d.path(), root.join("out")).unwrap();
        assert!(create_dirs_beneath(&dir, Path::new("out/escaped")).is_err());
        assert!(!d.path().join("escaped").exists());
        assert_eq!(read_small_file(Path::new("/dev/zero")), None);
    }
}

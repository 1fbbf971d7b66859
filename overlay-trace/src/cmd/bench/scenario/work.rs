//! The scenario's work: filling the lower layers, and the workload's steps on the merged view,
//! every path opened beneath its root (no symlink or `..` leads out).

use std::{
    fs::{self, File},
    io::Write as _,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::PermissionsExt as _,
    },
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};

use super::{Kind, Op, Scenario, expand};
use crate::base::safe_fs::{create_dirs_beneath, open_beneath, open_dir};

/// Creates `rel` (and its directories) beneath `dir` for writing.
fn create_beneath(dir: &OwnedFd, rel: &Path) -> Result<File> {
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs_beneath(dir, parent)?;
    }
    let fd = open_beneath(
        dir,
        rel,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        0o644,
    )
    .with_context(|| format!("cannot create {}", rel.display()))?;
    Ok(File::from(fd))
}

/// Fills the lower layers (`lower(i)` is layer i), every file opened beneath its layer (no
/// symlink or `..` leads out). Stops early when `stop` is set.
pub fn populate(
    s: &Scenario,
    lower: impl Fn(usize) -> std::path::PathBuf,
    stop: &AtomicBool,
) -> Result<()> {
    // Real data, not a sparse file: copy-up cost depends on it.
    let chunk = vec![0x5au8; 1 << 20];
    for f in &s.files {
        let dir = open_dir(&lower(f.layer))?;
        for rel in expand(&f.path, f.count) {
            match f.kind {
                Kind::File => {}
                Kind::Dir => {
                    create_dirs_beneath(&dir, Path::new(&rel))?;
                    continue;
                }
                Kind::Symlink => {
                    let rel = Path::new(&rel);
                    if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                        create_dirs_beneath(&dir, p)?;
                    }
                    let (parent, name) = parent_of(&dir, rel)?;
                    // SAFETY: valid descriptor and C strings.
                    let r = unsafe {
                        libc::symlinkat(c"target".as_ptr(), parent.as_raw_fd(), name.as_ptr())
                    };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("cannot make symlink {}", rel.display()));
                    }
                    continue;
                }
            }
            let mut w = std::io::BufWriter::new(create_beneath(&dir, Path::new(&rel))?);
            let mut left = f.size;
            while left > 0 {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let n = left.min(chunk.len() as u64) as usize;
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            w.flush()?;
        }
    }
    Ok(())
}

fn open_at(dir: &OwnedFd, rel: &Path, flags: i32) -> std::io::Result<File> {
    open_beneath(dir, rel, flags, 0).map(File::from)
}

/// chmod -R beneath `dir`: directories 0750, files 0640.
fn chmod_tree(dir: &OwnedFd, rel: &Path) -> Result<()> {
    let f = open_at(dir, rel, libc::O_RDONLY | libc::O_NOFOLLOW)?;
    let is_dir = f.metadata()?.is_dir();
    f.set_permissions(fs::Permissions::from_mode(if is_dir {
        0o750
    } else {
        0o640
    }))?;
    if is_dir {
        // The names, through our own descriptor of the directory.
        for e in fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))? {
            chmod_tree(dir, &rel.join(e?.file_name()))?;
        }
    }
    Ok(())
}

/// A libc return value: 0, or the error it set.
fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens the parent directory of `rel` beneath `dir`, and returns it with the last component.
fn parent_of(dir: &OwnedFd, rel: &Path) -> Result<(OwnedFd, std::ffi::CString)> {
    use std::os::unix::ffi::OsStrExt as _;
    let name = rel
        .file_name()
        .with_context(|| format!("{}: no file name", rel.display()))?;
    let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => open_beneath(dir, p, libc::O_PATH | libc::O_DIRECTORY, 0)?,
        None => dir.try_clone()?,
    };
    Ok((parent, std::ffi::CString::new(name.as_bytes())?))
}

/// Runs the workload on `merged` (in the process the tracer runs as its command); every path is
/// resolved beneath it.
pub fn run_steps(s: &Scenario, merged: &Path) -> Result<()> {
    let dir = open_dir(merged)?;
    for st in &s.steps {
        for (i, rel) in expand(&st.path, st.count).into_iter().enumerate() {
            let p = Path::new(&rel);
            let ctx = || format!("{:?} {}", st.op, p.display());
            match st.op {
                Op::Append => open_at(&dir, p, libc::O_WRONLY | libc::O_APPEND)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Truncate => open_at(&dir, p, libc::O_WRONLY | libc::O_TRUNC)
                    .and_then(|mut f| f.write_all(b"bench\n"))
                    .with_context(ctx)?,
                Op::Create => create_beneath(&dir, p)
                    .and_then(|mut f| Ok(f.write_all(b"new\n")?))
                    .with_context(ctx)?,
                Op::Chmod if st.recursive => chmod_tree(&dir, p).with_context(ctx)?,
                Op::Chmod => open_at(&dir, p, libc::O_RDONLY)
                    .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o640)))
                    .with_context(ctx)?,
                Op::Rename | Op::Link => {
                    // The i-th name as `expand` makes it, without making them all (a step of
                    // a million renames would make them a million times).
                    let to = st
                        .to
                        .as_deref()
                        .unwrap_or("")
                        .replace("{i}", &i.to_string());
                    let (from_dir, from_name) = parent_of(&dir, p).with_context(ctx)?;
                    let (to_dir, to_name) = parent_of(&dir, Path::new(&to)).with_context(ctx)?;
                    let (from, to) = (from_dir.as_raw_fd(), to_dir.as_raw_fd());
                    // SAFETY (both): valid descriptors and C strings.
                    let r = if st.op == Op::Rename {
                        unsafe { libc::renameat(from, from_name.as_ptr(), to, to_name.as_ptr()) }
                    } else {
                        unsafe { libc::linkat(from, from_name.as_ptr(), to, to_name.as_ptr(), 0) }
                    };
                    check(r).with_context(ctx)?;
                }
                Op::Chown => {
                    let (parent, name) = parent_of(&dir, p).with_context(ctx)?;
                    // Its own owner: the change is nil, the copy-up is not.
                    let mut st_buf: libc::stat = unsafe { std::mem::zeroed() };
                    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
                    // SAFETY (both): valid descriptor, C string and buffer.
                    check(unsafe {
                        libc::fstatat(parent.as_raw_fd(), name.as_ptr(), &mut st_buf, nofollow)
                    })
                    .and_then(|_| {
                        check(unsafe {
                            libc::fchownat(
                                parent.as_raw_fd(),
                                name.as_ptr(),
                                st_buf.st_uid,
                                st_buf.st_gid,
                                nofollow,
                            )
                        })
                    })
                    .with_context(ctx)?;
                }
                Op::Setxattr => {
                    let f =
                        open_at(&dir, p, libc::O_RDONLY | libc::O_NOFOLLOW).with_context(ctx)?;
                    // SAFETY: valid descriptor, C string and buffer.
                    check(unsafe {
                        libc::fsetxattr(
                            f.as_raw_fd(),
                            c"trusted.overlay-trace".as_ptr(),
                            b"1".as_ptr().cast(),
                            1,
                            0,
                        )
                    })
                    .with_context(ctx)?;
                }
                Op::Touch => {
                    let f =
                        open_at(&dir, p, libc::O_RDONLY | libc::O_NOFOLLOW).with_context(ctx)?;
                    // SAFETY: valid descriptor; no times means now.
                    check(unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) })
                        .with_context(ctx)?;
                }
                Op::Resize => {
                    let f = open_at(&dir, p, libc::O_PATH | libc::O_NOFOLLOW).with_context(ctx)?;
                    let size = fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd()))
                        .with_context(ctx)?
                        .len();
                    // truncate(2) by the descriptor's name: the file itself, found beneath `dir`.
                    let name = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                    // SAFETY: valid C string.
                    check(unsafe { libc::truncate(name.as_ptr(), size as libc::off_t) })
                        .with_context(ctx)?;
                }
                Op::Mkdir => {
                    let (parent, name) = parent_of(&dir, p).with_context(ctx)?;
                    // SAFETY: valid descriptor and C string.
                    check(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) })
                        .with_context(ctx)?;
                }
                Op::Remove => {
                    let (parent, name) = parent_of(&dir, p).with_context(ctx)?;
                    // SAFETY: valid descriptor and C string.
                    check(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) })
                        .with_context(ctx)?;
                }
                Op::Stat => {
                    let _ = open_at(&dir, p, libc::O_PATH | libc::O_NOFOLLOW);
                }
                Op::Read => {
                    // Streamed: a file may be larger than memory.
                    open_at(&dir, p, libc::O_RDONLY)
                        .and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()))
                        .with_context(ctx)?;
                }
            }
        }
    }
    Ok(())
}

//! Builders of raw records, as the kernel writes them: for tests and benchmarks.

use super::*;
use overlay_trace_common::NO_SYSCALL;

pub fn header(kind: u32, dev: u32, comm: &str) -> EventHeader {
    let mut c = [0u8; COMM_LEN];
    c[..comm.len().min(COMM_LEN - 1)]
        .copy_from_slice(&comm.as_bytes()[..comm.len().min(COMM_LEN - 1)]);
    EventHeader {
        kind,
        pid: 101,
        tgid: 100,
        dev,
        start_ns: 5,
        cgroup_id: 7,
        comm: c,
    }
}

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a repr(C) value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// `path` ("a/b/c") as the kernel stores it: components leaf first, each NUL-terminated; with
/// the bytes used and the number of components.
fn leaf_first(path: &str) -> ([u8; PATH_BUF_LEN], usize, u32) {
    let mut buf = [0u8; PATH_BUF_LEN];
    let mut off = 0;
    let mut depth = 0;
    for comp in path.split('/').filter(|c| !c.is_empty()).rev() {
        buf[off..off + comp.len()].copy_from_slice(comp.as_bytes());
        off += comp.len() + 1;
        depth += 1;
    }
    (buf, off, depth)
}

/// `path` is given root first ("a/b/c"); it is stored leaf first like the kernel does.
pub fn copy_up(dev: u32, path: &str, size: i64, data_bytes: i64, duration_ns: u64) -> Vec<u8> {
    copy_up_ending(dev, path, size, data_bytes, duration_ns, 0, 0)
}

/// A copy-up record (`copy_up`...) as asked for by system call `nr`, with open flags `flags`.
pub fn asked_by(mut record: Vec<u8>, nr: u32, flags: u32) -> Vec<u8> {
    let at = std::mem::offset_of!(CopyUpEvent, syscall);
    record[at..at + 4].copy_from_slice(&nr.to_ne_bytes());
    let at = std::mem::offset_of!(CopyUpEvent, flags);
    record[at..at + 4].copy_from_slice(&flags.to_ne_bytes());
    record
}

/// A copy-up record (`copy_up`...) that spent `ns` syncing.
pub fn synced(mut record: Vec<u8>, ns: u64) -> Vec<u8> {
    let at = std::mem::offset_of!(CopyUpEvent, sync_ns);
    record[at..at + 8].copy_from_slice(&ns.to_ne_bytes());
    record
}

/// A copy-up that returned `ret`, with the kernel's `outcome` (`COPY_UP_COPIED`, ...).
pub fn copy_up_ending(
    dev: u32,
    path: &str,
    size: i64,
    data_bytes: i64,
    duration_ns: u64,
    ret: i32,
    outcome: u32,
) -> Vec<u8> {
    let (buf, off, depth) = leaf_first(path);
    let e = CopyUpEvent {
        header: header(EVENT_COPY_UP, dev, "writer"),
        duration_ns,
        data_ns: duration_ns / 2,
        data_bytes,
        size,
        sync_ns: 0,
        flags: 0,
        mode: 0o100644,
        ret,
        outcome,
        syscall: NO_SYSCALL,
        path_len: off as u32,
        path_depth: depth,
        path_flags: 0,
        path: buf,
    };
    bytes_of(&e)
}

pub fn mount(dev: u32, duration_ns: u64) -> Vec<u8> {
    mount_ending(dev, duration_ns, 0)
}

/// A mount that returned `ret`.
pub fn mount_ending(dev: u32, duration_ns: u64, ret: i32) -> Vec<u8> {
    let e = MountEvent {
        header: header(EVENT_MOUNT, dev, "dockerd"),
        duration_ns,
        ret,
        _pad: 0,
    };
    bytes_of(&e)
}

pub fn lookup(dev: u32, name: &str, outcome: u32, layers: u32, duration_ns: u64) -> Vec<u8> {
    let mut n = [0u8; LOOKUP_NAME_LEN];
    n[..name.len()].copy_from_slice(name.as_bytes());
    let e = LookupEvent {
        header: header(EVENT_LOOKUP, dev, "reader"),
        duration_ns,
        outcome,
        layers,
        name_len: name.len() as u32,
        _pad: 0,
        name: n,
    };
    bytes_of(&e)
}

/// A rename refused with -EXDEV of `path` (root first, "a/b").
pub fn rename_refused(dev: u32, path: &str) -> Vec<u8> {
    let (buf, off, depth) = leaf_first(path);
    let e = RenameEvent {
        header: header(EVENT_RENAME, dev, "mv"),
        ret: overlay_trace_common::EXDEV,
        path_len: off as u32,
        path_depth: depth,
        path_flags: 0,
        path: buf,
    };
    bytes_of(&e)
}

//! Copy-up: one event per `ovl_copy_up_one` call (one object copied up), with the data copy
//! (`ovl_copy_up_file` on 6.1+, `ovl_copy_up_data` on 5.x) that ran inside it joined by thread.

use aya_ebpf::{
    macros::{kprobe, kretprobe, map},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use overlay_trace_common::{
    CopyUpEvent, EVENT_COPY_UP, NO_DATA_COPY, STAT_DROPPED_COPY_UP, STAT_INFLIGHT_FULL,
};

use crate::{
    EVENTS,
    kernel::{cfg, count, dev_filtered_out, current_tgid_pid, dentry_dev, fill_header, filtered_out, now_ns, submit_flags, read_field, read_path},
};

/// What the entry probe saw, kept until the return probe of the same thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct CopyUpStart {
    start_ns: u64,
    dentry: u64,
    size: i64,
    data_start_ns: u64,
    data_ns: u64,
    data_bytes: i64,
    flags: u32,
    mode: u32,
}

#[map]
static COPY_UP_INFLIGHT: HashMap<u32, CopyUpStart> = HashMap::with_max_entries(16384, 0);

/// `int ovl_copy_up_one(struct dentry *parent, struct dentry *dentry, int flags)`
#[kprobe]
pub fn copy_up_one_entry(ctx: ProbeContext) -> u32 {
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    let dentry: u64 = ctx.arg(1).unwrap_or(0);
    if dev_filtered_out(dentry) {
        return 0;
    }
    let flags: i32 = ctx.arg(2).unwrap_or(0);
    // Size and mode before the copy: what had to be copied from below.
    let inode: u64 = read_field(dentry, cfg(|c| &c.dentry_d_inode));
    let (size, mode) = if inode == 0 {
        (0, 0)
    } else {
        let mode: u16 = read_field(inode, cfg(|c| &c.inode_i_mode));
        (read_field::<i64>(inode, cfg(|c| &c.inode_i_size)), mode as u32)
    };
    let start = CopyUpStart {
        start_ns: now_ns(),
        dentry,
        size,
        data_start_ns: 0,
        data_ns: 0,
        data_bytes: NO_DATA_COPY,
        flags: flags as u32,
        mode,
    };
    if COPY_UP_INFLIGHT.insert(pid, start, 0).is_err() {
        count(STAT_INFLIGHT_FULL);
    }
    0
}

#[kretprobe]
pub fn copy_up_one_return(ctx: RetProbeContext) -> u32 {
    let now = now_ns();
    let (_, pid) = current_tgid_pid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(start) = (unsafe { COPY_UP_INFLIGHT.get(pid) }).copied() else {
        return 0;
    };
    let _ = COPY_UP_INFLIGHT.remove(pid);
    let ret: i64 = ctx.ret();

    let Some(mut entry) = EVENTS.reserve::<CopyUpEvent>(0) else {
        count(STAT_DROPPED_COPY_UP);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring buffer entry.
    unsafe {
        fill_header(&raw mut (*ev).header, EVENT_COPY_UP, start.start_ns, dentry_dev(start.dentry));
        (*ev).duration_ns = now - start.start_ns;
        (*ev).data_ns = start.data_ns;
        (*ev).data_bytes = start.data_bytes;
        (*ev).size = start.size;
        (*ev).flags = start.flags;
        (*ev).mode = start.mode;
        (*ev).ret = ret as i32;
        let path = read_path(start.dentry, (&raw mut (*ev).path).cast());
        (*ev).path_len = path.len;
        (*ev).path_depth = path.depth;
        (*ev).path_flags = path.flags;
    }
    entry.submit(submit_flags());
    0
}

/// `ovl_copy_up_file(ofs, dentry, new_file, loff_t len)` (6.1+) and
/// `ovl_copy_up_data(ofs, old, new, loff_t len)` (5.x): `len` is the fourth argument in both.
#[kprobe]
pub fn copy_up_data_entry(ctx: ProbeContext) -> u32 {
    let (_, pid) = current_tgid_pid();
    if let Some(start) = COPY_UP_INFLIGHT.get_ptr_mut(pid) {
        let len: i64 = ctx.arg(3).unwrap_or(0);
        // SAFETY: the map value belongs to this thread's in-flight copy-up.
        unsafe {
            (*start).data_start_ns = now_ns();
            (*start).data_bytes = len;
        }
    }
    0
}

#[kretprobe]
pub fn copy_up_data_return(_ctx: RetProbeContext) -> u32 {
    let (_, pid) = current_tgid_pid();
    if let Some(start) = COPY_UP_INFLIGHT.get_ptr_mut(pid) {
        // SAFETY: as above.
        unsafe {
            if (*start).data_start_ns != 0 {
                (*start).data_ns += now_ns() - (*start).data_start_ns;
                (*start).data_start_ns = 0;
            }
        }
    }
    0
}

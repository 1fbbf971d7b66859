//! Renames overlayfs refused: `ovl_rename` returning -EXDEV (a directory that is in a lower
//! layer, without `redirect_dir`). The tool that asked (`mv`) then copies the tree itself, which
//! no copy-up shows. Only refused renames are sent; the rest cost a map update and a lookup.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use overlay_trace_common::{EVENT_RENAME, EXDEV, RenameEvent, STAT_DROPPED_RENAME};

use crate::{
    EVENTS,
    kernel::{
        cfg, count, current_tgid_pid, dentry_dev, dev_filtered_out, fill_header, filtered_out,
        now_ns, read_path,
    },
};

/// Thread id -> (the renamed dentry, entry time), for kretprobes (renames do not nest).
#[map]
static RENAME_INFLIGHT: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

#[kprobe]
pub fn rename_entry(ctx: ProbeContext) -> u32 {
    // Both candidate registers read (volatile, each at its fixed offset; x86-64: rsi, rdx hold
    // arguments 2 and 3), then one picked: the verifier refuses a load at a computed offset
    // into the context.
    let regs = ctx.regs;
    // SAFETY: a kprobe's context is the probed function's saved registers.
    let (second, third) = unsafe {
        (
            core::ptr::read_volatile(&(*regs).rsi),
            core::ptr::read_volatile(&(*regs).rdx),
        )
    };
    let old = match cfg(|c| &c.rename_old_arg) {
        2 => second,
        3 => third,
        _ => 0,
    };
    if old == 0 {
        return 0;
    }
    let (_, pid) = current_tgid_pid();
    let _ = RENAME_INFLIGHT.insert(pid, [old, now_ns()], 0);
    0
}

#[kretprobe]
pub fn rename_return(ctx: RetProbeContext) -> u32 {
    let (_, pid) = current_tgid_pid();
    // SAFETY: copied out before removal.
    let Some([old, start]) = (unsafe { RENAME_INFLIGHT.get(pid) }).copied() else {
        return 0;
    };
    let _ = RENAME_INFLIGHT.remove(pid);
    let ret: i64 = ctx.ret();
    emit(old, ret as i32, start);
    0
}

/// The fexit programs read everything; the fentry one is only there for the row's shape.
#[fentry(function = "ovl_rename")]
pub fn rename_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// 5.x: `ovl_rename(olddir, old, newdir, new, flags)`: the return value 6th.
#[fexit(function = "ovl_rename")]
pub fn rename_fexit_5(ctx: FExitContext) -> u32 {
    emit(ctx.arg(1), ctx.arg::<i32>(5), now_ns());
    0
}

/// 6.x: `ovl_rename(mnt_userns or idmap, olddir, old, newdir, new, flags)`: the return 7th.
#[fexit(function = "ovl_rename")]
pub fn rename_fexit_6(ctx: FExitContext) -> u32 {
    emit(ctx.arg(2), ctx.arg::<i32>(6), now_ns());
    0
}

#[inline(always)]
fn emit(old: u64, ret: i32, start_ns: u64) {
    if ret != EXDEV || old == 0 {
        return;
    }
    let (tgid, _) = current_tgid_pid();
    if filtered_out(tgid) || dev_filtered_out(old) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<RenameEvent>(0) else {
        count(STAT_DROPPED_RENAME);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved, exclusively owned entry.
    unsafe {
        fill_header(
            &raw mut (*ev).header,
            EVENT_RENAME,
            start_ns,
            dentry_dev(old),
        );
        (*ev).ret = ret;
        let path = read_path(old, (&raw mut (*ev).path).cast());
        (*ev).path_len = path.len;
        (*ev).path_depth = path.depth;
        (*ev).path_flags = path.flags;
    }
    entry.submit(0);
}

//! Mounting: one event per `ovl_fill_super(sb, ...)` call, what setting up an overlay (a
//! container's root) cost. The superblock's device is assigned before fill_super runs.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use overlay_trace_common::{
    EVENT_MOUNT, MountEvent, MountFrame, STAT_DROPPED_MOUNT, STAT_INFLIGHT_FULL,
    STAT_MISSED_RETURN_MOUNT, STAT_ORPHAN_RETURNS,
};

use crate::{
    EVENTS,
    kernel::{
        cfg, count, current_task, current_tgid_pid, fill_header, filtered_out, now_ns, read_field,
        stack_pointer, verbose,
    },
};

/// Thread id -> the mount in flight (mounts never nest). LRU: garbage can never fill it.
#[map]
static MOUNT_INFLIGHT: LruHashMap<u32, MountFrame> = LruHashMap::with_max_entries(4096, 0);

/// Device number -> when its latest mount began (the `start_ns` its event carries), for every
/// mount, traced process or not. A device number is reused as soon as a mount ends: userspace
/// reads mountinfo, then this, and a later start than its event's means mountinfo may show a
/// newer mount of the number. LRU: an evicted entry only means "not known".
#[map]
static DEV_MOUNTED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

#[kprobe]
pub fn mount_entry(ctx: ProbeContext) -> u32 {
    if enter(ctx.arg(0).unwrap_or(0), stack_pointer(&ctx)) && verbose() {
        warn!(&ctx, "mount: a call returned unseen (missed kretprobe)");
    }
    0
}

#[fentry(function = "ovl_fill_super")]
pub fn mount_fentry(ctx: FEntryContext) -> u32 {
    enter(ctx.arg(0), 0);
    0
}

/// A mount begins. Returns whether an earlier call of this thread returned unseen.
#[inline(always)]
fn enter(sb: u64, sp: u64) -> bool {
    let start_ns = now_ns();
    // Before any filter: a newer mount of a number supersedes, whoever made it. The superblock
    // has its device number before fill_super runs.
    let dev: u32 = read_field(sb, cfg(|c| &c.super_block_s_dev));
    if DEV_MOUNTED.insert(dev, start_ns, 0).is_err() {
        count(STAT_INFLIGHT_FULL);
    }
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return false;
    }
    // Mounts do not nest: an entry still here is a call whose return never came.
    // SAFETY: read-only lookup of a plain value.
    let stale = unsafe { MOUNT_INFLIGHT.get(pid) }.is_some();
    if stale {
        count(STAT_MISSED_RETURN_MOUNT);
    }
    let start = MountFrame {
        start_ns,
        sp,
        task: current_task(),
        sb,
    };
    if MOUNT_INFLIGHT.insert(pid, start, 0).is_err() {
        count(STAT_INFLIGHT_FULL);
    }
    stale
}

#[kretprobe]
pub fn mount_return(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret())
}

/// 6.5+: `int ovl_fill_super(struct super_block *sb, struct fs_context *fc)`: return value 3rd.
#[fexit(function = "ovl_fill_super")]
pub fn mount_fexit_2(ctx: FExitContext) -> u32 {
    exit(ctx.arg::<i32>(2) as i64)
}

/// Before 6.5: `int ovl_fill_super(struct super_block *sb, void *data, int silent)`: 4th.
#[fexit(function = "ovl_fill_super")]
pub fn mount_fexit_3(ctx: FExitContext) -> u32 {
    exit(ctx.arg::<i32>(3) as i64)
}

/// A mount returns `ret`: emits its event.
#[inline(always)]
fn exit(ret: i64) -> u32 {
    let now = now_ns();
    let (_, pid) = current_tgid_pid();
    // SAFETY: copied out before removal.
    let Some(start) = (unsafe { MOUNT_INFLIGHT.get(pid) }).copied() else {
        count(STAT_ORPHAN_RETURNS);
        return 0;
    };
    let _ = MOUNT_INFLIGHT.remove(pid);
    let dev: u32 = read_field(start.sb, cfg(|c| &c.super_block_s_dev));
    let Some(mut entry) = EVENTS.reserve::<MountEvent>(0) else {
        count(STAT_DROPPED_MOUNT);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved, exclusively owned entry.
    unsafe {
        fill_header(&raw mut (*ev).header, EVENT_MOUNT, start.start_ns, dev);
        (*ev).duration_ns = now - start.start_ns;
        (*ev).ret = ret as i32;
        (*ev)._pad = 0;
    }
    // Wake userspace now, not once 256 KiB wait: a new mount is named from mountinfo, and a
    // short-lived one (Docker's init layer) may be gone, its device number taken by the next
    // mount, within the 100 ms the drain would otherwise take. Mounts are rare.
    entry.submit(aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
    0
}

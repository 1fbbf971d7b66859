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
    STAT_MISSED_RETURN_MOUNT, STAT_ORPHAN_RETURNS, UpperDir,
};

use crate::{
    DEV_FILTER, EVENTS, UPPER_FILTER,
    kernel::{
        cfg, count, current_task, current_tgid_pid, dentry_dev, fill_header, filtered_out, now_ns,
        read_field, stack_pointer, verbose,
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
    // The superblock a selected number belonged to is gone: this one is not traced unless its
    // upper dir says it is a selected container's root again (at the return).
    if cfg(|c| &c.filter_devs) != 0 {
        let _ = DEV_FILTER.remove(&dev);
    }
    let (tgid, pid) = current_tgid_pid();
    // Mounts do not nest: an entry still here is a call whose return never came.
    // SAFETY: read-only lookup of a plain value.
    let stale = unsafe { MOUNT_INFLIGHT.get(pid) }.is_some_and(|f| f.filtered == 0);
    if stale {
        count(STAT_MISSED_RETURN_MOUNT);
    }
    let start = MountFrame {
        start_ns,
        sp,
        task: current_task(),
        sb,
        filtered: u32::from(filtered_out(tgid)),
        _pad: 0,
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

/// The upper dir of overlay superblock `sb` (`ovl_fs.layers[0].mnt->mnt_root`), or dev 0 when it
/// has none (a read-only overlay) or a read failed.
#[inline(always)]
fn upper_dir(sb: u64) -> UpperDir {
    let none = UpperDir::default();
    let ofs: u64 = read_field(sb, cfg(|c| &c.super_block_s_fs_info));
    if ofs == 0 {
        return none;
    }
    let layers: u64 = read_field(ofs, cfg(|c| &c.ovl_fs_layers));
    if layers == 0 {
        return none;
    }
    let mnt: u64 = read_field(layers, cfg(|c| &c.ovl_layer_mnt));
    if mnt == 0 {
        return none;
    }
    let root: u64 = read_field(mnt, cfg(|c| &c.vfsmount_mnt_root));
    let inode: u64 = if root == 0 {
        0
    } else {
        read_field(root, cfg(|c| &c.dentry_d_inode))
    };
    if inode == 0 {
        return none;
    }
    UpperDir {
        ino: read_field(inode, cfg(|c| &c.inode_i_ino)),
        dev: dentry_dev(root),
        _pad: 0,
    }
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
    // A frame of an earlier thread with this id (it died mid-mount): its superblock may be gone.
    if start.task != current_task() {
        if start.filtered == 0 {
            count(STAT_MISSED_RETURN_MOUNT);
        }
        count(STAT_ORPHAN_RETURNS);
        return 0;
    }
    let dev: u32 = read_field(start.sb, cfg(|c| &c.super_block_s_dev));
    if cfg(|c| &c.filter_devs) != 0 {
        // Before the mount is attached, so before any call on it: a selected container's root
        // mounted again is traced from its first copy-up.
        if ret == 0 && cfg(|c| &c.follow_uppers) != 0 {
            let upper = upper_dir(start.sb);
            // SAFETY: read-only lookup of a plain value.
            if upper.dev != 0
                && unsafe { UPPER_FILTER.get(&upper) }.is_some()
                && DEV_FILTER.insert(&dev, &1, 0).is_err()
            {
                // The filter is full: the restarted container is not traced, and it shows.
                count(STAT_INFLIGHT_FULL);
            }
        }
        // SAFETY: as above.
        if unsafe { DEV_FILTER.get(&dev) }.is_none() {
            return 0;
        }
    }
    if start.filtered != 0 {
        return 0;
    }
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

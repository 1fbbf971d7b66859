//! Lookup: one event per `ovl_lookup` call (a dcache miss), with the number of layers consulted
//! (`ovl_lookup_layer` calls inside it) and where the name was found.
//!
//! Lookups nest (an overlay whose layer is itself an overlay): each thread keeps a small stack of
//! calls in flight, each reported on its own. A call whose return never came is found by the
//! stack position of the next call and counted: it can never swallow later lookups.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use overlay_trace_common::{
    EVENT_LOOKUP, LOOKUP_ERROR, LOOKUP_LOWER, LOOKUP_NAME_LEN, LOOKUP_NEGATIVE,
    LOOKUP_POSITIVE_UNKNOWN_LAYER, LOOKUP_UPPER, LookupEvent, LookupFrame, LookupInflight,
    MAX_NESTING, STAT_DROPPED_LOOKUP, STAT_INFLIGHT_FULL, STAT_MISSED_RETURN_LOOKUP,
    STAT_ORPHAN_RETURNS,
};

use crate::{
    EVENTS,
    kernel::{
        cfg, count, current_task, current_tgid_pid, dentry_dev, dev_filtered_out, fill_header,
        filtered_out, now_ns, pop_frame, push_frame, read_field, read_name, return_stack_pointer,
        slot, stack_pointer, submit_flags, trampoline_position, verbose,
    },
};

/// Thread id -> lookups in flight (LRU: garbage can never fill it).
#[map]
static LOOKUP_INFLIGHT: LruHashMap<u32, LookupInflight> = LruHashMap::with_max_entries(16384, 0);

/// `struct dentry *ovl_lookup(struct inode *dir, struct dentry *dentry, unsigned int flags)`
#[kprobe]
pub fn lookup_entry(ctx: ProbeContext) -> u32 {
    let stale = enter(ctx.arg(1).unwrap_or(0), stack_pointer(&ctx));
    if stale > 0 && verbose() {
        warn!(
            &ctx,
            "lookup: {} call(s) returned unseen (missed kretprobe)", stale
        );
    }
    0
}

#[fentry(function = "ovl_lookup")]
pub fn lookup_fentry(ctx: FEntryContext) -> u32 {
    enter(ctx.arg(1), trampoline_position(ctx.as_ptr()));
    0
}

/// A lookup begins: records its frame. Returns how many earlier calls of this thread were found
/// to have returned unseen.
#[inline(always)]
fn enter(dentry: u64, sp: u64) -> u32 {
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    // A call on a superblock not traced still gets a frame (see copy_up.rs).
    let filtered = dev_filtered_out(dentry);
    let frame = LookupFrame {
        start_ns: now_ns(),
        sp,
        task: current_task(),
        dentry,
        layers: 0,
        filtered: u32::from(filtered),
    };
    let s = match LOOKUP_INFLIGHT.get_ptr_mut(pid) {
        Some(s) => s,
        None => {
            let first = LookupInflight {
                depth: 1,
                _pad: 0,
                frames: [frame; MAX_NESTING],
            };
            if LOOKUP_INFLIGHT.insert(pid, first, 0).is_err() {
                count(STAT_INFLIGHT_FULL);
            }
            return 0;
        }
    };
    // SAFETY: this thread's own entry; only this thread's probes touch it.
    unsafe {
        push_frame(
            &mut (*s).frames,
            &mut (*s).depth,
            frame,
            STAT_MISSED_RETURN_LOOKUP,
        )
    }
}

/// `ovl_lookup_layer(...)`: one call per layer consulted, counted for the innermost lookup.
#[kprobe]
pub fn lookup_layer_entry(_ctx: ProbeContext) -> u32 {
    layer();
    0
}

#[fentry(function = "ovl_lookup_layer")]
pub fn lookup_layer_fentry(_ctx: FEntryContext) -> u32 {
    layer();
    0
}

#[inline(always)]
fn layer() {
    let (_, pid) = current_tgid_pid();
    if let Some(s) = LOOKUP_INFLIGHT.get_ptr_mut(pid) {
        // SAFETY: this thread's own entry.
        unsafe {
            let depth = ((*s).depth as usize).min(MAX_NESTING);
            if depth > 0 {
                (*s).frames[slot(depth - 1)].layers += 1;
            }
        }
    }
}

#[kretprobe]
pub fn lookup_return(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret(), return_stack_pointer(&ctx))
}

/// `struct dentry *ovl_lookup(dir, dentry, flags)`: the return value follows the 3 arguments.
#[fexit(function = "ovl_lookup")]
pub fn lookup_fexit(ctx: FExitContext) -> u32 {
    exit(ctx.arg::<i64>(3), trampoline_position(ctx.as_ptr()))
}

/// A lookup returns `ret` at stack position `sp`: emits the event of its own frame.
#[inline(always)]
fn exit(ret: i64, sp: u64) -> u32 {
    let now = now_ns();
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    let Some(s) = LOOKUP_INFLIGHT.get_ptr_mut(pid) else {
        count(STAT_ORPHAN_RETURNS);
        return 0;
    };
    // SAFETY: this thread's own entry; the frame is copied out as it is popped.
    let popped = unsafe {
        pop_frame(
            &(*s).frames,
            &mut (*s).depth,
            sp,
            current_task(),
            STAT_MISSED_RETURN_LOOKUP,
        )
    };
    // The thread has no call in flight now: its entry goes, so the table holds only threads
    // with calls in flight and a long call is never evicted by threads that came and went.
    if depth_now(s) == 0 {
        let _ = LOOKUP_INFLIGHT.remove(pid);
    }
    let Some(start) = popped else {
        return 0;
    };
    if start.filtered != 0 {
        return 0;
    }

    // NULL: the passed dentry was used; an error pointer: the lookup failed; otherwise an alias.
    let outcome = if (-4095..0).contains(&ret) {
        LOOKUP_ERROR
    } else {
        let dentry = if ret == 0 { start.dentry } else { ret as u64 };
        let inode: u64 = read_field(dentry, cfg(|c| &c.dentry_d_inode));
        let upper_off = cfg(|c| &c.ovl_upper_from_vfs_inode);
        if inode == 0 {
            LOOKUP_NEGATIVE
        } else if upper_off == 0 {
            LOOKUP_POSITIVE_UNKNOWN_LAYER
        } else if read_field::<u64>(inode, upper_off) != 0 {
            LOOKUP_UPPER
        } else {
            LOOKUP_LOWER
        }
    };

    let Some(mut entry) = EVENTS.reserve::<LookupEvent>(0) else {
        count(STAT_DROPPED_LOOKUP);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring buffer entry.
    unsafe {
        fill_header(
            &raw mut (*ev).header,
            EVENT_LOOKUP,
            start.start_ns,
            dentry_dev(start.dentry),
        );
        (*ev).duration_ns = now - start.start_ns;
        (*ev).outcome = outcome;
        (*ev).layers = start.layers;
        (*ev)._pad = 0;
        let n = read_name(
            start.dentry,
            (&raw mut (*ev).name).cast(),
            LOOKUP_NAME_LEN as u32,
        );
        (*ev).name_len = n.saturating_sub(1);
    }
    entry.submit(submit_flags());
    0
}

impl crate::kernel::InFlight for LookupFrame {
    fn sp(&self) -> u64 {
        self.sp
    }
    fn task(&self) -> u64 {
        self.task
    }
    fn filtered(&self) -> bool {
        self.filtered != 0
    }
}

/// The depth of a thread's in-flight stack.
#[inline(always)]
fn depth_now(s: *const LookupInflight) -> u32 {
    // SAFETY: this thread's own entry.
    unsafe { (*s).depth }
}

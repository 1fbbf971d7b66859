//! Lookup: one event per `ovl_lookup` call (a dcache miss), with the number of layers consulted
//! (`ovl_lookup_layer` calls inside it) and where the name was found.

use aya_ebpf::{
    macros::{kprobe, kretprobe, map},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use overlay_trace_common::{
    EVENT_LOOKUP, LOOKUP_ERROR, LOOKUP_LOWER, LOOKUP_NAME_LEN, LOOKUP_NEGATIVE,
    LOOKUP_POSITIVE_UNKNOWN_LAYER, LOOKUP_UPPER, LookupEvent, STAT_DROPPED_LOOKUP,
    STAT_INFLIGHT_FULL,
};

use crate::{
    EVENTS,
    kernel::{cfg, count, dev_filtered_out, current_tgid_pid, dentry_dev, fill_header, filtered_out, now_ns, submit_flags, read_field, read_name},
};

#[repr(C)]
#[derive(Clone, Copy)]
struct LookupStart {
    start_ns: u64,
    dentry: u64,
    layers: u32,
    /// ovl_lookup calls nested inside this one (an overlay whose layer is itself an overlay):
    /// they are folded into the outer lookup rather than reported on their own.
    nested: u32,
}

#[map]
static LOOKUP_INFLIGHT: HashMap<u32, LookupStart> = HashMap::with_max_entries(16384, 0);

/// `struct dentry *ovl_lookup(struct inode *dir, struct dentry *dentry, unsigned int flags)`
#[kprobe]
pub fn lookup_entry(ctx: ProbeContext) -> u32 {
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    if let Some(outer) = LOOKUP_INFLIGHT.get_ptr_mut(pid) {
        // SAFETY: this thread's own entry.
        unsafe { (*outer).nested += 1 };
        return 0;
    }
    let dentry: u64 = ctx.arg(1).unwrap_or(0);
    if dev_filtered_out(dentry) {
        return 0;
    }
    let start = LookupStart {
        start_ns: now_ns(),
        dentry,
        layers: 0,
        nested: 0,
    };
    if LOOKUP_INFLIGHT.insert(pid, start, 0).is_err() {
        count(STAT_INFLIGHT_FULL);
    }
    0
}

/// `ovl_lookup_layer(...)`: one call per layer consulted.
#[kprobe]
pub fn lookup_layer_entry(_ctx: ProbeContext) -> u32 {
    let (_, pid) = current_tgid_pid();
    if let Some(start) = LOOKUP_INFLIGHT.get_ptr_mut(pid) {
        // SAFETY: this thread's own entry.
        unsafe {
            if (*start).nested == 0 {
                (*start).layers += 1;
            }
        }
    }
    0
}

#[kretprobe]
pub fn lookup_return(ctx: RetProbeContext) -> u32 {
    let now = now_ns();
    let (_, pid) = current_tgid_pid();
    let Some(p) = LOOKUP_INFLIGHT.get_ptr_mut(pid) else {
        return 0;
    };
    // SAFETY: this thread's own entry.
    let start = unsafe {
        if (*p).nested > 0 {
            (*p).nested -= 1;
            return 0;
        }
        *p
    };
    let _ = LOOKUP_INFLIGHT.remove(pid);

    // NULL: the passed dentry was used; an error pointer: the lookup failed; otherwise an alias.
    let ret: i64 = ctx.ret();
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
        fill_header(&raw mut (*ev).header, EVENT_LOOKUP, start.start_ns, dentry_dev(start.dentry));
        (*ev).duration_ns = now - start.start_ns;
        (*ev).outcome = outcome;
        (*ev).layers = start.layers;
        (*ev)._pad = 0;
        let n = read_name(start.dentry, (&raw mut (*ev).name).cast(), LOOKUP_NAME_LEN as u32);
        (*ev).name_len = n.saturating_sub(1);
    }
    entry.submit(submit_flags());
    0
}

//! Copy-up: one event per `ovl_copy_up_one` call (one object copied up), with the data copy
//! (`ovl_copy_up_file` on 6.1+, `ovl_copy_up_data` on 5.x) that ran inside it joined by thread.
//!
//! Each thread's calls in flight are a small stack (`CopyUpInflight`): a call whose return the
//! kernel never delivered is found when the thread enters again and counted, never left to
//! swallow later calls.

use aya_ebpf::EbpfContext as _;
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use overlay_trace_common::{
    COPY_UP_COPIED, COPY_UP_UNKNOWN, COPY_UP_WAITED, CopyUpEvent, CopyUpFrame, CopyUpInflight,
    EVENT_COPY_UP, MAX_NESTING, NO_DATA_COPY, STAT_DROPPED_COPY_UP, STAT_INFLIGHT_FULL,
    STAT_MISSED_RETURN_COPY_UP, STAT_MISSED_RETURN_DATA, STAT_ORPHAN_RETURNS,
};

use crate::{
    EVENTS,
    kernel::{
        cfg, count, current_syscall, current_task, current_tgid_pid, dentry_dev, dev_filtered_out,
        fill_header, filtered_out, now_ns, pop_frame, push_frame, read_field, read_path,
        return_stack_pointer, slot, stack_pointer, submit_flags, trampoline_position, verbose,
    },
};

/// Thread id -> copy-ups in flight. LRU: an entry left by a thread that died mid-call can never
/// fill the map.
#[map]
static COPY_UP_INFLIGHT: LruHashMap<u32, CopyUpInflight> = LruHashMap::with_max_entries(16384, 0);

/// One zeroed `CopyUpInflight` per CPU: the template of a thread's first entry (too large for the
/// 512-byte eBPF stack).
#[map]
static COPY_UP_SCRATCH: PerCpuArray<CopyUpInflight> = PerCpuArray::with_max_entries(1, 0);

/// `int ovl_copy_up_one(struct dentry *parent, struct dentry *dentry, int flags)`
#[kprobe]
pub fn copy_up_one_entry(ctx: ProbeContext) -> u32 {
    let stale = enter(
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
        stack_pointer(&ctx),
    );
    if stale > 0 && verbose() {
        warn!(
            &ctx,
            "copy-up: {} call(s) returned unseen (missed kretprobe)", stale
        );
    }
    0
}

#[fentry(function = "ovl_copy_up_one")]
pub fn copy_up_one_fentry(ctx: FEntryContext) -> u32 {
    // fexit too can be skipped (the kernel's recursion guard): stale frames are found the same
    // way as under kprobes.
    enter(ctx.arg(1), ctx.arg(2), trampoline_position(ctx.as_ptr()));
    0
}

/// A copy-up begins: records its frame. Returns how many earlier calls of this thread were
/// found to have returned unseen.
#[inline(always)]
fn enter(dentry: u64, flags: i32, sp: u64) -> u32 {
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    // A call on a superblock not traced still gets a frame, so that its return pops its own
    // frame: an overlay nested in a traced one (or the reverse) must not take its caller's.
    let filtered = dev_filtered_out(dentry);
    let inode: u64 = if filtered {
        0
    } else {
        read_field(dentry, cfg(|c| &c.dentry_d_inode))
    };
    // Size and mode before the copy: what had to be copied from below.
    let (size, mode) = if inode == 0 {
        (0, 0)
    } else {
        let mode: u16 = read_field(inode, cfg(|c| &c.inode_i_mode));
        (
            read_field::<i64>(inode, cfg(|c| &c.inode_i_size)),
            mode as u32,
        )
    };
    let frame = CopyUpFrame {
        start_ns: now_ns(),
        sp,
        task: current_task(),
        dentry,
        size,
        data_start_ns: 0,
        data_ns: 0,
        data_bytes: NO_DATA_COPY,
        sync_start_ns: 0,
        sync_ns: 0,
        flags: flags as u32,
        mode,
        owned: 0,
        filtered: u32::from(filtered),
    };
    let Some(inflight) = inflight_of(pid) else {
        count(STAT_INFLIGHT_FULL);
        return 0;
    };
    // SAFETY: this thread's own entry; only this thread's probes touch it.
    unsafe {
        push_frame(
            &mut (*inflight).frames,
            &mut (*inflight).depth,
            frame,
            STAT_MISSED_RETURN_COPY_UP,
        )
    }
}

/// This thread's entry, created empty when it has none.
#[inline(always)]
fn inflight_of(pid: u32) -> Option<*mut CopyUpInflight> {
    if let Some(p) = COPY_UP_INFLIGHT.get_ptr_mut(pid) {
        return Some(p);
    }
    let zero = COPY_UP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only between here and the insert.
    unsafe { (*zero).depth = 0 };
    // SAFETY: as above; the map copies the value.
    COPY_UP_INFLIGHT.insert(pid, unsafe { &*zero }, 0).ok()?;
    COPY_UP_INFLIGHT.get_ptr_mut(pid)
}

#[kretprobe]
pub fn copy_up_one_return(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret(), return_stack_pointer(&ctx))
}

/// `int ovl_copy_up_one(parent, dentry, flags)`: the return value follows the 3 arguments.
#[fexit(function = "ovl_copy_up_one")]
pub fn copy_up_one_fexit(ctx: FExitContext) -> u32 {
    exit(ctx.arg::<i32>(3) as i64, trampoline_position(ctx.as_ptr()))
}

/// A copy-up returns `ret` at stack position `sp`: emits the event of its own frame.
#[inline(always)]
fn exit(ret: i64, sp: u64) -> u32 {
    let now = now_ns();
    let (tgid, pid) = current_tgid_pid();
    if filtered_out(tgid) {
        return 0;
    }
    let Some(s) = COPY_UP_INFLIGHT.get_ptr_mut(pid) else {
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
            STAT_MISSED_RETURN_COPY_UP,
        )
    };
    // The thread has no call in flight now: its entry goes, so the table holds only threads
    // with calls in flight and a long call is never evicted by threads that came and went.
    if depth_now(s) == 0 {
        let _ = COPY_UP_INFLIGHT.remove(pid);
    }
    let Some(start) = popped else {
        return 0;
    };
    if start.filtered != 0 {
        return 0;
    }
    // A data copy whose return never came: its time is missing from this copy-up (counted here,
    // at the copy-up's end, as well as when another data copy starts).
    if start.data_start_ns != 0 {
        count(STAT_MISSED_RETURN_DATA);
    }

    let Some(mut entry) = EVENTS.reserve::<CopyUpEvent>(0) else {
        count(STAT_DROPPED_COPY_UP);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring buffer entry.
    unsafe {
        fill_header(
            &raw mut (*ev).header,
            EVENT_COPY_UP,
            start.start_ns,
            dentry_dev(start.dentry),
        );
        (*ev).duration_ns = now - start.start_ns;
        (*ev).data_ns = start.data_ns;
        (*ev).data_bytes = start.data_bytes;
        (*ev).size = start.size;
        (*ev).sync_ns = start.sync_ns;
        (*ev).flags = start.flags;
        (*ev).mode = start.mode;
        (*ev).ret = ret as i32;
        (*ev).outcome = if cfg(|c| &c.copy_up_end_probed) == 0 {
            COPY_UP_UNKNOWN
        } else if start.owned != 0 || ret as i32 != 0 {
            // A call that returned an error failed (before or during its copy): never a wait.
            // (`int`: the upper half of the return register means nothing.)
            COPY_UP_COPIED
        } else {
            COPY_UP_WAITED
        };
        (*ev).syscall = current_syscall();
        let path = read_path(start.dentry, (&raw mut (*ev).path).cast());
        (*ev).path_len = path.len;
        (*ev).path_depth = path.depth;
        (*ev).path_flags = path.flags;
    }
    entry.submit(submit_flags());
    0
}

/// The innermost copy-up of this thread, if one is in flight.
#[inline(always)]
pub(crate) fn current_frame(pid: u32) -> Option<*mut CopyUpFrame> {
    let s = COPY_UP_INFLIGHT.get_ptr_mut(pid)?;
    // SAFETY: this thread's own entry.
    unsafe {
        let depth = ((*s).depth as usize).min(MAX_NESTING);
        if depth == 0 {
            return None;
        }
        Some(&raw mut (*s).frames[slot(depth - 1)])
    }
}

/// `ovl_copy_up_file(ofs, dentry, new_file, loff_t len)` (6.1+) and
/// `ovl_copy_up_data(ofs, old, new, loff_t len)` (5.10 .. 6.0; `(old, new, len)` before 5.10):
/// the position of `len` comes from BTF (`Config::data_len_arg`).
/// A copy-up may copy its data in several calls: bytes and time are summed.
#[kprobe]
pub fn copy_up_data_entry(ctx: ProbeContext) -> u32 {
    // Where `len` is differs by kernel version: userspace read it from BTF. All three
    // candidate registers are read (volatile, each at its fixed offset; x86-64: rdx, rcx, r8
    // hold arguments 3, 4, 5), then one is picked: a load at a computed offset into the
    // context is refused by the verifier.
    let regs = ctx.regs;
    // SAFETY: a kprobe's context is the probed function's saved registers.
    let (third, fourth, fifth) = unsafe {
        (
            core::ptr::read_volatile(&(*regs).rdx),
            core::ptr::read_volatile(&(*regs).rcx),
            core::ptr::read_volatile(&(*regs).r8),
        )
    };
    let len = match cfg(|c| &c.data_len_arg) {
        3 => third,
        5 => fifth,
        _ => fourth,
    } as i64;
    data_enter(len);
    0
}

/// fentry is only chosen where `len` is the 4th argument (userspace checks BTF).
#[fentry(function = "ovl_copy_up_file")]
pub fn copy_up_data_fentry(ctx: FEntryContext) -> u32 {
    data_enter(ctx.arg(3));
    0
}

#[inline(always)]
fn data_enter(len: i64) {
    let (_, pid) = current_tgid_pid();
    if let Some(f) = current_frame(pid) {
        // SAFETY: the frame belongs to this thread's in-flight copy-up.
        unsafe {
            if (*f).data_start_ns != 0 {
                // The previous data copy never returned (as far as we saw).
                count(STAT_MISSED_RETURN_DATA);
            }
            (*f).data_start_ns = now_ns();
            (*f).data_bytes = if (*f).data_bytes == NO_DATA_COPY {
                len
            } else {
                (*f).data_bytes + len
            };
        }
    }
}

#[kretprobe]
pub fn copy_up_data_return(_ctx: RetProbeContext) -> u32 {
    data_exit();
    0
}

#[fexit(function = "ovl_copy_up_file")]
pub fn copy_up_data_fexit(_ctx: FExitContext) -> u32 {
    data_exit();
    0
}

#[inline(always)]
fn data_exit() {
    let (_, pid) = current_tgid_pid();
    if let Some(f) = current_frame(pid) {
        // SAFETY: as above.
        unsafe {
            if (*f).data_start_ns != 0 {
                (*f).data_ns += now_ns() - (*f).data_start_ns;
                (*f).data_start_ns = 0;
            }
        }
    }
}

/// `void ovl_copy_up_end(struct dentry *dentry)`: reached only by the call that owned the copy-up
/// (`ovl_copy_up_start` returned 0); a call that raced with another one returns without it.
#[kprobe]
pub fn copy_up_end_entry(_ctx: ProbeContext) -> u32 {
    owned();
    0
}

#[fentry(function = "ovl_copy_up_end")]
pub fn copy_up_end_fentry(_ctx: FEntryContext) -> u32 {
    owned();
    0
}

#[inline(always)]
fn owned() {
    let (_, pid) = current_tgid_pid();
    if let Some(f) = current_frame(pid) {
        // SAFETY: the frame belongs to this thread's in-flight copy-up.
        unsafe { (*f).owned = 1 };
    }
}

impl crate::kernel::InFlight for CopyUpFrame {
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
fn depth_now(s: *const CopyUpInflight) -> u32 {
    // SAFETY: this thread's own entry.
    unsafe { (*s).depth }
}

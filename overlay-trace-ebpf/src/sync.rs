//! Syncs inside copy-ups: overlayfs fsyncs each file it copied up (unless mounted `volatile`),
//! inside its data copy, with `vfs_fsync` (whose `vfs_fsync_range` the compiler inlines: a probe
//! there never fires for it). `vfs_fsync` is the kernel's, called by fsync(2) on the
//! machine: a call outside a copy-up costs one map lookup. Kprobes only (a vmlinux function:
//! the fentry path loads against overlay's own BTF object); the fentry pair exists for the
//! probe table's shape and is never attached.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::{
    copy_up::current_frame,
    kernel::{current_tgid_pid, now_ns},
};

#[kprobe]
pub fn sync_entry(_ctx: ProbeContext) -> u32 {
    let (_, pid) = current_tgid_pid();
    if let Some(f) = current_frame(pid) {
        // SAFETY: this thread's own frame.
        unsafe { (*f).sync_start_ns = now_ns() };
    }
    0
}

#[kretprobe]
pub fn sync_return(_ctx: RetProbeContext) -> u32 {
    let now = now_ns();
    let (_, pid) = current_tgid_pid();
    if let Some(f) = current_frame(pid) {
        // SAFETY: this thread's own frame.
        unsafe {
            let start = (*f).sync_start_ns;
            if start != 0 && now >= start {
                (*f).sync_ns += now - start;
            }
            (*f).sync_start_ns = 0;
        }
    }
    0
}

#[fentry(function = "vfs_fsync")]
pub fn sync_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "vfs_fsync")]
pub fn sync_fexit(_ctx: FExitContext) -> u32 {
    0
}

//! Helpers shared by the probe families: configuration, kernel reads, event headers, counters.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str,
    },
    programs::{ProbeContext, RetProbeContext},
};
use overlay_trace_common::{
    Config, EventHeader, MAX_PATH_DEPTH, NAME_READ_MAX, NO_SYSCALL, PATH_BUDGET, PATH_INCOMPLETE,
    PATH_TRUNCATED, STAT_READ_ERRORS, SYSCALL_NR_MAX,
};

use crate::{CONFIG, DEV_FILTER, STATS};

/// Reads one field of the load-time configuration, e.g. `cfg(|c| &c.dentry_d_parent)`.
/// `read_volatile` keeps the compiler from folding CONFIG's all-zero initial value into the code.
#[inline(always)]
pub fn cfg(field: impl FnOnce(&'static Config) -> &'static u32) -> u32 {
    // SAFETY: the reference points into the CONFIG static.
    unsafe { core::ptr::read_volatile(field(&CONFIG)) }
}

/// `OVERLAY_TRACE_VERBOSE=1`: log rare conditions through aya-log.
#[inline(always)]
pub fn verbose() -> bool {
    cfg(|c| &c.verbose) != 0
}

pub fn count(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *p += 1 };
    }
}

/// Reads a `T` at `base + offset` in kernel memory; counts failures and returns zero then.
#[inline(always)]
pub fn read_field<T: Copy + Default>(base: u64, offset: u32) -> T {
    try_read_field(base, offset).unwrap_or_default()
}

/// Reads a `T` at `base + offset` in kernel memory; counts a failure and returns None then.
#[inline(always)]
pub fn try_read_field<T: Copy>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel handles faulting addresses.
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(STAT_READ_ERRORS);
            None
        }
    }
}

const _: () = assert!(overlay_trace_common::MAX_NESTING.is_power_of_two());

/// Index `i` of an in-flight stack, masked in a way the compiler cannot fold away: otherwise it
/// proves the mask useless, rewrites `frames[depth - 1]` as a negative offset from
/// `frames[depth]`, and older verifiers (6.1) refuse the access.
#[inline(always)]
pub fn slot(i: usize) -> usize {
    let v = i;
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&v) & (overlay_trace_common::MAX_NESTING - 1) }
}

/// A call in flight, as the stale-entry check sees it.
pub trait InFlight: Copy {
    fn sp(&self) -> u64;
    fn task(&self) -> u64;
    /// A call the filters exclude: its loss is nobody's.
    fn filtered(&self) -> bool;
}

/// How far a return's stack position may lie from its entry's: a kretprobe sees the stack
/// pointer just after the return (entry + 8 on x86-64), fexit the very address fentry saw. A
/// call nested inside another starts at least a few frames (far more than this) deeper.
const SAME_CALL_SLACK: u64 = 32;

/// Pops the frame of the call returning now, at stack position `sp` (0: unknown) on `task`.
/// Frames above it (deeper calls, or another thread's left by a reused thread id) returned
/// unseen: dropped and counted as `missed`. When the top frame lies shallower than `sp`, the
/// returning call was never recorded (its entry came before the probes, or was skipped): an
/// orphan return, nothing popped. `None` then, and when the stack is empty.
#[inline(always)]
pub fn pop_frame<F: InFlight>(
    frames: &[F; overlay_trace_common::MAX_NESTING],
    depth: &mut u32,
    sp: u64,
    task: u64,
    missed: u32,
) -> Option<F> {
    use overlay_trace_common::{MAX_NESTING, STAT_ORPHAN_RETURNS};
    let mut d = (*depth as usize).min(MAX_NESTING);
    for _ in 0..MAX_NESTING {
        if d == 0 {
            break;
        }
        let top = &frames[slot(d - 1)];
        let deeper = sp != 0 && top.sp() != 0 && top.sp() + SAME_CALL_SLACK < sp;
        if top.task() != task || deeper {
            d -= 1;
            if !top.filtered() {
                count(missed);
            }
        } else {
            break;
        }
    }
    if d == 0 {
        *depth = 0;
        count(STAT_ORPHAN_RETURNS);
        return None;
    }
    let top = frames[slot(d - 1)];
    if sp != 0 && top.sp() != 0 && top.sp() > sp + SAME_CALL_SLACK {
        *depth = d as u32;
        count(STAT_ORPHAN_RETURNS);
        return None;
    }
    *depth = d as u32 - 1;
    Some(top)
}

/// Pushes `frame` on a thread's stack of calls in flight (`frames[..depth]`), first dropping the
/// frames whose call is over unseen, each counted as `missed` (a missed return). A stack already
/// `MAX_NESTING` deep counts the call as untracked. Returns how many stale frames were dropped.
#[inline(always)]
pub fn push_frame<F: InFlight>(
    frames: &mut [F; overlay_trace_common::MAX_NESTING],
    depth: &mut u32,
    frame: F,
    missed: u32,
) -> u32 {
    use overlay_trace_common::MAX_NESTING;
    let mut d = (*depth as usize).min(MAX_NESTING);
    let mut stale = 0;
    for _ in 0..MAX_NESTING {
        if d == 0 {
            break;
        }
        let top = &frames[slot(d - 1)];
        if !is_stale(top.sp(), top.task(), frame.sp(), frame.task()) {
            break;
        }
        d -= 1;
        stale += 1;
        if !top.filtered() {
            count(missed);
        }
    }
    if d >= MAX_NESTING {
        *depth = d as u32;
        count(overlay_trace_common::STAT_INFLIGHT_FULL);
        return stale;
    }
    frames[slot(d)] = frame;
    *depth = d as u32 + 1;
    stale
}

/// Where the current thread is on its kernel stack at a kprobe (function entry).
#[inline(always)]
pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: a kprobe's context is the probed function's saved registers.
    unsafe { (*ctx.regs).rsp }
}

/// The stack pointer at a kretprobe: just after the probed function returned.
#[inline(always)]
pub fn return_stack_pointer(ctx: &RetProbeContext) -> u64 {
    // SAFETY: a kretprobe's context is the registers at the return.
    unsafe { (*ctx.regs).rsp }
}

/// Where a call is on the kernel stack under fentry/fexit: the trampoline passes a pointer to
/// the arguments it saved in its own frame, on the traced thread's stack, at the same address
/// for the call's fentry and fexit (a nested call's lies deeper). Only compared, never read.
#[inline(always)]
pub fn trampoline_position(ctx: *mut core::ffi::c_void) -> u64 {
    ctx as u64
}

/// The current `task_struct`, as an identity only (never dereferenced).
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() }
}

/// `task_struct.flags` of threads whose saved registers say nothing of what they do now: a
/// kernel thread (`PF_KTHREAD`), an io_uring worker (`PF_IO_WORKER`) or a user worker such as
/// vhost's (`PF_USER_WORKER`, 6.4+): the last two start with a copy of their creator's registers.
const NOT_A_SYSCALL: u32 = 0x0020_0000 | 0x0000_0010 | 0x0000_4000;
/// `thread_info.status`: a 32-bit system call (its number is in the i386 table).
const TS_COMPAT: u32 = 0x0002;

/// The system call the current thread is in, read from the user registers the entry code saved
/// at the top of its kernel stack (see `Config::syscall_nr_from_stack`): what asked for a
/// copy-up (chown, rename, openat...). `NO_SYSCALL` for a kernel thread, an unknown layout, or a
/// value no system call has. Failed reads are not counted: this is context, not a measurement.
#[inline(always)]
pub fn current_syscall() -> u32 {
    let (stack_at, flags_at, nr_at) = (
        cfg(|c| &c.task_struct_stack),
        cfg(|c| &c.task_struct_flags),
        cfg(|c| &c.syscall_nr_from_stack),
    );
    if stack_at == 0 || nr_at == 0 {
        return NO_SYSCALL;
    }
    let task = current_task();
    // SAFETY (all three): bpf_probe_read_kernel handles faulting addresses.
    let Ok(flags) = (unsafe { bpf_probe_read_kernel((task + flags_at as u64) as *const u32) })
    else {
        return NO_SYSCALL;
    };
    if flags & NOT_A_SYSCALL != 0 {
        return NO_SYSCALL;
    }
    let status_at = cfg(|c| &c.task_thread_status);
    // SAFETY: as above.
    match unsafe { bpf_probe_read_kernel((task + status_at as u64) as *const u32) } {
        Ok(status) if status_at != 0 && status & TS_COMPAT == 0 => {}
        _ => return NO_SYSCALL,
    }
    let Ok(stack) = (unsafe { bpf_probe_read_kernel((task + stack_at as u64) as *const u64) })
    else {
        return NO_SYSCALL;
    };
    match unsafe { bpf_probe_read_kernel((stack + nr_at as u64) as *const u64) } {
        Ok(nr) if nr < SYSCALL_NR_MAX => nr as u32,
        _ => NO_SYSCALL,
    }
}

/// Is a recorded call of this thread over, though its return was never seen? It is when the
/// thread is another one (thread ids are reused), or when a new call starts at the same or a
/// shallower kernel stack position (stacks grow down: a call nested inside it would start deeper).
/// `sp` 0 means unknown: then only a different task proves it.
#[inline(always)]
pub fn is_stale(frame_sp: u64, frame_task: u64, sp: u64, task: u64) -> bool {
    frame_task != task || (sp != 0 && frame_sp != 0 && frame_sp <= sp)
}

pub fn current_tgid_pid() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// True when the `--pid` filter excludes the current task.
#[inline(always)]
pub fn filtered_out(tgid: u32) -> bool {
    let want = cfg(|c| &c.filter_tgid);
    want != 0 && want != tgid
}

/// True when `--container` is in force and `dentry` is on none of the chosen superblocks.
#[inline(always)]
pub fn dev_filtered_out(dentry: u64) -> bool {
    if cfg(|c| &c.filter_devs) == 0 {
        return false;
    }
    let dev = dentry_dev(dentry);
    // SAFETY: read-only lookup of a plain value.
    unsafe { DEV_FILTER.get(&dev) }.is_none()
}

/// `dentry->d_sb->s_dev`.
#[inline(always)]
pub fn dentry_dev(dentry: u64) -> u32 {
    let sb: u64 = read_field(dentry, cfg(|c| &c.dentry_d_sb));
    if sb == 0 {
        return 0;
    }
    read_field(sb, cfg(|c| &c.super_block_s_dev))
}

pub fn fill_header(h: *mut EventHeader, kind: u32, start_ns: u64, dev: u32) {
    let (tgid, pid) = current_tgid_pid();
    // SAFETY: `h` points into a reserved ring buffer entry.
    unsafe {
        (*h).kind = kind;
        (*h).pid = pid;
        (*h).tgid = tgid;
        (*h).dev = dev;
        (*h).start_ns = start_ns;
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).comm = bpf_get_current_comm().unwrap_or_default();
    }
}

/// Reads `dentry->d_name.name` into `dst` (at most `max` bytes, NUL included).
/// Returns the bytes written including the NUL, or 0 on failure.
#[inline(always)]
pub fn read_name(dentry: u64, dst: *mut u8, max: u32) -> u32 {
    let name: u64 = read_field(dentry, cfg(|c| &c.dentry_d_name_name));
    if name == 0 {
        return 0;
    }
    // SAFETY: the helper bounds the write to `max` bytes of `dst`, which callers size for it.
    let n = unsafe { bpf_probe_read_kernel_str(dst as *mut _, max, name as *const _) };
    if n <= 0 {
        count(STAT_READ_ERRORS);
        0
    } else {
        n as u32
    }
}

pub struct PathInfo {
    pub len: u32,
    pub depth: u32,
    pub flags: u32,
}

/// Walks `d_parent` from `dentry` up to the overlay root, writing each component name leaf first
/// (NUL-terminated) into `buf`, which must hold `PATH_BUF_LEN` bytes. The root's own name ("/")
/// is not written. Userspace reverses the components. A walk that stops early says why in
/// `flags`: `PATH_TRUNCATED` (deeper than `MAX_PATH_DEPTH` or longer than `PATH_BUDGET`) or
/// `PATH_INCOMPLETE` (a kernel read failed): never taken for a complete path.
#[inline(always)]
pub fn read_path(mut dentry: u64, buf: *mut u8) -> PathInfo {
    let parent_off = cfg(|c| &c.dentry_d_parent);
    let mut info = PathInfo {
        len: 0,
        depth: 0,
        flags: 0,
    };
    let mut off: usize = 0;
    let mut at_root = false;
    for _ in 0..MAX_PATH_DEPTH {
        let Some(parent) = try_read_field::<u64>(dentry, parent_off) else {
            info.flags = PATH_INCOMPLETE;
            break;
        };
        if parent == dentry {
            at_root = true;
            break;
        }
        if parent == 0 {
            info.flags = PATH_INCOMPLETE;
            break;
        }
        if off >= PATH_BUDGET {
            info.flags = PATH_TRUNCATED;
            break;
        }
        // The mask proves to the verifier that off + NAME_READ_MAX stays inside the buffer.
        let at = off & (PATH_BUDGET - 1);
        // SAFETY: at + NAME_READ_MAX <= PATH_BUF_LEN.
        let n = read_name(dentry, unsafe { buf.add(at) }, NAME_READ_MAX as u32);
        if n == 0 {
            info.flags = PATH_INCOMPLETE;
            break;
        }
        off = at + n as usize;
        info.depth += 1;
        dentry = parent;
    }
    if !at_root && info.flags == 0 {
        // MAX_PATH_DEPTH components written: complete only if what is left is the root itself.
        info.flags = match try_read_field::<u64>(dentry, parent_off) {
            Some(parent) if parent == dentry => 0,
            Some(_) => PATH_TRUNCATED,
            None => PATH_INCOMPLETE,
        };
    }
    info.len = off as u32;
    info
}

/// Monotonic time in ns.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Userspace is woken only once this much is waiting; it also drains on a short timer. Waking it
/// for every event costs the traced workload a context switch per event.
const WAKEUP_BYTES: u64 = 256 * 1024;

/// Flags for `submit`: no wakeup until `WAKEUP_BYTES` are pending.
#[inline(always)]
pub fn submit_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if crate::EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

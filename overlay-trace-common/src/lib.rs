//! Types that cross the kernel/userspace boundary. Everything is `#[repr(C)]`, made of fixed-size
//! integers (no `bool`, no enums: an out-of-range value from the kernel must not be UB in
//! userspace), and its size is pinned by a const assertion so both sides agree.
#![no_std]

use core::mem::size_of;

/// `EventHeader::kind` of a [`CopyUpEvent`].
pub const EVENT_COPY_UP: u32 = 1;
/// `EventHeader::kind` of a [`LookupEvent`].
pub const EVENT_LOOKUP: u32 = 2;
/// `EventHeader::kind` of a [`MountEvent`].
pub const EVENT_MOUNT: u32 = 3;
/// `EventHeader::kind` of an [`ExecEvent`].
pub const EVENT_EXEC: u32 = 4;
/// `EventHeader::kind` of a [`RenameEvent`].
pub const EVENT_RENAME: u32 = 5;

pub const COMM_LEN: usize = 16;

/// Path components are written leaf first, each NUL-terminated. A component starts at an offset
/// below `PATH_BUDGET` (a power of two, so the kernel side can mask the offset for the verifier)
/// and is at most `NAME_READ_MAX` bytes long (NAME_MAX + NUL), hence the buffer size.
pub const PATH_BUDGET: usize = 1024;
pub const NAME_READ_MAX: usize = 256;
pub const PATH_BUF_LEN: usize = PATH_BUDGET + NAME_READ_MAX;
/// Deeper paths are cut at this many components and flagged `PATH_TRUNCATED`.
pub const MAX_PATH_DEPTH: u32 = 48;
/// `path_flags`: the walk stopped before the overlay root (too deep or too long); the path holds
/// the components nearest the object.
pub const PATH_TRUNCATED: u32 = 1;
/// `path_flags`: a kernel read failed during the walk; the path holds the components read so far.
pub const PATH_INCOMPLETE: u32 = 2;

/// A looked-up name is kept up to this many bytes (NUL included); longer ones are cut.
pub const LOOKUP_NAME_LEN: usize = 64;

/// `LookupEvent::outcome` values.
pub const LOOKUP_NEGATIVE: u32 = 0;
pub const LOOKUP_UPPER: u32 = 1;
pub const LOOKUP_LOWER: u32 = 2;
/// Positive, but the kernel's BTF did not tell where `ovl_inode.__upperdentry` lives.
pub const LOOKUP_POSITIVE_UNKNOWN_LAYER: u32 = 3;
pub const LOOKUP_ERROR: u32 = 4;

/// `CopyUpEvent::data_bytes` when no data copy ran inside the copy-up.
pub const NO_DATA_COPY: i64 = -1;

/// Indexes into the per-CPU `STATS` array.
pub const STAT_DROPPED_COPY_UP: u32 = 0;
pub const STAT_DROPPED_LOOKUP: u32 = 1;
/// An entry probe could not record its start (in-flight map full, or calls nested deeper than
/// `MAX_NESTING` on one thread): that call is not reported.
pub const STAT_INFLIGHT_FULL: u32 = 2;
/// A kernel read failed (the field pointer was bad): the event is still sent, with what was read.
pub const STAT_READ_ERRORS: u32 = 3;
pub const STAT_DROPPED_MOUNT: u32 = 4;
/// A call whose return never came (the kernel dropped it, e.g. beyond a kretprobe's `maxactive`),
/// found when the same thread entered the function again: that call is not reported.
pub const STAT_MISSED_RETURN_COPY_UP: u32 = 5;
pub const STAT_MISSED_RETURN_LOOKUP: u32 = 6;
pub const STAT_MISSED_RETURN_MOUNT: u32 = 7;
/// A data copy whose return never came: its copy-up is reported without that data time.
pub const STAT_MISSED_RETURN_DATA: u32 = 8;
/// A return with no recorded entry: the call began before the entry probe was attached.
pub const STAT_ORPHAN_RETURNS: u32 = 9;
/// Process starts (`sched_process_exec`, for `run --trace`) the ring buffer could not take.
pub const STAT_DROPPED_EXEC: u32 = 10;
/// Refused renames (`RenameEvent`) the ring buffer could not take.
pub const STAT_DROPPED_RENAME: u32 = 11;
pub const NUM_STATS: u32 = 12;

/// Calls of one function nested on one thread (an overlay whose layer is itself an overlay) that
/// are tracked each on their own; deeper ones count as `STAT_INFLIGHT_FULL`.
pub const MAX_NESTING: usize = 4;

/// A copy-up in flight, from its entry to its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyUpFrame {
    pub start_ns: u64,
    /// Where the call is on the thread's kernel stack (a kprobe: the stack pointer at entry;
    /// fentry: the trampoline's context, on that stack, the same address at fexit; 0: unknown).
    /// A new call at the same or a shallower position proves this one returned unseen; a
    /// return finds its own frame by it.
    pub sp: u64,
    /// `task_struct` of the thread: a reused thread id is a different thread.
    pub task: u64,
    pub dentry: u64,
    pub size: i64,
    pub data_start_ns: u64,
    pub data_ns: u64,
    /// Sum over the data copies of this copy-up, or `NO_DATA_COPY`.
    pub data_bytes: i64,
    /// A sync (`vfs_fsync_range`) of this thread in flight, and the syncs' time so far.
    pub sync_start_ns: u64,
    pub sync_ns: u64,
    pub flags: u32,
    pub mode: u32,
    /// Non-zero once this call reached `ovl_copy_up_end`: it owned the copy-up.
    pub owned: u32,
    /// Non-zero for a call the filters exclude: kept only so its return pops its own frame
    /// (never the caller's), then reported nowhere.
    pub filtered: u32,
}

/// One thread's copy-ups in flight, innermost last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyUpInflight {
    pub depth: u32,
    pub _pad: u32,
    pub frames: [CopyUpFrame; MAX_NESTING],
}

/// A lookup in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupFrame {
    pub start_ns: u64,
    pub sp: u64,
    pub task: u64,
    pub dentry: u64,
    /// `ovl_lookup_layer` calls made by this lookup itself.
    pub layers: u32,
    /// As `CopyUpFrame::filtered`.
    pub filtered: u32,
}

/// One thread's lookups in flight, innermost last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupInflight {
    pub depth: u32,
    pub _pad: u32,
    pub frames: [LookupFrame; MAX_NESTING],
}

/// A mount (`ovl_fill_super`) in flight; mounts never nest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MountFrame {
    pub start_ns: u64,
    pub sp: u64,
    pub task: u64,
    pub sb: u64,
    /// Non-zero for a mount by a process `--pid` excludes: followed for `--container`, not
    /// reported.
    pub filtered: u32,
    pub _pad: u32,
}

/// An overlay's upper dir as the kernel knows it: the filesystem's `s_dev` and the directory's
/// inode number. A container's root mounted again after a restart has the same upper dir.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpperDir {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Kernel thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// The overlay superblock's `s_dev`, kernel encoding (major << 20 | minor).
    pub dev: u32,
    /// `bpf_ktime_get_ns` at function entry.
    pub start_ns: u64,
    /// cgroup v2 id of the task (meaningless on cgroup v1).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<EventHeader>() == 48);

/// A process started a program (`sched_process_exec`): the header alone, `comm` the new
/// program's name, `dev` 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
}

/// One `ovl_copy_up_one` call: one object copied up.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CopyUpEvent {
    pub header: EventHeader,
    pub duration_ns: u64,
    /// Time spent in the data copy (`ovl_copy_up_file`/`ovl_copy_up_data`).
    pub data_ns: u64,
    /// Bytes the data copy was asked for, or `NO_DATA_COPY`.
    pub data_bytes: i64,
    /// `i_size` of the object at entry.
    pub size: i64,
    /// Time spent syncing inside the copy-up (overlayfs fsyncs each file it copied, unless
    /// mounted `volatile`; part of `data_ns`), when the sync probe is attached.
    pub sync_ns: u64,
    /// Open flags passed to the copy-up (O_TRUNC...).
    pub flags: u32,
    /// `i_mode` of the object at entry (file type and permissions).
    pub mode: u32,
    /// Return value of `ovl_copy_up_one` (0 or -errno).
    pub ret: i32,
    /// `COPY_UP_*`: did this call copy the object, or wait for another call that did?
    pub outcome: u32,
    /// The system call the thread was in (what asked for the copy-up), or `NO_SYSCALL`.
    pub syscall: u32,
    /// Bytes of `path` used.
    pub path_len: u32,
    /// Number of components in `path`.
    pub path_depth: u32,
    pub path_flags: u32,
    /// Components leaf first, each NUL-terminated.
    pub path: [u8; PATH_BUF_LEN],
}
const _: () = assert!(size_of::<CopyUpEvent>() == 48 + 40 + 32 + PATH_BUF_LEN);

/// `CopyUpEvent::syscall` when it is not known (a kernel thread, or the kernel's layout of the
/// saved user registers was not found).
pub const NO_SYSCALL: u32 = u32::MAX;
/// System call numbers at or above this are not believed (a misread of the saved registers).
pub const SYSCALL_NR_MAX: u64 = 1024;

/// `CopyUpEvent::outcome`: this call copied the object up (it reached `ovl_copy_up_end`).
pub const COPY_UP_COPIED: u32 = 0;
/// Another thread was copying the same object: this call waited for it and copied nothing.
pub const COPY_UP_WAITED: u32 = 1;
/// Unknown: `ovl_copy_up_end` is not probed on this kernel (counted as a copy-up).
pub const COPY_UP_UNKNOWN: u32 = 2;

/// One `ovl_lookup` call (a dcache miss in an overlay directory).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LookupEvent {
    pub header: EventHeader,
    pub duration_ns: u64,
    /// One of the `LOOKUP_*` outcomes.
    pub outcome: u32,
    /// `ovl_lookup_layer` calls made inside this lookup.
    pub layers: u32,
    /// Bytes of `name` used, NUL excluded.
    pub name_len: u32,
    pub _pad: u32,
    pub name: [u8; LOOKUP_NAME_LEN],
}
const _: () = assert!(size_of::<LookupEvent>() == 48 + 24 + LOOKUP_NAME_LEN);

/// One `ovl_fill_super` call: an overlay being mounted (a container's root, typically).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MountEvent {
    pub header: EventHeader,
    pub duration_ns: u64,
    /// 0 or -errno.
    pub ret: i32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<MountEvent>() == 48 + 16);

/// An `ovl_rename` that returned -EXDEV: overlayfs refused to rename a directory that is (also)
/// in a lower layer (without `redirect_dir`), and the caller (`mv`) copies the whole tree itself.
/// Only these renames are sent. `start_ns` is the call's entry where the probe saw it (kprobes),
/// its return otherwise.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RenameEvent {
    pub header: EventHeader,
    pub ret: i32,
    pub path_len: u32,
    pub path_depth: u32,
    pub path_flags: u32,
    /// The renamed object's path inside the overlay, components leaf first.
    pub path: [u8; PATH_BUF_LEN],
}
const _: () = assert!(size_of::<RenameEvent>() == 48 + 16 + PATH_BUF_LEN);

/// `RenameEvent::ret`: what a refused rename returns.
pub const EXDEV: i32 = -18;

/// Load-time configuration: filters and the struct member offsets read from the running
/// kernel's BTF (aya has no CO-RE for Rust eBPF programs). Handed over as the `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Only trace this process (0: all).
    pub filter_tgid: u32,
    pub dentry_d_name_len: u32,
    pub dentry_d_name_name: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    pub inode_i_size: u32,
    pub inode_i_mode: u32,
    pub super_block_s_dev: u32,
    /// Offset of `ovl_inode.__upperdentry` from its embedded `vfs_inode`; 0 when unknown.
    pub ovl_upper_from_vfs_inode: u32,
    /// Non-zero: only superblocks in the `DEV_FILTER` map are traced (`--container`).
    pub filter_devs: u32,
    /// Non-zero: rare conditions (stale entries, failed path reads) are logged through aya-log
    /// (`OVERLAY_TRACE_VERBOSE=1`). Never on the hot path otherwise.
    pub verbose: u32,
    /// Non-zero when `ovl_copy_up_end` is probed: a copy-up that never reached it only waited
    /// for another thread's copy of the same object.
    pub copy_up_end_probed: u32,
    /// 1-based position of the data copy's `len` argument (from BTF); 0: not known, the 4th.
    pub data_len_arg: u32,
    /// Non-zero when the offsets below are known: a new overlay whose upper dir is in
    /// `UPPER_FILTER` (a selected container's root, mounted again) is traced (`--container`).
    pub follow_uppers: u32,
    pub super_block_s_fs_info: u32,
    /// `ovl_fs.layers` (layers[0] is the upper layer), `ovl_layer.mnt`, `vfsmount.mnt_root`.
    pub ovl_fs_layers: u32,
    pub ovl_layer_mnt: u32,
    pub vfsmount_mnt_root: u32,
    pub inode_i_ino: u32,
    /// `task_struct.stack` and `task_struct.flags`; with `syscall_nr_from_stack`, the offset of
    /// the saved user `orig_ax` (the system call number) from the bottom of the task's kernel
    /// stack (x86_64: `THREAD_SIZE - padding - sizeof(pt_regs) + offsetof(pt_regs, orig_ax)`).
    /// 0: not known, copy-ups carry `NO_SYSCALL`.
    pub task_struct_stack: u32,
    pub task_struct_flags: u32,
    pub syscall_nr_from_stack: u32,
    /// 1-based position of `ovl_rename`'s `old` dentry (from BTF): 2 on 5.x, 3 since the
    /// mount's user namespace (later idmap) came first; 0: not known, renames are not watched.
    pub rename_old_arg: u32,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT` marks a 32-bit system call, whose
    /// number means another call); 0: not known, no system call is read.
    pub task_thread_status: u32,
}
const _: () = assert!(size_of::<Config>() == 100);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): plain old data of fixed-size integers, every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::CopyUpInflight {}
    unsafe impl aya::Pod for super::LookupInflight {}
    unsafe impl aya::Pod for super::MountFrame {}
    unsafe impl aya::Pod for super::UpperDir {}
}

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

pub const COMM_LEN: usize = 16;

/// Path components are written leaf first, each NUL-terminated. A component starts at an offset
/// below `PATH_BUDGET` (a power of two, so the kernel side can mask the offset for the verifier)
/// and is at most `NAME_READ_MAX` bytes long (NAME_MAX + NUL), hence the buffer size.
pub const PATH_BUDGET: usize = 1024;
pub const NAME_READ_MAX: usize = 256;
pub const PATH_BUF_LEN: usize = PATH_BUDGET + NAME_READ_MAX;
/// Deeper paths are cut at this many components and flagged `PATH_TRUNCATED`.
pub const MAX_PATH_DEPTH: u32 = 48;
pub const PATH_TRUNCATED: u32 = 1;

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
/// An entry probe could not record its start (in-flight map full): that call is not reported.
pub const STAT_INFLIGHT_FULL: u32 = 2;
/// A kernel read failed (the field pointer was bad): the event is still sent, with what was read.
pub const STAT_READ_ERRORS: u32 = 3;
pub const STAT_DROPPED_MOUNT: u32 = 4;
pub const NUM_STATS: u32 = 5;

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
    /// Open flags passed to the copy-up (O_TRUNC...).
    pub flags: u32,
    /// `i_mode` of the object at entry (file type and permissions).
    pub mode: u32,
    /// Return value of `ovl_copy_up_one` (0 or -errno).
    pub ret: i32,
    /// Bytes of `path` used.
    pub path_len: u32,
    /// Number of components in `path`.
    pub path_depth: u32,
    pub path_flags: u32,
    /// Components leaf first, each NUL-terminated.
    pub path: [u8; PATH_BUF_LEN],
}
const _: () = assert!(size_of::<CopyUpEvent>() == 48 + 32 + 24 + PATH_BUF_LEN);

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
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 48);

#[cfg(feature = "user")]
// SAFETY: plain old data, every bit pattern is valid.
unsafe impl aya::Pod for Config {}

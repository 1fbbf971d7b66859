//! overlay-trace kernel programs: kprobes/kretprobes on the overlayfs copy-up and lookup paths.
//!
//! Entry probes record a start time per thread; return probes measure, read what they need from
//! the kernel structures (offsets come from userspace, read from BTF) and emit one event into the
//! `EVENTS` ring buffer. Whatever does not fit is counted in `STATS`, never dropped silently.
#![no_std]
#![no_main]

mod copy_up;
mod exec;
mod kernel;
mod lookup;
mod mount;
mod rename;
mod sync;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use overlay_trace_common::{Config, NUM_STATS};

/// Filled in by userspace at load time (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    filter_tgid: 0,
    dentry_d_name_len: 0,
    dentry_d_name_name: 0,
    dentry_d_parent: 0,
    dentry_d_inode: 0,
    dentry_d_sb: 0,
    inode_i_size: 0,
    inode_i_mode: 0,
    super_block_s_dev: 0,
    ovl_upper_from_vfs_inode: 0,
    filter_devs: 0,
    verbose: 0,
    copy_up_end_probed: 0,
    data_len_arg: 0,
    follow_uppers: 0,
    super_block_s_fs_info: 0,
    ovl_fs_layers: 0,
    ovl_layer_mnt: 0,
    vfsmount_mnt_root: 0,
    inode_i_ino: 0,
    task_struct_stack: 0,
    task_struct_flags: 0,
    syscall_nr_from_stack: 0,
    rename_old_arg: 0,
    task_thread_status: 0,
};

/// Superblocks to trace when `CONFIG.filter_devs` is set (`--container`); key: kernel `s_dev`.
/// A new overlay takes its number out (the superblock that had it is gone) and puts it back only
/// when its upper dir is in `UPPER_FILTER`.
#[map]
static DEV_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// The upper dirs of the containers `--container` selected: their roots mounted again (a
/// restart) are traced from their first call.
#[map]
static UPPER_FILTER: HashMap<overlay_trace_common::UpperDir, u8> =
    HashMap::with_max_entries(1024, 0);

/// All events, copy-ups and lookups alike; userspace tells them apart by `EventHeader::kind`.
/// Userspace may resize it before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Per-CPU counters (`STAT_*`): drops and failures, read by userspace on every tick.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_STATS, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Never attached by `run`: `overlay-trace check` loads and attaches it to learn whether this
/// kernel allows fentry programs (some refuse them even with BTF).
#[aya_ebpf::macros::fentry(function = "vfs_fsync")]
pub fn fentry_check(_ctx: aya_ebpf::programs::FEntryContext) -> u32 {
    0
}

//! Struct member offsets read from the running kernel's BTF (vmlinux, plus the overlay module's
//! split BTF when overlay is a module). aya has no CO-RE for Rust eBPF programs, so these become
//! the `CONFIG` global the programs read their fields with. Nothing is hard-coded per kernel.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use overlay_trace_common::Config;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const OVERLAY_MODULE_BTF: &str = "/sys/kernel/btf/overlay";

/// The kernel's BTF: vmlinux, and overlay's types (split BTF when it is a module).
pub struct KernelBtf {
    vmlinux: Btf,
    overlay: Option<Btf>,
}

/// A BTF file's bytes, with btf-rs's error type.
fn read(path: &Path) -> btf_rs::Result<Vec<u8>> {
    Ok(std::fs::read(path)?)
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::load_from(Path::new(VMLINUX_BTF), Path::new(OVERLAY_MODULE_BTF))
    }

    pub fn load_from(vmlinux: &Path, overlay_module: &Path) -> Result<Self> {
        // Read whole, then parsed from memory: btf-rs's file reader seeks for every type (126k
        // seeks and 8k reads of vmlinux's BTF), which costs seconds under emulation.
        let vmlinux_btf = read(vmlinux)
            .and_then(|b| Btf::from_bytes(&b))
            .map_err(|e| {
                anyhow!(
                    "cannot read kernel BTF {}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)",
                    vmlinux.display()
                )
            })?;
        let overlay = if overlay_module.exists() {
            Some(
                read(overlay_module)
                    .and_then(|b| Btf::from_split_bytes(&b, &vmlinux_btf))
                    .map_err(|e| {
                        anyhow!(
                            "cannot read overlay module BTF {}: {e}",
                            overlay_module.display()
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            vmlinux: vmlinux_btf,
            overlay,
        })
    }

    /// BTF holding overlay's own types: the module's split BTF, or vmlinux when built in.
    fn overlay_types(&self) -> &Btf {
        self.overlay.as_ref().unwrap_or(&self.vmlinux)
    }

    /// The configuration the eBPF programs need, with every offset filled in.
    pub fn config(&self, filter_tgid: u32) -> Result<Config> {
        let v = &self.vmlinux;
        let d_name = member_offset(v, "dentry", "d_name")?;
        let upper = match (
            member_offset(self.overlay_types(), "ovl_inode", "__upperdentry"),
            member_offset(self.overlay_types(), "ovl_inode", "vfs_inode"),
        ) {
            (Ok(upper), Ok(vfs)) if upper > vfs => upper - vfs,
            // Without it lookups are still counted and timed; only the layer is unknown.
            _ => 0,
        };
        // A selected container's upper dir, seen from its overlay's superblock. Without these
        // (no BTF for overlay's own types), `--container` does not follow a restart.
        let o = self.overlay_types();
        let uppers = (
            member_offset(v, "super_block", "s_fs_info"),
            member_offset(o, "ovl_fs", "layers"),
            member_offset(o, "ovl_layer", "mnt"),
            member_offset(v, "vfsmount", "mnt_root"),
            member_offset(v, "inode", "i_ino"),
        );
        let (follow_uppers, [fs_info, layers, layer_mnt, mnt_root, i_ino]) = match uppers {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (1, [a, b, c, d, e]),
            _ => (0, [0; 5]),
        };
        Ok(Config {
            filter_tgid,
            dentry_d_name_len: d_name + member_offset(v, "qstr", "len")?,
            dentry_d_name_name: d_name + member_offset(v, "qstr", "name")?,
            dentry_d_parent: member_offset(v, "dentry", "d_parent")?,
            dentry_d_inode: member_offset(v, "dentry", "d_inode")?,
            dentry_d_sb: member_offset(v, "dentry", "d_sb")?,
            inode_i_size: member_offset(v, "inode", "i_size")?,
            inode_i_mode: member_offset(v, "inode", "i_mode")?,
            super_block_s_dev: member_offset(v, "super_block", "s_dev")?,
            ovl_upper_from_vfs_inode: upper,
            filter_devs: 0,
            verbose: 0,
            copy_up_end_probed: 0,
            data_len_arg: 0,
            follow_uppers,
            super_block_s_fs_info: fs_info,
            ovl_fs_layers: layers,
            ovl_layer_mnt: layer_mnt,
            vfsmount_mnt_root: mnt_root,
            inode_i_ino: i_ino,
            task_struct_stack: member_offset(v, "task_struct", "stack").unwrap_or(0),
            task_struct_flags: member_offset(v, "task_struct", "flags").unwrap_or(0),
            syscall_nr_from_stack: 0,
            task_thread_status: match (
                member_offset(v, "task_struct", "thread_info"),
                member_offset(v, "thread_info", "status"),
            ) {
                (Ok(a), Ok(b)) if a + b > 0 => a + b,
                _ => 0,
            },
            rename_old_arg: self
                .param_position("ovl_rename", "old")
                .unwrap_or_else(rename_old_arg_by_version),
        })
    }

    /// Where the system call number of a thread lies from the bottom of its kernel stack
    /// (`Config::syscall_nr_from_stack`), for x86_64: the entry code saves the user registers
    /// (`struct pt_regs`, whose `orig_ax` holds the number) at the top of the stack, below
    /// `TOP_OF_KERNEL_STACK_PADDING` (16 bytes with CONFIG_X86_FRED, 6.9+). The stack is 16 KiB,
    /// twice that with KASAN. Those two are told by kallsyms (`symbols`); 0 elsewhere or when
    /// BTF lacks `pt_regs`: copy-ups then say no trigger.
    pub fn syscall_nr_from_stack(&self, symbols: &std::collections::HashSet<String>) -> u32 {
        if !cfg!(target_arch = "x86_64") {
            return 0;
        }
        let v = &self.vmlinux;
        let size = v
            .resolve_ids_by_name("pt_regs")
            .unwrap_or_default()
            .into_iter()
            .find_map(|id| match v.resolve_type_by_id(id) {
                Ok(Type::Struct(s)) => Some(s.size() as u32),
                _ => None,
            });
        let (Some(size), Ok(orig_ax)) = (size, member_offset(v, "pt_regs", "orig_ax")) else {
            return 0;
        };
        let thread_size: u32 = if symbols.contains("kasan_report") {
            32 << 10
        } else {
            16 << 10
        };
        let padding = if symbols.contains("asm_fred_entrypoint_user") {
            16
        } else {
            0
        };
        thread_size - padding - size + orig_ax
    }

    /// Whether overlay's types come from a module's split BTF (overlay is a module) rather than
    /// vmlinux (built in).
    pub fn overlay_is_module(&self) -> bool {
        self.overlay.is_some()
    }

    /// The BTF type id of kernel function `func` and its number of parameters, looked up among
    /// overlay's types (a module's ids continue after vmlinux's, as the kernel numbers them).
    pub fn overlay_func(&self, func: &str) -> Option<(u32, usize)> {
        let btf = self.overlay_types();
        btf.resolve_ids_by_name(func)
            .ok()?
            .into_iter()
            .find_map(|id| {
                let Ok(Type::Func(f)) = btf.resolve_type_by_id(id) else {
                    return None;
                };
                let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&f) else {
                    return None;
                };
                Some((id, proto.parameters.len()))
            })
    }

    /// 1-based position of parameter `param` of kernel function `func` (looked up among
    /// overlay's types, then vmlinux's), or None when the function or the parameter is unknown.
    /// Argument positions move between versions (`len` of `ovl_copy_up_data` is the 3rd argument
    /// before 5.10 and the 4th after); they are read, not assumed.
    pub fn param_position(&self, func: &str, param: &str) -> Option<u32> {
        [self.overlay_types(), &self.vmlinux]
            .into_iter()
            .find_map(|btf| {
                let ids = btf.resolve_ids_by_name(func).ok()?;
                ids.into_iter().find_map(|id| {
                    let Ok(Type::Func(f)) = btf.resolve_type_by_id(id) else {
                        return None;
                    };
                    let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&f) else {
                        return None;
                    };
                    proto
                        .parameters
                        .iter()
                        .position(|p| btf.resolve_name(p).is_ok_and(|n| n == param))
                        .map(|i| i as u32 + 1)
                })
            })
    }

    /// True when overlay's `ovl_inode` type is known (module loaded or built in).
    pub fn has_overlay_types(&self) -> bool {
        self.overlay_types()
            .resolve_ids_by_name("ovl_inode")
            .is_ok_and(|ids| !ids.is_empty())
    }
}

/// Where `ovl_rename`'s `old` dentry is when BTF does not say (overlay a module without BTF,
/// before 5.11): the 2nd argument until 5.12 put the mount's user namespace first.
fn rename_old_arg_by_version() -> u32 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (v.next(), v.next()) {
        (Some(major), Some(minor)) if major > 0 => {
            if (major, minor) < (5, 12) {
                2
            } else {
                3
            }
        }
        _ => 0,
    }
}

/// Byte offset of `member` in `struct name`, looking through anonymous structs and unions
/// (6.18 puts `dentry.d_name` in one, `qstr.len` has always been in one).
pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let ids = btf.resolve_ids_by_name(name).unwrap_or_default();
    for id in ids {
        if let Ok(Type::Struct(s)) = btf.resolve_type_by_id(id) {
            if let Some(bits) = find_member(btf, &s, member)? {
                if bits % 8 != 0 {
                    bail!("{name}.{member} is a bitfield");
                }
                return Ok(bits / 8);
            }
        }
    }
    Err(anyhow!(
        "kernel BTF has no member {member} in struct {name}"
    ))
}

/// Bit offset of `member` inside `s`, searching anonymous members recursively.
fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
    for m in &s.members {
        let m_name = btf.resolve_name(m).unwrap_or_default();
        if m_name == member {
            return Ok(Some(m.bit_offset()));
        }
        if m_name.is_empty() {
            let inner = resolve_through_modifiers(btf, btf.resolve_chained_type(m)?)?;
            if let Type::Struct(inner) | Type::Union(inner) = inner {
                if let Some(bits) = find_member(btf, &inner, member)? {
                    return Ok(Some(m.bit_offset() + bits));
                }
            }
        }
    }
    Ok(None)
}

fn resolve_through_modifiers(btf: &Btf, mut t: Type) -> Result<Type> {
    loop {
        t = match &t {
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                btf.resolve_chained_type(t.as_btf_type().context("modifier without type")?)?
            }
            _ => return Ok(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets from this machine's real kernel BTF. The expected values are layout facts that hold
    /// on every 64-bit kernel since 3.x: qstr is { hash_len (u64), name }, and d_parent follows
    /// d_seq/d_hash in dentry; the rest must merely be found and lie inside the struct.
    #[test]
    fn offsets_from_this_hosts_vmlinux() {
        if !Path::new(VMLINUX_BTF).exists() {
            panic!("this test needs {VMLINUX_BTF}: the host kernel lacks BTF");
        }
        let btf = KernelBtf::load().expect("load BTF");
        let cfg = btf.config(42).expect("offsets");
        assert_eq!(cfg.filter_tgid, 42);
        assert_eq!(
            cfg.dentry_d_name_name - cfg.dentry_d_name_len,
            4,
            "qstr: len (u32) then name after hash"
        );
        assert!(
            cfg.dentry_d_parent < cfg.dentry_d_name_len,
            "d_parent precedes d_name"
        );
        assert!(
            cfg.dentry_d_inode > cfg.dentry_d_name_name,
            "d_inode follows d_name"
        );
        assert!(
            cfg.inode_i_mode < 8,
            "i_mode is the first member of struct inode"
        );
        assert!(cfg.inode_i_size > cfg.inode_i_mode);
        assert!(cfg.super_block_s_dev > 0 && cfg.super_block_s_dev < 64);
        assert!(cfg.task_struct_stack > 0 && cfg.task_struct_flags > 0);
        if cfg!(target_arch = "x86_64") {
            // pt_regs is 21 registers of 8 bytes, orig_ax the 16th.
            assert_eq!(
                btf.syscall_nr_from_stack(&Default::default()),
                16384 - 168 + 120
            );
        }
    }

    #[test]
    fn parameter_positions_come_from_btf() {
        let btf = KernelBtf::load().expect("load BTF");
        // vfs_fsync(struct file *file, int datasync) on every kernel with BTF.
        assert_eq!(btf.param_position("vfs_fsync", "datasync"), Some(2));
        assert_eq!(btf.param_position("vfs_fsync", "no_such_param"), None);
        assert_eq!(btf.param_position("no_such_function_here", "x"), None);
    }

    #[test]
    fn unknown_member_is_a_clear_error() {
        let btf = KernelBtf::load().expect("load BTF");
        let err = member_offset(&btf.vmlinux, "dentry", "no_such_member").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel BTF has no member no_such_member in struct dentry"
        );
    }

    #[test]
    fn missing_btf_file_is_a_clear_error() {
        let err = KernelBtf::load_from(
            Path::new("/nonexistent/vmlinux"),
            Path::new("/nonexistent/overlay"),
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}

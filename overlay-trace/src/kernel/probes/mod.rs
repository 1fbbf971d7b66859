//! The probe table and its loading: which program goes on which kernel function, which ones
//! `run` cannot do without, and what is skipped (with a warning) when a kernel lacks a symbol.

pub mod attach;
pub mod btf_object;
mod one;
pub mod plan;
pub mod tracefs;

pub use attach::*;
pub use one::refused_now;
pub use plan::*;

use crate::stream::record::ProbeReport;
use std::collections::HashSet;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{KProbe, ProgramError},
};
use overlay_trace_common::Config;

use crate::kernel::btf_offsets::KernelBtf;

/// The eBPF object built by build.rs.
#[cfg(not(ebpf_skipped))]
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay-trace"));
#[cfg(ebpf_skipped)]
pub static EBPF_OBJECT: &[u8] = &[];

/// One row per traced function: its entry program and, where the call's end matters, its return
/// program. Returns are always attached before entries (a call whose entry is recorded must find
/// its return probe in place) and detached after them.
#[derive(Debug)]
pub struct ProbeSpec {
    /// The kprobe program in the eBPF object.
    pub entry: &'static str,
    /// The kretprobe program, if the call's end is measured.
    pub ret: Option<&'static str>,
    /// The same two as fentry and fexit programs. The fexit program reads the return value
    /// after the arguments, so it depends on their number: one per count this row supports.
    pub fentry: &'static str,
    pub fexit: &'static [(usize, &'static str)],
    /// A parameter the fentry program reads at a fixed position: (name, 1-based position).
    /// Where BTF puts it elsewhere, the row stays on kprobes.
    pub fentry_param: Option<(&'static str, u32)>,
    /// Kernel functions, preferred first: the first one present is used.
    pub targets: &'static [&'static str],
    pub required: bool,
    pub purpose: &'static str,
    /// Why the row stays on kprobes whatever `--probes auto` finds (a vmlinux function: fentry
    /// programs are loaded against overlay's BTF object).
    pub kprobe_only: Option<&'static str>,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        entry: "copy_up_one_entry",
        ret: Some("copy_up_one_return"),
        fentry: "copy_up_one_fentry",
        fexit: &[(3, "copy_up_one_fexit")],
        fentry_param: None,
        targets: &["ovl_copy_up_one"],
        required: true,
        purpose: "copy-ups",
        kprobe_only: None,
    },
    // 6.1+: ovl_copy_up_file(ofs, dentry, new_file, len); 5.x: ovl_copy_up_data(ofs, old, new, len).
    // 6.1 has both names, ovl_copy_up_data being a wrapper there, hence the order.
    ProbeSpec {
        entry: "copy_up_data_entry",
        ret: Some("copy_up_data_return"),
        fentry: "copy_up_data_fentry",
        fexit: &[(4, "copy_up_data_fexit"), (5, "copy_up_data_fexit")],
        fentry_param: Some(("len", 4)),
        targets: &["ovl_copy_up_file", "ovl_copy_up_data"],
        required: false,
        purpose: "copy-up data time and bytes",
        kprobe_only: None,
    },
    // Reached only by the call that copied; a call that raced with another copy-up of the same
    // object waits and returns without it. Its program only sets a flag, so a kernel where the
    // symbol exists must have it attached (`Config::copy_up_end_probed` is set from kallsyms).
    ProbeSpec {
        entry: "copy_up_end_entry",
        ret: None,
        fentry: "copy_up_end_fentry",
        fexit: &[],
        fentry_param: None,
        targets: &["ovl_copy_up_end"],
        required: false,
        purpose: "telling copy-ups from waits for another thread's copy-up",
        kprobe_only: None,
    },
    ProbeSpec {
        entry: "lookup_entry",
        ret: Some("lookup_return"),
        fentry: "lookup_fentry",
        fexit: &[(3, "lookup_fexit")],
        fentry_param: None,
        targets: &["ovl_lookup"],
        required: true,
        purpose: "lookups",
        kprobe_only: None,
    },
    // 6.1: ovl_fill_super(sb, data, silent); 6.5+: ovl_fill_super(sb, fc). sb is first in both.
    ProbeSpec {
        entry: "mount_entry",
        ret: Some("mount_return"),
        fentry: "mount_fentry",
        fexit: &[(2, "mount_fexit_2"), (3, "mount_fexit_3")],
        fentry_param: None,
        targets: &["ovl_fill_super"],
        required: false,
        purpose: "mount time",
        kprobe_only: None,
    },
    ProbeSpec {
        entry: "lookup_layer_entry",
        ret: None,
        fentry: "lookup_layer_fentry",
        fexit: &[],
        fentry_param: None,
        targets: &["ovl_lookup_layer"],
        required: false,
        purpose: "layers consulted per lookup",
        kprobe_only: None,
    },
    // 5.x: ovl_rename(olddir, old, newdir, new, flags); 6.x: the mount's user namespace (later
    // idmap) first. Only renames refused with -EXDEV are sent.
    ProbeSpec {
        entry: "rename_entry",
        ret: Some("rename_return"),
        fentry: "rename_fentry",
        fexit: &[(5, "rename_fexit_5"), (6, "rename_fexit_6")],
        fentry_param: None,
        targets: &["ovl_rename"],
        required: false,
        purpose: "renames overlayfs refused (directories the caller copies itself)",
        kprobe_only: None,
    },
    // The fsync overlayfs does at the end of each file's data copy (unless `volatile`): timed
    // only while the thread is in a copy-up.
    ProbeSpec {
        entry: "sync_entry",
        ret: Some("sync_return"),
        fentry: "sync_fentry",
        fexit: &[(2, "sync_fexit")],
        fentry_param: None,
        targets: &["vfs_fsync"],
        required: false,
        purpose: "sync time inside copy-ups",
        kprobe_only: Some(
            "a kernel function outside overlay (fentry is loaded against overlay's BTF)",
        ),
    },
];

impl ProbeSpec {
    /// Every program of this row: the return first, as it is attached.
    pub fn programs(&self) -> impl Iterator<Item = &'static str> {
        self.ret.into_iter().chain(std::iter::once(self.entry))
    }
}

pub fn target_for(p: &ProbeSpec, symbols: &HashSet<String>) -> Option<&'static str> {
    p.targets.iter().copied().find(|t| symbols.contains(*t))
}

/// Turns aya's load error into one line; the verifier log goes to stderr only when asked for.
fn load_error(program: &str, e: ProgramError) -> anyhow::Error {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        if std::env::var_os("OVERLAY_TRACE_VERBOSE").is_some() {
            eprintln!("verifier log for {program}:\n{verifier_log}");
        }
        return anyhow!(
            "the kernel refused eBPF program {program}: {io_error} (OVERLAY_TRACE_VERBOSE=1 prints the verifier log)"
        );
    }
    anyhow!("eBPF program {program}: {e}")
}

/// Creates the maps and globals; no program is loaded yet. `verbose` turns on the kernel side's
/// aya-log diagnostics.
pub fn open(config: Config) -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        return Err(anyhow!(
            "this overlay-trace was built with AYA_BUILD_SKIP: it carries no eBPF programs"
        ));
    }
    // aya-log's level: 0 compiles every log statement down to one load and a branch not taken.
    let log_level: u8 = if config.verbose != 0 { 0xff } else { 0 };
    EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .load(EBPF_OBJECT)
        .map_err(|e| anyhow!("cannot load the eBPF object: {e}"))
}

fn kprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut KProbe> {
    ebpf.program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e: ProgramError| anyhow!("program {name}: {e}"))
}

/// Runs the kernel's verifier over every kprobe program without attaching anything.
pub fn load_all(ebpf: &mut Ebpf) -> Result<usize> {
    let mut n = 0;
    for program in PROBES.iter().flat_map(ProbeSpec::programs) {
        kprobe(ebpf, program)?
            .load()
            .map_err(|e| load_error(program, e))?;
        n += 1;
    }
    exec_tracepoint(ebpf)?;
    Ok(n + 1)
}

/// The process-start program (`run --trace`), loaded.
pub fn exec_tracepoint(ebpf: &mut Ebpf) -> Result<&mut aya::programs::TracePoint> {
    let p: &mut aya::programs::TracePoint = ebpf
        .program_mut(EXEC_PROGRAM)
        .ok_or_else(|| anyhow!("eBPF object has no {EXEC_PROGRAM} program"))?
        .try_into()
        .map_err(|e| anyhow!("{EXEC_PROGRAM}: {e}"))?;
    if p.fd().is_err() {
        p.load().map_err(|e| load_error(EXEC_PROGRAM, e))?;
    }
    Ok(p)
}

/// The tracepoint program of process starts, and where it attaches.
pub const EXEC_PROGRAM: &str = "process_exec";

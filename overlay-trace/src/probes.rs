//! The probe table and its loading: which program goes on which kernel function, which ones
//! `run` cannot do without, and what is skipped (with a warning) when a kernel lacks a symbol.

use std::collections::HashSet;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, KProbe, ProgramError},
};
use overlay_trace_common::Config;

/// The eBPF object built by build.rs.
#[cfg(not(ebpf_skipped))]
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay-trace"));
#[cfg(ebpf_skipped)]
pub static EBPF_OBJECT: &[u8] = &[];

pub struct ProbeSpec {
    /// Program name in the eBPF object (kprobe or kretprobe by its section).
    pub program: &'static str,
    /// Kernel functions, preferred first: the first one present is used.
    pub targets: &'static [&'static str],
    pub required: bool,
    pub purpose: &'static str,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec { program: "copy_up_one_entry", targets: &["ovl_copy_up_one"], required: true, purpose: "copy-ups" },
    ProbeSpec { program: "copy_up_one_return", targets: &["ovl_copy_up_one"], required: true, purpose: "copy-ups" },
    // 6.1+: ovl_copy_up_file(ofs, dentry, new_file, len); 5.x: ovl_copy_up_data(ofs, old, new, len).
    // 6.1 has both names, ovl_copy_up_data being a wrapper there, hence the order.
    ProbeSpec {
        program: "copy_up_data_entry",
        targets: &["ovl_copy_up_file", "ovl_copy_up_data"],
        required: false,
        purpose: "copy-up data time and bytes",
    },
    ProbeSpec {
        program: "copy_up_data_return",
        targets: &["ovl_copy_up_file", "ovl_copy_up_data"],
        required: false,
        purpose: "copy-up data time and bytes",
    },
    ProbeSpec { program: "lookup_entry", targets: &["ovl_lookup"], required: true, purpose: "lookups" },
    ProbeSpec { program: "lookup_return", targets: &["ovl_lookup"], required: true, purpose: "lookups" },
    // 6.1: ovl_fill_super(sb, data, silent); 6.5+: ovl_fill_super(sb, fc). sb is first in both.
    ProbeSpec { program: "mount_entry", targets: &["ovl_fill_super"], required: false, purpose: "mount time" },
    ProbeSpec { program: "mount_return", targets: &["ovl_fill_super"], required: false, purpose: "mount time" },
    ProbeSpec {
        program: "lookup_layer_entry",
        targets: &["ovl_lookup_layer"],
        required: false,
        purpose: "layers consulted per lookup",
    },
];

pub fn target_for(p: &ProbeSpec, symbols: &HashSet<String>) -> Option<&'static str> {
    p.targets.iter().copied().find(|t| symbols.contains(*t))
}

/// Turns aya's load error into one line; the verifier log goes to stderr only when asked for.
fn load_error(program: &str, e: ProgramError) -> anyhow::Error {
    if let ProgramError::LoadError { io_error, verifier_log } = &e {
        if std::env::var_os("OVERLAY_TRACE_VERBOSE").is_some() {
            eprintln!("verifier log for {program}:\n{verifier_log}");
        }
        return anyhow!(
            "the kernel refused eBPF program {program}: {io_error} (OVERLAY_TRACE_VERBOSE=1 prints the verifier log)"
        );
    }
    anyhow!("eBPF program {program}: {e}")
}

/// Creates the maps and globals; no program is loaded yet.
pub fn open(config: Config) -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        return Err(anyhow!("this overlay-trace was built with AYA_BUILD_SKIP: it carries no eBPF programs"));
    }
    EbpfLoader::new()
        .override_global("CONFIG", &config, true)
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
    for p in PROBES {
        kprobe(ebpf, p.program)?.load().map_err(|e| load_error(p.program, e))?;
    }
    Ok(PROBES.len())
}

/// What `attach` did.
#[derive(Debug, Default)]
pub struct Attached {
    pub probes: Vec<(&'static str, &'static str)>,
    pub warnings: Vec<String>,
}

/// Loads and attaches every probe whose function exists. A missing optional one is a warning; a
/// missing or failing required one is an error.
pub fn attach(ebpf: &mut Ebpf, symbols: &HashSet<String>) -> Result<Attached> {
    let mut out = Attached::default();
    for p in PROBES {
        let Some(target) = target_for(p, symbols) else {
            if p.required {
                return Err(anyhow!("kernel has no {}: cannot trace {}", p.targets.join(" or "), p.purpose));
            }
            out.warnings.push(format!(
                "{} not in this kernel: {} not measured",
                p.targets.join(" or "),
                p.purpose
            ));
            continue;
        };
        let prog = kprobe(ebpf, p.program)?;
        prog.load().map_err(|e| load_error(p.program, e))?;
        match prog.attach(target, 0) {
            Ok(_) => out.probes.push((p.program, target)),
            Err(e) if !p.required => {
                out.warnings.push(format!("cannot attach to {target} ({e}): {} not measured", p.purpose))
            }
            Err(e) => return Err(anyhow!("cannot attach a kprobe to {target}: {e}")),
        }
    }
    Ok(out)
}

/// Whether this kernel loads and attaches an fentry program (to a vmlinux function).
pub fn fentry_works(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {e}"))?;
    let prog: &mut FEntry = ebpf
        .program_mut("fentry_check")
        .context("eBPF object has no fentry_check")?
        .try_into()
        .map_err(|e: ProgramError| anyhow!("{e}"))?;
    prog.load("vfs_fsync", &btf).map_err(|e| load_error("fentry_check", e))?;
    prog.attach().map_err(|e| anyhow!("attach refused: {e}"))?;
    Ok(())
}

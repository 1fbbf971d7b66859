//! The probe table and its loading: which program goes on which kernel function, which ones
//! `run` cannot do without, and what is skipped (with a warning) when a kernel lacks a symbol.

pub mod tracefs;

use std::{collections::HashSet, os::fd::AsFd as _};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, KProbe, ProgramError},
};
use overlay_trace_common::Config;

/// The eBPF object built by build.rs.
#[cfg(not(ebpf_skipped))]
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay-trace"));
#[cfg(ebpf_skipped)]
pub static EBPF_OBJECT: &[u8] = &[];

/// One row per traced function: its entry program and, where the call's end matters, its return
/// program. Returns are always attached before entries (a call whose entry is recorded must find
/// its return probe in place) and detached after them.
pub struct ProbeSpec {
    /// The kprobe program in the eBPF object.
    pub entry: &'static str,
    /// The kretprobe program, if the call's end is measured.
    pub ret: Option<&'static str>,
    /// Kernel functions, preferred first: the first one present is used.
    pub targets: &'static [&'static str],
    pub required: bool,
    pub purpose: &'static str,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        entry: "copy_up_one_entry",
        ret: Some("copy_up_one_return"),
        targets: &["ovl_copy_up_one"],
        required: true,
        purpose: "copy-ups",
    },
    // 6.1+: ovl_copy_up_file(ofs, dentry, new_file, len); 5.x: ovl_copy_up_data(ofs, old, new, len).
    // 6.1 has both names, ovl_copy_up_data being a wrapper there, hence the order.
    ProbeSpec {
        entry: "copy_up_data_entry",
        ret: Some("copy_up_data_return"),
        targets: &["ovl_copy_up_file", "ovl_copy_up_data"],
        required: false,
        purpose: "copy-up data time and bytes",
    },
    // Reached only by the call that copied; a call that raced with another copy-up of the same
    // object waits and returns without it. Its program only sets a flag, so a kernel where the
    // symbol exists must have it attached (`Config::copy_up_end_probed` is set from kallsyms).
    ProbeSpec {
        entry: "copy_up_end_entry",
        ret: None,
        targets: &["ovl_copy_up_end"],
        required: false,
        purpose: "telling copy-ups from waits for another thread's copy-up",
    },
    ProbeSpec {
        entry: "lookup_entry",
        ret: Some("lookup_return"),
        targets: &["ovl_lookup"],
        required: true,
        purpose: "lookups",
    },
    // 6.1: ovl_fill_super(sb, data, silent); 6.5+: ovl_fill_super(sb, fc). sb is first in both.
    ProbeSpec {
        entry: "mount_entry",
        ret: Some("mount_return"),
        targets: &["ovl_fill_super"],
        required: false,
        purpose: "mount time",
    },
    ProbeSpec {
        entry: "lookup_layer_entry",
        ret: None,
        targets: &["ovl_lookup_layer"],
        required: false,
        purpose: "layers consulted per lookup",
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
    Ok(n)
}

/// How kretprobes get their `maxactive`: through tracefs with ours, or through aya's perf PMU
/// with the kernel's default (when tracefs is not mounted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReturnCeiling {
    Tracefs(u32),
    KernelDefault(u32),
}

impl ReturnCeiling {
    pub fn maxactive(&self) -> u32 {
        match self {
            Self::Tracefs(n) | Self::KernelDefault(n) => *n,
        }
    }
}

/// The kernel's default kretprobe `maxactive`: max(10, 2 x possible CPUs).
pub fn default_maxactive() -> u32 {
    let cpus = aya::util::nr_cpus().unwrap_or(1) as u32;
    (2 * cpus).max(10)
}

/// What `maxactive` kretprobes will get on this machine when `wanted` is asked for.
pub fn return_ceiling(wanted: u32) -> ReturnCeiling {
    match tracefs::root() {
        Some(_) => ReturnCeiling::Tracefs(wanted.clamp(1, tracefs::MAXACTIVE_MAX)),
        None => ReturnCeiling::KernelDefault(default_maxactive()),
    }
}

/// One program attached to one function.
pub struct AttachedProbe {
    pub program: &'static str,
    pub function: &'static str,
    pub is_return: bool,
    /// None: attached through aya's perf PMU (no kernel miss count).
    event: Option<tracefs::ProbeEvent>,
}

/// What `attach` did. Dropping it detaches the probes made through tracefs, entries first.
#[derive(Default)]
pub struct Attached {
    pub probes: Vec<AttachedProbe>,
    pub warnings: Vec<String>,
    pub ceiling: Option<ReturnCeiling>,
}

/// One probe as the report shows it, with the kernel's own counts where it keeps them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeReport {
    pub program: String,
    pub function: String,
    /// "kprobe" or "kretprobe".
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxactive: Option<u32>,
    /// The kernel's counts (`kprobe_profile`), when the probe was made through tracefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

impl Attached {
    /// The probes with the kernel's hit and miss counts as of now.
    pub fn report(&self) -> Vec<ProbeReport> {
        self.probes
            .iter()
            .map(|p| {
                let profile = p.event.as_ref().and_then(|e| e.profile());
                ProbeReport {
                    program: p.program.to_string(),
                    function: p.function.to_string(),
                    kind: if p.is_return { "kretprobe" } else { "kprobe" }.to_string(),
                    maxactive: p
                        .is_return
                        .then(|| self.ceiling.as_ref().map(ReturnCeiling::maxactive))
                        .flatten(),
                    hits: profile.map(|(h, _)| h),
                    missed: profile.map(|(_, m)| m),
                }
            })
            .collect()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Entries first: no call is recorded after its return probe is gone.
        let (returns, entries): (Vec<_>, Vec<_>) = self.probes.drain(..).partition(|p| p.is_return);
        drop(entries);
        drop(returns);
    }
}

/// Loads and attaches every probe whose function exists: all return programs first, then all
/// entry programs. A missing optional function is a warning; a missing or failing required one is
/// an error. Kretprobes get `maxactive` (through tracefs) where tracefs is mounted.
pub fn attach(ebpf: &mut Ebpf, symbols: &HashSet<String>, maxactive: u32) -> Result<Attached> {
    let ceiling = return_ceiling(maxactive);
    let tracefs = tracefs::root();
    if let Some(t) = &tracefs {
        tracefs::remove_leftovers(t);
    }
    let mut out = Attached {
        probes: Vec::new(),
        warnings: Vec::new(),
        ceiling: Some(ceiling.clone()),
    };
    if let ReturnCeiling::KernelDefault(n) = ceiling {
        out.warnings.push(format!(
            "tracefs is not mounted: return probes get the kernel's default maxactive ({n}); beyond {n} \
             concurrent calls of one function, returns are missed (counted)"
        ));
    }
    let mut targets = Vec::new();
    for p in PROBES {
        match target_for(p, symbols) {
            Some(t) => targets.push((p, t)),
            None if p.required => {
                return Err(anyhow!(
                    "kernel has no {}: cannot trace {}",
                    p.targets.join(" or "),
                    p.purpose
                ));
            }
            None => out.warnings.push(format!(
                "{} not in this kernel: {} not measured",
                p.targets.join(" or "),
                p.purpose
            )),
        }
    }
    let returns = targets
        .iter()
        .filter_map(|(p, t)| p.ret.map(|r| (*p, r, *t, true)));
    let entries = targets.iter().map(|(p, t)| (*p, p.entry, *t, false));
    let mut failed_rows: HashSet<&'static str> = HashSet::new();
    for (spec, program, target, is_return) in returns.chain(entries).collect::<Vec<_>>() {
        if failed_rows.contains(spec.entry) {
            continue;
        }
        let prog = kprobe(ebpf, program)?;
        prog.load().map_err(|e| load_error(program, e))?;
        let attached = match &tracefs {
            Some(t) => {
                let kind = if is_return {
                    tracefs::Kind::Return {
                        maxactive: ceiling.maxactive(),
                    }
                } else {
                    tracefs::Kind::Entry
                };
                let fd = prog.fd().map_err(|e| anyhow!("{program}: {e}"))?;
                tracefs::ProbeEvent::attach(t, fd.as_fd(), program, target, kind).map(Some)
            }
            None => prog
                .attach(target, 0)
                .map(|_| None)
                .map_err(|e| anyhow!("{e}")),
        };
        match attached {
            Ok(event) => out.probes.push(AttachedProbe {
                program,
                function: target,
                is_return,
                event,
            }),
            // Config::copy_up_end_probed was set from kallsyms: a missing attach would turn
            // every copy-up into a wait.
            Err(e) if !spec.required && spec.entry != "copy_up_end_entry" => {
                // Without its return, an entry would only leave garbage: skip the whole row.
                failed_rows.insert(spec.entry);
                out.warnings.push(format!(
                    "cannot attach to {target} ({e:#}): {} not measured",
                    spec.purpose
                ));
            }
            Err(e) => return Err(anyhow!("cannot attach a probe to {target}: {e:#}")),
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
    prog.load("vfs_fsync", &btf)
        .map_err(|e| load_error("fentry_check", e))?;
    prog.attach().map_err(|e| anyhow!("attach refused: {e}"))?;
    Ok(())
}

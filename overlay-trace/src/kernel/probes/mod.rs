//! The probe table and its loading: which program goes on which kernel function, which ones
//! `run` cannot do without, and what is skipped (with a warning) when a kernel lacks a symbol.

pub mod btf_object;
pub mod tracefs;

use crate::stream::record::ProbeReport;
use std::{
    collections::HashSet,
    os::fd::{AsFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, KProbe, ProgramError},
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
    /// "kprobe", "kretprobe", "fentry" or "fexit".
    pub kind: &'static str,
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
    /// fentry links, detached before anything else.
    pub fentries: Vec<(&'static str, aya::programs::fentry::FEntryLinkId)>,
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
                    kind: p.kind.to_string(),
                    maxactive: (p.kind == "kretprobe")
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

/// `--probes`: which kind of probe to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbesArg {
    /// fentry/fexit wherever this kernel allows it for that function, kprobes elsewhere.
    #[default]
    Auto,
    /// fentry/fexit everywhere; an error names the function where it cannot be.
    Fentry,
    /// kprobes and kretprobes everywhere.
    Kprobe,
}

/// How one function is traced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Kprobe,
    /// `btf_id`: the function's type id; `fexit`: the program matching its argument count.
    Fentry {
        btf_id: u32,
        fexit: Option<&'static str>,
    },
}

/// The plan for one row of `PROBES`: its function on this kernel, and how it is traced.
#[derive(Clone, Debug)]
pub struct Choice {
    pub spec: &'static ProbeSpec,
    pub target: &'static str,
    pub backend: Backend,
    /// Why fentry is not used (kprobe rows), or what fentry rests on (fentry rows).
    pub why: String,
}

/// What the plan needs from the kernel's BTF, taken out of it so that the BTF (tens of MiB once
/// parsed) can be dropped before aya parses it again to load the programs.
#[derive(Clone, Debug, Default)]
pub struct BtfFacts {
    overlay_is_module: bool,
    /// overlay is a loaded module, but the kernel has no BTF for it: no fentry on it.
    overlay_module_without_btf: bool,
    funcs: std::collections::HashMap<&'static str, (u32, usize)>,
    params: std::collections::HashMap<(&'static str, &'static str), u32>,
}

impl BtfFacts {
    pub fn of(btf: &KernelBtf) -> Self {
        let overlay_module = std::fs::read_to_string("/proc/modules")
            .is_ok_and(|m| m.lines().any(|l| l.starts_with("overlay ")));
        let mut facts = Self {
            overlay_is_module: btf.overlay_is_module(),
            overlay_module_without_btf: overlay_module && !btf.overlay_is_module(),
            ..Default::default()
        };
        for spec in PROBES {
            for t in spec.targets {
                if let Some(f) = btf.overlay_func(t) {
                    facts.funcs.insert(t, f);
                }
                if let Some((param, _)) = spec.fentry_param {
                    if let Some(pos) = btf.param_position(t, param) {
                        facts.params.insert((t, param), pos);
                    }
                }
            }
        }
        facts
    }

    pub fn overlay_is_module(&self) -> bool {
        self.overlay_is_module
    }

    pub fn overlay_func(&self, func: &str) -> Option<(u32, usize)> {
        self.funcs.get(func).copied()
    }

    pub fn param_position(&self, func: &str, param: &str) -> Option<u32> {
        self.params
            .iter()
            .find(|((f, p), _)| *f == func && *p == param)
            .map(|(_, v)| *v)
    }
}

/// What this kernel offers for fentry, found once: whether it runs fentry programs at all, and
/// the overlay module's BTF object when overlay is a module.
pub struct FentrySupport {
    pub refused: Option<String>,
    pub module_btf: Option<OwnedFd>,
}

impl FentrySupport {
    pub fn probe(ebpf: &mut Ebpf, btf: &BtfFacts) -> Self {
        let refused = fentry_works(ebpf).err().map(|e| format!("{e:#}"));
        let module_btf = if btf.overlay_is_module() {
            btf_object::find("overlay")
        } else {
            None
        };
        Self {
            refused,
            module_btf,
        }
    }
}

/// Picks each function's backend. Functions missing from this kernel: an error for a required
/// one, a warning otherwise.
pub fn plan(
    btf: &BtfFacts,
    symbols: &HashSet<String>,
    support: &FentrySupport,
    wanted: ProbesArg,
) -> Result<(Vec<Choice>, Vec<String>)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for spec in PROBES {
        let Some(target) = target_for(spec, symbols) else {
            if spec.required {
                return Err(anyhow!(
                    "kernel has no {}: cannot trace {}",
                    spec.targets.join(" or "),
                    spec.purpose
                ));
            }
            warnings.push(format!(
                "{} not in this kernel: {} not measured",
                spec.targets.join(" or "),
                spec.purpose
            ));
            continue;
        };
        let fentry = fentry_for(spec, target, btf, support);
        let (backend, why) = match (wanted, fentry) {
            (ProbesArg::Kprobe, _) => (
                Backend::Kprobe,
                "kprobes asked for (--probes kprobe)".to_string(),
            ),
            (_, Ok((backend, why))) => (backend, why),
            (ProbesArg::Fentry, Err(why)) => {
                return Err(anyhow!(
                    "--probes fentry: cannot use fentry on {target}: {why}"
                ));
            }
            (ProbesArg::Auto, Err(why)) => (Backend::Kprobe, why),
        };
        out.push(Choice {
            spec,
            target,
            backend,
            why,
        });
    }
    Ok((out, warnings))
}

/// fentry/fexit for `target`, or why not.
fn fentry_for(
    spec: &ProbeSpec,
    target: &str,
    btf: &BtfFacts,
    support: &FentrySupport,
) -> std::result::Result<(Backend, String), String> {
    if let Some(why) = &support.refused {
        return Err(format!("this kernel refuses fentry programs ({why})"));
    }
    if btf.overlay_is_module() && support.module_btf.is_none() {
        return Err("overlay is a module whose BTF object the kernel does not list".into());
    }
    if btf.overlay_module_without_btf {
        return Err(
            "overlay is a module and this kernel has no BTF for it (/sys/kernel/btf/overlay)"
                .into(),
        );
    }
    let (btf_id, nargs) = btf
        .overlay_func(target)
        .ok_or_else(|| format!("{target} is not in the kernel's BTF (inlined or renamed)"))?;
    if let Some((param, pos)) = spec.fentry_param {
        match btf.param_position(target, param) {
            Some(p) if p == pos => {}
            Some(p) => {
                return Err(format!(
                    "its {param} is argument {p}, the fentry program reads argument {pos}"
                ));
            }
            None => return Err(format!("its BTF has no parameter {param}")),
        }
    }
    let fexit = match spec.ret {
        None => None,
        Some(_) => Some(
            spec.fexit
                .iter()
                .find(|(n, _)| *n == nargs)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("no fexit program for its {nargs} arguments"))?,
        ),
    };
    let how = if btf.overlay_is_module() {
        "in the overlay module's BTF"
    } else {
        "in vmlinux's BTF"
    };
    Ok((
        Backend::Fentry { btf_id, fexit },
        format!("{target} is BTF type {btf_id} {how}"),
    ))
}

fn tracing<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e: ProgramError| anyhow!("program {name}: {e}"))
}

/// Loads an fentry or fexit program for `target` (type `btf_id`): against the overlay module's
/// BTF object when there is one (patched aya, see vendor/README.md), else against vmlinux's.
fn load_tracing(
    ebpf: &mut Ebpf,
    program: &str,
    target: &str,
    btf_id: u32,
    module_btf: Option<&OwnedFd>,
    exit: bool,
) -> Result<()> {
    let module = module_btf
        .map(|fd| fd.try_clone())
        .transpose()
        .context("duplicating the module BTF fd")?;
    let r = match (exit, module) {
        (false, Some(fd)) => tracing::<FEntry>(ebpf, program)?.load_in_btf_object(fd, btf_id),
        (true, Some(fd)) => tracing::<FExit>(ebpf, program)?.load_in_btf_object(fd, btf_id),
        (false, None) => {
            let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {e}"))?;
            tracing::<FEntry>(ebpf, program)?.load(target, &btf)
        }
        (true, None) => {
            let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {e}"))?;
            tracing::<FExit>(ebpf, program)?.load(target, &btf)
        }
    };
    r.map_err(|e| load_error(program, e))
}

/// Loads and attaches the plan: every return program first (kretprobes, fexits), then every
/// entry program. A failing optional function is a warning (its whole row is skipped); a failing
/// required one is an error. Kretprobes get `maxactive` (through tracefs) where tracefs is
/// mounted.
pub fn attach(
    ebpf: &mut Ebpf,
    plan: &[Choice],
    support: &FentrySupport,
    maxactive: u32,
) -> Result<Attached> {
    let ceiling = return_ceiling(maxactive);
    let tracefs = tracefs::root();
    if let Some(t) = &tracefs {
        tracefs::remove_leftovers(t);
    }
    let mut out = Attached {
        probes: Vec::new(),
        warnings: Vec::new(),
        ceiling: Some(ceiling.clone()),
        fentries: Vec::new(),
    };
    if let ReturnCeiling::KernelDefault(n) = ceiling {
        if plan
            .iter()
            .any(|c| c.backend == Backend::Kprobe && c.spec.ret.is_some())
        {
            out.warnings.push(format!(
                "tracefs is not mounted: return probes get the kernel's default maxactive ({n}); beyond {n} \
                 concurrent calls of one function, returns are missed (counted)"
            ));
        }
    }
    // (row, program, is_return)
    let returns = plan.iter().filter_map(|c| match &c.backend {
        Backend::Kprobe => c.spec.ret.map(|r| (c, r, true)),
        Backend::Fentry { fexit, .. } => fexit.map(|f| (c, f, true)),
    });
    let entries = plan.iter().map(|c| match &c.backend {
        Backend::Kprobe => (c, c.spec.entry, false),
        Backend::Fentry { .. } => (c, c.spec.fentry, false),
    });
    let mut failed_rows: HashSet<&'static str> = HashSet::new();
    for (choice, program, is_return) in returns.chain(entries).collect::<Vec<_>>() {
        let (spec, target) = (choice.spec, choice.target);
        if failed_rows.contains(spec.entry) {
            continue;
        }
        let attached: Result<Option<tracefs::ProbeEvent>> = match &choice.backend {
            Backend::Fentry { btf_id, .. } => load_tracing(
                ebpf,
                program,
                target,
                *btf_id,
                support.module_btf.as_ref(),
                is_return,
            )
            .and_then(|()| {
                if is_return {
                    tracing::<FExit>(ebpf, program)?
                        .attach()
                        .map(|_| None)
                        .map_err(|e| anyhow!("{e}"))
                } else {
                    let id = tracing::<FEntry>(ebpf, program)?
                        .attach()
                        .map_err(|e| anyhow!("{e}"))?;
                    out.fentries.push((program, id));
                    Ok(None)
                }
            }),
            Backend::Kprobe => {
                let prog = kprobe(ebpf, program)?;
                prog.load().map_err(|e| load_error(program, e))?;
                match &tracefs {
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
                }
            }
        };
        let kind = match (&choice.backend, is_return) {
            (Backend::Kprobe, false) => "kprobe",
            (Backend::Kprobe, true) => "kretprobe",
            (Backend::Fentry { .. }, false) => "fentry",
            (Backend::Fentry { .. }, true) => "fexit",
        };
        match attached {
            Ok(event) => out.probes.push(AttachedProbe {
                program,
                function: target,
                kind,
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

/// Loads (without attaching) the fentry and fexit programs of a plan: the verifier's answer for
/// `check`. Returns how many were loaded.
pub fn load_plan(ebpf: &mut Ebpf, plan: &[Choice], support: &FentrySupport) -> Result<usize> {
    let mut n = 0;
    for c in plan {
        if let Backend::Fentry { btf_id, fexit } = &c.backend {
            load_tracing(
                ebpf,
                c.spec.fentry,
                c.target,
                *btf_id,
                support.module_btf.as_ref(),
                false,
            )?;
            n += 1;
            if let Some(f) = fexit {
                load_tracing(
                    ebpf,
                    f,
                    c.target,
                    *btf_id,
                    support.module_btf.as_ref(),
                    true,
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Detaches the fentry programs (the entries) first, so that no call is recorded once its fexit
/// may be gone; the rest goes with the programs.
pub fn detach_fentries(ebpf: &mut Ebpf, attached: &mut Attached) {
    for (program, id) in attached.fentries.drain(..) {
        if let Ok(p) = tracing::<FEntry>(ebpf, program) {
            let _ = p.detach(id);
        }
    }
}

/// Whether this kernel loads and attaches an fentry program (to a vmlinux function).
pub fn fentry_works(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {e}"))?;
    let prog: &mut FEntry = ebpf
        .program_mut("fentry_check")
        .context("eBPF object has no fentry_check")?
        .try_into()
        .map_err(|e: ProgramError| anyhow!("{e}"))?;
    prog.load("vfs_fsync", &btf).map_err(|e| match e {
        ProgramError::LoadError { io_error, .. } => anyhow!("loading refused: {io_error}"),
        e => anyhow!("{e}"),
    })?;
    let link = prog.attach().map_err(|e| anyhow!("attach refused: {e}"))?;
    // A probe of the question only: nothing stays on vfs_fsync.
    let _ = prog.detach(link);
    Ok(())
}

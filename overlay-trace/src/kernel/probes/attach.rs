//! Loading and attaching the plan's programs, the probes attached (with the kernel's own counts),
//! and detaching them in order.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, ProgramError},
};

use super::{one::How, *};

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
    pub(super) event: Option<tracefs::ProbeEvent>,
}

/// What `attach` did. Dropping it detaches the probes made through tracefs, entries first.
#[derive(Default)]
pub struct Attached {
    pub probes: Vec<AttachedProbe>,
    pub warnings: Vec<String>,
    pub ceiling: Option<ReturnCeiling>,
    /// fentry links, detached before anything else.
    pub fentries: Vec<(&'static str, aya::programs::fentry::FEntryLinkId)>,
    /// Entry kprobes made through aya's perf PMU (no tracefs), detached with the fentries: the
    /// return probes go only when the programs are unloaded, after them.
    pub kprobe_entries: Vec<(&'static str, aya::programs::kprobe::KProbeLinkId)>,
    /// fexit links, kept to undo one whose fentry the kernel then refused.
    pub fexits: Vec<(&'static str, aya::programs::fexit::FExitLinkId)>,
    /// Functions traced with kprobes because the kernel refused their fentry/fexit.
    pub fallbacks: Vec<Fallback>,
}

/// A function traced with kprobes under `--probes auto` although its plan was fentry/fexit.
#[derive(Clone, Debug)]
pub struct Fallback {
    pub function: String,
    /// The kernel's refusal.
    pub reason: String,
}

impl Attached {
    /// The probes with the kernel's hit and miss counts as of now: a tracefs kprobe's from
    /// `kprobe_profile`, an fentry or fexit program's misses from `bpf_prog_info` (runs skipped
    /// by its recursion guard).
    pub fn report(&self, ebpf: &Ebpf) -> Vec<ProbeReport> {
        self.reports(ebpf, |_| true)
    }

    /// The fentry and fexit programs only, with the runs the kernel skipped: one `bpf` call
    /// each, no tracefs file read (cheap enough for every second, on the drain's thread).
    pub fn tracing_report(&self, ebpf: &Ebpf) -> Vec<ProbeReport> {
        self.reports(ebpf, |p| p.kind.starts_with('f'))
    }

    fn reports(&self, ebpf: &Ebpf, which: impl Fn(&AttachedProbe) -> bool) -> Vec<ProbeReport> {
        self.probes
            .iter()
            .filter(|p| which(p))
            .map(|p| {
                let profile = p.event.as_ref().and_then(|e| e.profile());
                let skipped = (p.kind == "fentry" || p.kind == "fexit")
                    .then(|| ebpf.program(p.program)?.fd().ok())
                    .flatten()
                    .and_then(|fd| crate::kernel::prog_info::recursion_misses(fd.as_fd()).ok());
                ProbeReport {
                    program: p.program.to_string(),
                    function: p.function.to_string(),
                    kind: p.kind.to_string(),
                    maxactive: (p.kind == "kretprobe")
                        .then(|| self.ceiling.as_ref().map(ReturnCeiling::maxactive))
                        .flatten(),
                    hits: profile.map(|(h, _)| h),
                    missed: profile.map(|(_, m)| m).or(skipped),
                    fallback: self
                        .fallbacks
                        .iter()
                        .find(|f| f.function == p.function)
                        .map(|f| f.reason.clone()),
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

pub(super) fn tracing<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
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
pub(super) fn load_tracing(
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
            let btf = vmlinux_btf()?;
            tracing::<FEntry>(ebpf, program)?.load(target, btf)
        }
        (true, None) => {
            let btf = vmlinux_btf()?;
            tracing::<FExit>(ebpf, program)?.load(target, btf)
        }
    };
    r.map_err(|e| load_error(program, e))
}

/// Loads and attaches the plan: every return program first (kretprobes, fexits), then every
/// entry program. A failing optional function is a warning (its whole row is skipped); a failing
/// required one is an error. Kretprobes get `maxactive` (through tracefs) where tracefs is
/// mounted. With `fallback` (`--probes auto`), a function whose fentry or fexit program the
/// kernel refuses at load or attach (a trampoline already holding its most links, a livepatched
/// function) is traced with a kprobe and a kretprobe instead, and `fallbacks` says why.
pub fn attach(
    ebpf: &mut Ebpf,
    plan: &[Choice],
    support: &FentrySupport,
    maxactive: u32,
    fallback: bool,
) -> Result<Attached> {
    let ceiling = return_ceiling(maxactive);
    let tracefs = tracefs::root();
    if let Some(t) = &tracefs {
        tracefs::remove_leftovers(t);
    }
    let mut out = Attached::default();
    out.ceiling = Some(ceiling.clone());
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
    let how = How {
        tracefs: tracefs.as_deref(),
        ceiling: &ceiling,
        support,
    };
    let mut backends: Vec<Backend> = plan.iter().map(|c| c.backend.clone()).collect();
    let mut failed_rows: HashSet<&'static str> = HashSet::new();
    for is_return in [true, false] {
        for (row, choice) in plan.iter().enumerate() {
            let spec = choice.spec;
            if failed_rows.contains(spec.entry) {
                continue;
            }
            let Some(program) = program_of(spec, &backends[row], is_return) else {
                continue;
            };
            let mut attached = how.one(ebpf, &mut out, choice, &backends[row], program, is_return);
            if let (Err(e), Backend::Fentry { fexit, .. }, true) =
                (&attached, &backends[row], fallback)
            {
                out.fallbacks.push(Fallback {
                    function: choice.target.to_string(),
                    reason: format!("{e:#}"),
                });
                // The row's fexit, attached already in the return pass, goes: the kprobes
                // pair with each other, never with it.
                if let (false, Some(f)) = (is_return, fexit) {
                    how.undo(ebpf, &mut out, f);
                }
                backends[row] = Backend::Kprobe;
                // Its return first, then (in the entry pass) its entry.
                let mut ret_refused = None;
                if let (false, Some(ret)) = (is_return, spec.ret) {
                    match how.one(ebpf, &mut out, choice, &Backend::Kprobe, ret, true) {
                        Ok(p) => out.probes.push(p),
                        Err(e) => ret_refused = Some(e),
                    }
                }
                let Some(program) = program_of(spec, &Backend::Kprobe, is_return) else {
                    continue;
                };
                attached = match ret_refused {
                    Some(e) => Err(e),
                    None => how.one(ebpf, &mut out, choice, &Backend::Kprobe, program, is_return),
                };
                if attached.is_err() {
                    // No kprobe either: the row's failure below says it all.
                    out.fallbacks.pop();
                }
            }
            match attached {
                Ok(p) => out.probes.push(p),
                // Config::copy_up_end_probed was set from kallsyms: a missing attach would turn
                // every copy-up into a wait.
                Err(e) if !spec.required && spec.entry != "copy_up_end_entry" => {
                    // Without its return, an entry would only leave garbage: skip the whole row.
                    // Without its entry, a return would only count orphans: it goes too.
                    failed_rows.insert(spec.entry);
                    if let (false, Some(ret)) = (is_return, program_of(spec, &backends[row], true))
                    {
                        how.undo(ebpf, &mut out, ret);
                    }
                    out.warnings.push(format!(
                        "cannot attach to {} ({e:#}): {} not measured",
                        choice.target, spec.purpose
                    ));
                }
                Err(e) => return Err(anyhow!("cannot attach a probe to {}: {e:#}", choice.target)),
            }
        }
    }
    for f in &out.fallbacks {
        out.warnings.push(format!(
            "fentry/fexit refused on {} ({}): traced with kprobes instead",
            f.function, f.reason
        ));
    }
    Ok(out)
}

/// The program of a row for one pass (its return or its entry) under `backend`; None when the
/// row has no return program.
fn program_of(spec: &ProbeSpec, backend: &Backend, is_return: bool) -> Option<&'static str> {
    match (backend, is_return) {
        (Backend::Kprobe, true) => spec.ret,
        (Backend::Fentry { fexit, .. }, true) => *fexit,
        (Backend::Kprobe, false) => Some(spec.entry),
        (Backend::Fentry { .. }, false) => Some(spec.fentry),
    }
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
/// Detaches every entry probe (fentry links, perf-PMU kprobes, tracefs kprobes): no call begins
/// after this, while every return probe is still in place.
pub fn detach_entries(ebpf: &mut Ebpf, attached: &mut Attached) {
    for (program, id) in attached.fentries.drain(..) {
        if let Ok(p) = tracing::<FEntry>(ebpf, program) {
            let _ = p.detach(id);
        }
    }
    for (program, id) in attached.kprobe_entries.drain(..) {
        if let Ok(p) = kprobe(ebpf, program) {
            let _ = p.detach(id);
        }
    }
    // And those made through tracefs (removing their events).
    attached.probes.retain(|p| p.is_return);
}

/// vmlinux's BTF as aya parses it, once per process: every fentry and fexit program loaded
/// against vmlinux needs it, and parsing it takes a second under emulation.
fn vmlinux_btf() -> Result<&'static Btf> {
    static BTF: std::sync::OnceLock<Result<Btf, String>> = std::sync::OnceLock::new();
    BTF.get_or_init(|| Btf::from_sys_fs().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow!("no kernel BTF: {e}"))
}

/// Whether this kernel loads and attaches an fentry program (to a vmlinux function).
pub fn fentry_works(ebpf: &mut Ebpf) -> Result<()> {
    let btf = vmlinux_btf()?;
    let prog: &mut FEntry = ebpf
        .program_mut("fentry_check")
        .context("eBPF object has no fentry_check")?
        .try_into()
        .map_err(|e: ProgramError| anyhow!("{e}"))?;
    prog.load("vfs_fsync", btf).map_err(|e| match e {
        ProgramError::LoadError { io_error, .. } => anyhow!("loading refused: {io_error}"),
        e => anyhow!("{e}"),
    })?;
    let link = prog.attach().map_err(|e| anyhow!("attach refused: {e}"))?;
    // A probe of the question only: nothing stays on vfs_fsync.
    let _ = prog.detach(link);
    Ok(())
}

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

use super::*;

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
    /// Entry kprobes made through aya's perf PMU (no tracefs), detached with the fentries: the
    /// return probes go only when the programs are unloaded, after them.
    pub kprobe_entries: Vec<(&'static str, aya::programs::kprobe::KProbeLinkId)>,
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
                    None => match prog.attach(target, 0) {
                        Ok(id) => {
                            if !is_return {
                                out.kprobe_entries.push((program, id));
                            }
                            Ok(None)
                        }
                        Err(e) => Err(anyhow!("{e}")),
                    },
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

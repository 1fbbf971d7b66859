//! Attaching one program of the plan (an fentry, fexit, kprobe or kretprobe), and undoing an
//! fexit whose function then falls back to kprobes.

use std::{os::fd::AsFd as _, path::Path};

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    programs::{FEntry, FExit},
};

use super::{
    AttachedProbe, Backend, Choice, FentrySupport, ReturnCeiling,
    attach::{Attached, load_tracing, tracing},
    kprobe, load_error, tracefs,
};

/// What attaching needs besides the program: tracefs (if mounted), the kretprobes' ceiling and
/// where fentry programs are loaded against.
pub(super) struct How<'a> {
    pub tracefs: Option<&'a Path>,
    pub ceiling: &'a ReturnCeiling,
    pub support: &'a FentrySupport,
}

impl How<'_> {
    /// Loads `program` (if not loaded yet) and attaches it to the row's function with `backend`.
    pub fn one(
        &self,
        ebpf: &mut Ebpf,
        out: &mut Attached,
        choice: &Choice,
        backend: &Backend,
        program: &'static str,
        is_return: bool,
    ) -> Result<AttachedProbe> {
        let target = choice.target;
        let event = match backend {
            Backend::Fentry { btf_id, .. } => {
                load_tracing(
                    ebpf,
                    program,
                    target,
                    *btf_id,
                    self.support.module_btf.as_ref(),
                    is_return,
                )?;
                if is_return {
                    let id = tracing::<FExit>(ebpf, program)?
                        .attach()
                        .map_err(anyhow::Error::new)?;
                    out.fexits.push((program, id));
                } else {
                    let id = tracing::<FEntry>(ebpf, program)?
                        .attach()
                        .map_err(anyhow::Error::new)?;
                    out.fentries.push((program, id));
                }
                None
            }
            Backend::Kprobe => {
                let prog = kprobe(ebpf, program)?;
                if prog.fd().is_err() {
                    prog.load().map_err(|e| load_error(program, e))?;
                }
                match self.tracefs {
                    Some(t) => {
                        let kind = if is_return {
                            tracefs::Kind::Return {
                                maxactive: self.ceiling.maxactive(),
                            }
                        } else {
                            tracefs::Kind::Entry
                        };
                        let fd = prog.fd().map_err(|e| anyhow!("{program}: {e}"))?;
                        Some(tracefs::ProbeEvent::attach(
                            t,
                            fd.as_fd(),
                            program,
                            target,
                            kind,
                        )?)
                    }
                    None => {
                        let id = prog.attach(target, 0).map_err(|e| anyhow!("{e}"))?;
                        if !is_return {
                            out.kprobe_entries.push((program, id));
                        }
                        None
                    }
                }
            }
        };
        let kind = match (backend, is_return) {
            (Backend::Kprobe, false) => "kprobe",
            (Backend::Kprobe, true) => "kretprobe",
            (Backend::Fentry { .. }, false) => "fentry",
            (Backend::Fentry { .. }, true) => "fexit",
        };
        Ok(AttachedProbe {
            program,
            function: target,
            kind,
            is_return,
            event,
        })
    }

    /// Detaches the return program `program` attached before: an fexit whose function falls
    /// back to kprobes, or the return of a row whose entry could not be attached (a tracefs
    /// kretprobe goes with its event; one made through the perf PMU when the programs are
    /// unloaded).
    pub fn undo(&self, ebpf: &mut Ebpf, out: &mut Attached, program: &'static str) {
        if let Some(i) = out.fexits.iter().position(|(p, _)| *p == program) {
            let (_, id) = out.fexits.remove(i);
            if let Ok(p) = tracing::<FExit>(ebpf, program) {
                let _ = p.detach(id);
            }
        }
        out.probes.retain(|p| p.program != program);
    }
}

/// For `check`: attaches each loaded fentry/fexit pair of the plan for a moment (its fexit,
/// then its fentry, both detached at once) and returns the functions whose attach the kernel
/// refuses now, with its answer: those `run --probes auto` traces with kprobes instead.
pub fn refused_now(ebpf: &mut Ebpf, plan: &[Choice]) -> Vec<(&'static str, String)> {
    let mut refused = Vec::new();
    for c in plan {
        let Backend::Fentry { fexit, .. } = &c.backend else {
            continue;
        };
        let exit = fexit.map(|f| {
            tracing::<FExit>(ebpf, f)
                .and_then(|p| p.attach().map_err(anyhow::Error::new))
                .map(|id| (f, id))
        });
        let r = match exit {
            Some(Err(e)) => Err(e),
            exit => {
                let r = tracing::<FEntry>(ebpf, c.spec.fentry).and_then(|p| {
                    let id = p.attach().map_err(anyhow::Error::new)?;
                    let _ = p.detach(id);
                    Ok(())
                });
                if let Some(Ok((f, id))) = exit {
                    if let Ok(p) = tracing::<FExit>(ebpf, f) {
                        let _ = p.detach(id);
                    }
                }
                r
            }
        };
        if let Err(e) = r {
            refused.push((c.target, format!("{e:#}")));
        }
    }
    refused
}

//! Which backend each probe gets (`--probes auto|fentry|kprobe`): fentry/fexit where the kernel
//! runs them for that function and its BTF matches the program, kprobes elsewhere, and why.

use std::{collections::HashSet, os::fd::OwnedFd};

use anyhow::{Result, anyhow};
use aya::Ebpf;

use super::*;

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
        if let Some(why) = spec.kprobe_only {
            if wanted == ProbesArg::Fentry {
                warnings.push(format!(
                    "--probes fentry: {target} takes kprobes only: {} not measured",
                    spec.purpose
                ));
                continue;
            }
            out.push(Choice {
                spec,
                target,
                backend: Backend::Kprobe,
                why: why.to_string(),
            });
            continue;
        }
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

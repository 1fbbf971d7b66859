//! `overlay-trace check`: what this machine offers and whether `run` will work.

use anyhow::Result;

use crate::kernel::btf_offsets::KernelBtf;

use crate::kernel::{preflight, probes};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints the report; returns whether `run` will work.
pub fn check() -> Result<bool> {
    let mut caps = preflight::inspect();
    preflight::ensure_overlay_loaded(&mut caps);
    println!("kernel:          {}", caps.kernel);
    println!(
        "privileges:      {}",
        if caps.privileged {
            "yes (root or CAP_BPF+CAP_PERFMON)"
        } else {
            "no: run with sudo"
        }
    );
    println!("BTF:             {}", yes_no(caps.btf));
    println!(
        "kprobes:         {}",
        match caps.kprobes {
            preflight::KprobeSupport::Pmu => "yes (perf kprobe PMU)",
            preflight::KprobeSupport::Tracefs => "yes (tracefs kprobe_events)",
            preflight::KprobeSupport::None => "no: this kernel has no kprobes (CONFIG_KPROBES off)",
        }
    );
    println!(
        "overlay:         {}",
        if caps.overlay_loaded {
            "yes"
        } else {
            "no (not in /proc/filesystems)"
        }
    );
    // Parsed once, for the overlay line and for loading the programs below.
    let btf = if caps.btf {
        KernelBtf::load().ok()
    } else {
        None
    };
    let overlay_btf = btf.as_ref().is_some_and(|b| b.has_overlay_types());
    println!(
        "overlay BTF:     {}",
        if overlay_btf {
            "yes"
        } else {
            "no: lookups will not tell upper from lower"
        }
    );
    for p in probes::PROBES {
        let found = probes::target_for(p, &caps.symbols);
        println!(
            "  {:<22} {}",
            p.ret
                .map(|r| format!("{} + {r}", p.entry))
                .unwrap_or_else(|| p.entry.to_string()),
            match found {
                Some(t) => format!("-> {t}"),
                None if p.required => format!("MISSING {} (required)", p.targets.join("/")),
                None => format!(
                    "missing {} (optional: {} not measured)",
                    p.targets.join("/"),
                    p.purpose
                ),
            }
        );
    }
    match probes::return_ceiling(4096) {
        probes::ReturnCeiling::Tracefs(n) => {
            println!(
                "return probes:   maxactive {n} (tracefs kprobe_events; `run --maxactive N` to change)"
            )
        }
        probes::ReturnCeiling::KernelDefault(n) => println!(
            "return probes:   maxactive {n}, the kernel's default (tracefs is not mounted): more concurrent calls \
             of one function than that lose their returns (counted as missed)"
        ),
    }
    // Loading needs privileges and BTF; the verifier and fentry results are then real answers.
    if caps.privileged && caps.btf {
        let loaded = match &btf {
            Some(b) => b.config(0).and_then(probes::open),
            None => KernelBtf::load()
                .and_then(|b| b.config(0))
                .and_then(probes::open),
        };
        match loaded {
            Ok(mut ebpf) => {
                match probes::load_all(&mut ebpf) {
                    Ok(n) => println!("verifier:        accepts all {n} programs"),
                    Err(e) => println!("verifier:        {e:#}"),
                }
                match probes::fentry_works(&mut ebpf) {
                    Ok(()) => println!("fentry:          yes"),
                    Err(e) => println!("fentry:          no ({e:#})"),
                }
                if let Some(b) = &btf {
                    print_plan(b, &caps.symbols);
                }
            }
            Err(e) => println!("eBPF:            cannot load: {e:#}"),
        }
    }
    match preflight::require_for_run(&caps) {
        Ok(()) => {
            println!("run:             will work");
            Ok(true)
        }
        Err(e) => {
            println!("run:             will not work: {e:#}");
            Ok(false)
        }
    }
}

/// What `run --probes auto` would use on each function, and why; the fentry programs of that
/// plan are loaded (not attached), so the verifier's answer is real.
fn print_plan(btf: &KernelBtf, symbols: &std::collections::HashSet<String>) {
    let loaded = btf.config(0).and_then(probes::open);
    let mut ebpf = match loaded {
        Ok(e) => e,
        Err(e) => return println!("probes (auto):   cannot load: {e:#}"),
    };
    let facts = probes::BtfFacts::of(btf);
    let support = probes::FentrySupport::probe(&mut ebpf, &facts);
    let plan = match probes::plan(&facts, symbols, &support, probes::ProbesArg::Auto) {
        Ok((plan, _)) => plan,
        Err(e) => return println!("probes (auto):   {e:#}"),
    };
    println!("probes (auto):");
    for c in &plan {
        let (kind, why) = match &c.backend {
            probes::Backend::Fentry { .. } => ("fentry/fexit", c.why.clone()),
            probes::Backend::Kprobe => ("kprobe", format!("fentry not possible: {}", c.why)),
        };
        println!("  {:<22} {kind:<13} {why}", c.target);
    }
    match probes::load_plan(&mut ebpf, &plan, &support) {
        Ok(0) => {}
        Ok(n) => {
            println!("verifier:        accepts the {n} fentry/fexit programs of this plan");
            // Loading is not attaching: a trampoline may be full, a function livepatched.
            for (function, why) in probes::refused_now(&mut ebpf, &plan) {
                println!(
                    "  {function:<22} kprobe        fentry/fexit refused at attach ({why}): \
                     run falls back to kprobes for it"
                );
            }
        }
        Err(e) => println!("verifier:        {e:#} (run falls back to kprobes for that function)"),
    }
}

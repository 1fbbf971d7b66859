//! The findings section at the top of the text report: each finding's cost, its evidence (the
//! biggest items), its fix, and what the bench verified of it.

use std::fmt::Write as _;

use crate::base::escape::escape;
use crate::views::findings::Finding;
use crate::views::text::{bytes, ns};

/// The findings section at the top of the text report.
pub fn findings(out: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        let _ = writeln!(out, "findings: none");
        return;
    }
    let _ = writeln!(out, "findings:");
    for f in findings {
        let _ = writeln!(
            out,
            "  [{}] {}{}: {}",
            escape(&f.id),
            escape(&f.mount),
            f.container
                .as_deref()
                .map(|c| format!(" (container {})", escape(c)))
                .unwrap_or_default(),
            escape(&f.summary)
        );
        if f.time_ns == 0 {
            // A refused rename: the copy is the caller's, in userspace.
            let _ = writeln!(
                out,
                "    cost: not seen by the kernel probes (userspace copies)"
            );
        } else {
            let _ = writeln!(
                out,
                "    cost {} ({}); the fix saves about {}{}",
                ns(f.time_ns),
                shares(f),
                ns(f.saving_ns),
                if f.saving_bytes > 0 {
                    format!(" and {} copied", bytes(f.saving_bytes))
                } else {
                    String::new()
                }
            );
        }
        for e in &f.top {
            // Nothing measured (a refused rename): who and what only.
            let (b, t) = if f.time_ns == 0 {
                (String::new(), String::new())
            } else {
                (bytes(e.bytes), ns(e.time_ns))
            };
            let _ = writeln!(
                out,
                "      {:>10} {:>10}  {:<16} {:<10} {}{}",
                b,
                t,
                escape(&e.process),
                escape(e.syscall.as_deref().unwrap_or("-")),
                escape(&e.path),
                match (&e.created_by, e.layer) {
                    (Some(c), _) => format!("  <- {}", escape(c)),
                    (None, Some(l)) => format!("  <- lower {l}"),
                    (None, None) => String::new(),
                }
            );
        }
        let _ = writeln!(out, "    fix: {}", escape(&f.fix));
        if let Some(v) = &f.verified {
            let _ = writeln!(
                out,
                "    verified on the bench: with {} the recorded start's copy-ups for metadata \
                 copied {} instead of {} and took {} instead of {} (saved {})",
                escape(&v.mount_option),
                bytes(v.with.data_bytes),
                bytes(v.without.data_bytes),
                ns(v.with.total_ns),
                ns(v.without.total_ns),
                ns(v.without.total_ns.saturating_sub(v.with.total_ns))
            );
        }
    }
}

/// "x% of the traced time, y% of copy-up time", each where known (a replayed run cut short has
/// no time traced).
fn shares(f: &crate::views::findings::Finding) -> String {
    let mut parts = Vec::new();
    if f.share_of_traced > 0.0 {
        parts.push(format!(
            "{:.1}% of the traced time",
            f.share_of_traced * 100.0
        ));
    }
    if f.share_of_copy_up_time > 0.0 {
        parts.push(format!(
            "{:.1}% of copy-up time",
            f.share_of_copy_up_time * 100.0
        ));
    }
    if parts.is_empty() {
        parts.push("share of the traced time unknown".into());
    }
    parts.join(", ")
}

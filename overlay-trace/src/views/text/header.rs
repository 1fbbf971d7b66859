//! The report's first lines: what was traced, what was lost, the probes, and notes.

use std::fmt::Write as _;

use crate::base::escape::escape;
use crate::views::report::Report;

pub(super) fn header(out: &mut String, r: &Report) {
    let e = &r.events;
    let _ = writeln!(
        *out,
        "overlay-trace {} on kernel {}: traced {:.1} s, {} copy-ups, {} lookups",
        escape(&r.tool_version),
        escape(&r.kernel),
        r.traced_seconds,
        e.copy_up,
        e.lookup
    );
    if let Some(why) = &r.incomplete {
        let _ = writeln!(*out, "INCOMPLETE: {}", escape(why));
    } else if e.lost() > 0 || e.kernel_read_errors > 0 {
        let _ = writeln!(
            *out,
            "LOST: {} copy-up and {} lookup events dropped (ring buffer full), {} missed returns \
             (copy-up {}, lookup {}, mount {}), {} calls untracked, {} calls skipped by the kernel, \
             {} undecodable records, {} failed kernel reads",
            e.dropped_copy_up,
            e.dropped_lookup.saturating_add(e.dropped_mount),
            e.missed_returns(),
            e.missed_return_copy_up,
            e.missed_return_lookup,
            e.missed_return_mount,
            e.untracked_calls,
            e.skipped_calls,
            e.decode_errors,
            e.kernel_read_errors
        );
    } else {
        let _ = writeln!(*out, "no events lost");
    }
    if e.dropped_rename > 0 {
        let _ = writeln!(
            *out,
            "note: {} refused renames not recorded (ring buffer full)",
            e.dropped_rename
        );
    }
    if e.dropped_exec > 0 {
        let _ = writeln!(
            *out,
            "note: {} process starts not in the timeline (ring buffer full)",
            e.dropped_exec
        );
    }
    if e.enrich_abandoned + e.enrich_skipped > 0 {
        let _ = writeln!(
            *out,
            "INCOMPLETE NAMES: {} lookups abandoned after their time budget (a path that did not \
             answer: FUSE, NFS), {} not attempted; counts are exact, some mounts or source layers \
             are unknown",
            e.enrich_abandoned, e.enrich_skipped
        );
    }
    if !r.probes.is_empty() {
        let mut by_kind: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for p in &r.probes {
            let kind = if p.kind.starts_with('f') {
                "fentry/fexit"
            } else {
                "kprobes"
            };
            let fns = by_kind.entry(kind).or_default();
            if !fns.contains(&p.function.as_str()) {
                fns.push(&p.function);
            }
        }
        let parts: Vec<String> = by_kind
            .iter()
            .map(|(k, f)| format!("{k} on {}", f.join(", ")))
            .collect();
        let _ = writeln!(*out, "probes: {}", parts.join("; "));
        let mut said = Vec::new();
        for p in &r.probes {
            if let Some(why) = p.fallback.as_ref().filter(|_| !said.contains(&&p.function)) {
                said.push(&p.function);
                let _ = writeln!(
                    out,
                    "note: kprobes on {}: the kernel refused its fentry/fexit ({})",
                    escape(&p.function),
                    escape(why)
                );
            }
        }
    }
    if e.skipped_runs > 0 {
        let _ = writeln!(
            *out,
            "note: the kernel skipped {} other fentry/fexit runs (recursion guard): returns \
             (counted as missed) and details (data time, layers, ownership)",
            e.skipped_runs
        );
    }
    if e.missed_return_data > 0 {
        let _ = writeln!(
            *out,
            "note: {} data copies returned unseen: their copy-ups lack that data time",
            e.missed_return_data
        );
    }
    if let Some(err) = &r.events_file_error {
        let _ = writeln!(*out, "EVENTS FILE INCOMPLETE: {}", escape(err));
    }
    if let Some(err) = &r.trace_file_error {
        let _ = writeln!(*out, "TRACE FILE INCOMPLETE: {}", escape(err));
    }
}

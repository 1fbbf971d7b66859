//! `top` when stdout is not a terminal: per interval, a line saying when and what was lost,
//! a header, and one line per row (as bcc's `filetop -C` prints), totals exact (sizes in bytes)
//! so a script can add them up. The name comes last: it may contain spaces.

use std::fmt::Write as _;

use super::{COLUMNS, Column, Snapshot, losses, sorted};

/// The block of one look.
pub fn block(s: &Snapshot, by: Column) -> String {
    let mut out = String::new();
    let when = if s.last { "end: " } else { "" };
    let _ = writeln!(
        out,
        "--- {when}{:.1} s traced; {}",
        s.traced_secs,
        losses(&s.counts)
    );
    for w in &s.warnings {
        let _ = writeln!(out, "--- warning: {}", crate::base::escape::escape(w));
    }
    let cells: Vec<String> = COLUMNS.iter().map(|c| pad(*c, c.header())).collect();
    let _ = writeln!(out, "{}", cells.join(" "));
    for r in sorted(&s.rows, by, false, s.interval_secs) {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|c| {
                let v = match c {
                    Column::BytesRate => {
                        (r.rate(r.delta.data_bytes, s.interval_secs) as u64).to_string()
                    }
                    Column::Bytes => r.total.data_bytes.to_string(),
                    Column::CopyUps => r.total.copy_ups.to_string(),
                    Column::Lookups => r.total.lookups.to_string(),
                    _ => c.cell(r, s.interval_secs),
                };
                pad(*c, &v)
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join(" "));
    }
    out
}

/// Numbers right-aligned in the column's width; the name as it is.
fn pad(c: Column, v: &str) -> String {
    match c {
        Column::Name => v.to_string(),
        _ => format!("{v:>w$}", w = c.width() as usize + 2),
    }
}

/// A note for the looks a slow reader made us skip (each block holds the totals, so only the
/// rates of those intervals are missing).
pub fn skipped(n: u64) -> String {
    format!("--- {n} intervals not printed: the output was not read in time\n")
}

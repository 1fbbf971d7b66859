//! `overlay-trace top`: the rows of the model's window (`model::window`) as a full-screen table
//! (`screen`) or, when stdout is not a terminal, as lines per interval (`lines`). Columns and
//! their order are defined here once for both.

pub mod lines;
pub mod screen;

use std::cmp::Ordering;

use crate::{
    model::window::{Row, RowState},
    stream::record::EventCounts,
    views::text::{bytes, ns},
};

/// One look at the model, as the views show it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Seconds since tracing began, and since the previous look.
    pub traced_secs: f64,
    pub interval_secs: f64,
    pub rows: Vec<Row>,
    /// The tracer's own losses so far (see `EventCounts::lost`).
    pub counts: EventCounts,
    /// Warnings of the naming side since the previous look (on screen: the newest).
    pub warnings: Vec<String>,
    /// The look after the probes were detached: the totals are final.
    pub last: bool,
}

/// A column of the table, and the key that sorts by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    #[value(name = "copy-ups/s")]
    CopyUpsRate,
    #[value(name = "bytes/s")]
    BytesRate,
    #[value(name = "p99")]
    P99,
    #[value(name = "lookups/s")]
    LookupsRate,
    #[value(name = "negative")]
    Negative,
    #[value(name = "layers")]
    Layers,
    #[value(name = "copy-ups")]
    CopyUps,
    #[value(name = "bytes")]
    Bytes,
    #[value(name = "lookups")]
    Lookups,
    #[value(name = "name")]
    Name,
}

/// Screens at least this wide show every column.
pub const WIDE: u16 = 120;

/// The table's columns, left to right (the name last: it takes the width that is left).
pub const COLUMNS: [Column; 10] = [
    Column::CopyUpsRate,
    Column::BytesRate,
    Column::P99,
    Column::LookupsRate,
    Column::Negative,
    Column::Layers,
    Column::CopyUps,
    Column::Bytes,
    Column::Lookups,
    Column::Name,
];

impl Column {
    pub fn header(self) -> &'static str {
        match self {
            Self::CopyUpsRate => "CU/s",
            Self::BytesRate => "BYTES/s",
            Self::P99 => "CU-P99",
            Self::LookupsRate => "LOOK/s",
            Self::Negative => "NEG%",
            Self::Layers => "LAY",
            Self::CopyUps => "COPY-UPS",
            Self::Bytes => "BYTES",
            Self::Lookups => "LOOKUPS",
            Self::Name => "CONTAINER / MOUNT",
        }
    }

    /// The key that sorts by this column.
    pub fn key(self) -> char {
        match self {
            Self::CopyUpsRate => 'c',
            Self::BytesRate => 'b',
            Self::P99 => 'p',
            Self::LookupsRate => 'l',
            Self::Negative => 'n',
            Self::Layers => 'y',
            Self::CopyUps => 'C',
            Self::Bytes => 'B',
            Self::Lookups => 'L',
            Self::Name => 'N',
        }
    }

    pub fn of_key(k: char) -> Option<Column> {
        COLUMNS.into_iter().find(|c| c.key() == k)
    }

    /// Width on screen (the name: at least): the header with its sort mark, or the widest value.
    pub fn width(self) -> u16 {
        match self {
            Self::CopyUpsRate => 6,
            Self::BytesRate | Self::P99 | Self::Lookups => 8,
            Self::LookupsRate | Self::Bytes => 7,
            Self::Negative => 5,
            Self::Layers => 4,
            Self::CopyUps => 9,
            Self::Name => 12,
        }
    }

    /// Left out of a screen narrower than `WIDE`, so that names keep room at 80 columns.
    pub fn optional(self) -> bool {
        matches!(self, Self::Layers | Self::Lookups)
    }

    /// The cell, for a person: compact units.
    pub fn cell(self, r: &Row, secs: f64) -> String {
        match self {
            Self::CopyUpsRate => rate(r.rate(r.delta.copy_ups, secs)),
            Self::BytesRate => short_bytes(r.rate(r.delta.data_bytes, secs) as u64),
            Self::P99 => r.p99_ns.map_or("-".into(), short_ns),
            Self::LookupsRate => rate(r.rate(r.delta.lookups, secs)),
            Self::Negative => r
                .negative_share()
                .map_or("-".into(), |s| format!("{:.0}", s * 100.0)),
            Self::Layers => r.layers.map_or("-".into(), |l| l.to_string()),
            Self::CopyUps => count(r.total.copy_ups),
            Self::Bytes => short_bytes(r.total.data_bytes),
            Self::Lookups => count(r.total.lookups),
            Self::Name => name(r),
        }
    }

    /// Orders two rows by this column: the largest first, names alphabetically.
    pub fn order(self, a: &Row, b: &Row, secs: f64) -> Ordering {
        let v = |r: &Row| -> f64 {
            match self {
                Self::CopyUpsRate => r.rate(r.delta.copy_ups, secs),
                Self::BytesRate => r.rate(r.delta.data_bytes, secs),
                Self::P99 => r.p99_ns.map_or(-1.0, |v| v as f64),
                Self::LookupsRate => r.rate(r.delta.lookups, secs),
                Self::Negative => r.negative_share().unwrap_or(-1.0),
                Self::Layers => r.layers.map_or(-1.0, |l| l as f64),
                Self::CopyUps => r.total.copy_ups as f64,
                Self::Bytes => r.total.data_bytes as f64,
                Self::Lookups => r.total.lookups as f64,
                Self::Name => 0.0,
            }
        };
        match self {
            Self::Name => a.name.cmp(&b.name),
            _ => v(b).total_cmp(&v(a)).then_with(|| a.name.cmp(&b.name)),
        }
    }
}

/// Rows sorted by `by` (reversed on request); ties by name, so the order is stable.
pub fn sorted(rows: &[Row], by: Column, reverse: bool, secs: f64) -> Vec<&Row> {
    let mut v: Vec<&Row> = rows.iter().collect();
    v.sort_by(|a, b| {
        let o = by.order(a, b, secs);
        if reverse { o.reverse() } else { o }
    });
    v
}

/// The row's name, safe for a terminal, marked when its mounts are gone or folded.
pub fn name(r: &Row) -> String {
    crate::base::escape::escape(&r.name) + marker(r)
}

/// What follows a row's name: whether its mounts are gone or folded.
pub fn marker(r: &Row) -> &'static str {
    match r.state {
        RowState::Live => "",
        RowState::Gone => " [gone]",
        RowState::Folded => " [folded]",
    }
}

/// The tracer's own losses, one line.
pub fn losses(c: &EventCounts) -> String {
    let mut s = format!(
        "lost {} (dropped {}, missed returns {}, decode errors {})",
        c.lost(),
        c.dropped_copy_up + c.dropped_lookup + c.dropped_mount,
        c.missed_returns(),
        c.decode_errors
    );
    if c.enrich_abandoned + c.enrich_skipped > 0 {
        s.push_str(&format!(
            "; naming abandoned {}, skipped {}",
            c.enrich_abandoned, c.enrich_skipped
        ));
    }
    s
}

fn rate(v: f64) -> String {
    match v {
        v if v <= 0.0 => "0".into(),
        v if v < 10.0 => format!("{v:.1}"),
        v if v < 10_000.0 => format!("{v:.0}"),
        v => format!("{:.0}k", v / 1000.0),
    }
}

/// "1.50ms" style durations.
fn short_ns(v: u64) -> String {
    ns(v).replace(' ', "")
}

/// "64.0M" style sizes (binary units), at most 7 characters (the widths above hold them).
fn short_bytes(v: u64) -> String {
    let s = bytes(v);
    match s.split_once(' ') {
        Some((n, unit)) => format!("{n}{}", unit.trim_end_matches("iB").trim_end_matches('B')),
        None => s,
    }
}

/// A count, exact while it fits 7 characters, then "123.4M" (the widths above hold it).
fn count(v: u64) -> String {
    match v {
        0..10_000_000 => v.to_string(),
        10_000_000..10_000_000_000 => format!("{:.1}M", v as f64 / 1e6),
        10_000_000_000..10_000_000_000_000 => format!("{:.1}G", v as f64 / 1e9),
        _ => format!("{:.1}T", v as f64 / 1e12),
    }
}

#[cfg(test)]
mod tests;

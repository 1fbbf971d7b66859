//! Reading an events file back (`report events.ndjson`): its lines as records, in order, each
//! checked (bad input is refused with its line number). A last line cut short, as a run killed
//! mid-write leaves it, ends the file: its number is returned, what came before stands.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};

use crate::{
    base::BadInput,
    stream::{
        event::Event,
        record::{Record, SCHEMA_VERSION},
    },
};

/// The longest line read (paths are at most a few KiB).
const LINE_MAX: u64 = 1 << 20;

/// One line of an events file.
pub enum Item {
    /// A kernel event (its line's `mount_gen` is the fold's to work out again).
    Event(Event),
    Record(Record),
}

/// Whether `path` looks like an events file (its first line is a header record).
pub fn is_events_file(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let _ = BufReader::new(f.take(LINE_MAX)).read_line(&mut first);
    first.trim_start().starts_with('{') && first.contains("\"type\":\"header\"")
}

/// Hands every line of `path` to `each`, in order. Returns the number of a last line that was
/// cut short (and so not handed over), if there was one.
pub fn read(path: &Path, mut each: impl FnMut(Item) -> Result<()>) -> Result<Option<usize>> {
    let bad =
        |line: usize, why: String| anyhow!(BadInput(format!("{}:{line}: {why}", path.display())));
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut r = BufReader::new(f);
    let mut header = false;
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = (&mut r)
            .take(LINE_MAX)
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        if read as u64 == LINE_MAX && !line.ends_with('\n') {
            return Err(bad(n, "a line longer than 1 MiB".into()));
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            // The last line, without its newline: the writer was killed mid-line.
            Err(_) if !line.ends_with('\n') && header => return Ok(Some(n)),
            Err(e) => return Err(bad(n, format!("not JSON: {e}"))),
        };
        let kind = v["type"].as_str().unwrap_or("").to_string();
        if !header && kind != "header" {
            return Err(bad(
                n,
                "not an overlay-trace events file (no header record first; files written \
                 before 0.1 have none)"
                    .into(),
            ));
        }
        let item = match kind.as_str() {
            "copy_up" | "lookup" | "mount" | "rename" => Item::Event(
                serde_json::from_value(v).map_err(|e| bad(n, format!("bad {kind}: {e}")))?,
            ),
            _ => {
                let rec: Record = serde_json::from_value(v)
                    .map_err(|e| bad(n, format!("unknown record: {e}")))?;
                if let Record::Header { schema_version, .. } = &rec {
                    if *schema_version > SCHEMA_VERSION {
                        return Err(bad(
                            n,
                            format!(
                                "written for schema version {schema_version}; this overlay-trace reads up to {SCHEMA_VERSION}"
                            ),
                        ));
                    }
                    header = true;
                }
                Item::Record(rec)
            }
        };
        each(item)?;
    }
    if !header {
        return Err(bad(0, "empty: not an overlay-trace events file".into()));
    }
    Ok(None)
}

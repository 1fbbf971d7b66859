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
    let mut first = Vec::new();
    let _ = BufReader::new(f.take(LINE_MAX)).read_until(b'\n', &mut first);
    is_header_line(&first)
}

/// Whether a first line is a header record (parsed: `jq` may have spaced it out).
pub fn is_header_line(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("header"))
}

/// Hands every line of `path` to `each`, in order. Returns the number of a last line that was
/// cut short (and so not handed over), if there was one.
pub fn read(path: &Path, each: impl FnMut(Item) -> Result<()>) -> Result<Option<usize>> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    read_from(path, f, each)
}

/// `read` of what `r` holds (a pipe's bytes read once); `path` names it in messages.
pub fn read_from(
    path: &Path,
    r: impl std::io::Read,
    mut each: impl FnMut(Item) -> Result<()>,
) -> Result<Option<usize>> {
    let bad =
        |line: usize, why: String| anyhow!(BadInput(format!("{}:{line}: {why}", path.display())));
    let mut r = BufReader::new(r);
    let mut header = false;
    let mut bytes = Vec::new();
    let mut n = 0;
    loop {
        bytes.clear();
        let read = (&mut r)
            .take(LINE_MAX)
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        let whole = bytes.ends_with(b"\n");
        if read as u64 == LINE_MAX && !whole {
            return Err(bad(n, "a line longer than 1 MiB".into()));
        }
        // Bytes, then text: a run killed mid-write may cut a character in two.
        let line = match std::str::from_utf8(&bytes) {
            Ok(l) => l,
            Err(_) if !whole && header => return Ok(Some(n)),
            Err(_) => return Err(bad(n, "not UTF-8 text".into())),
        };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // The last line, without its newline: the writer was killed mid-line.
            Err(_) if !whole && header => return Ok(Some(n)),
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

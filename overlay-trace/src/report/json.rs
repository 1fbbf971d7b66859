//! JSON rendering and parsing of a saved report.

use anyhow::{Context as _, Result, bail};

use super::{Report, SCHEMA_VERSION};

pub fn to_string(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("a report always serializes")
}

/// Parses a saved report, refusing other schema versions with a clear message.
pub fn from_str(text: &str) -> Result<Report> {
    let v: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    match v.get("schema_version").and_then(|s| s.as_u64()) {
        Some(n) if n == SCHEMA_VERSION as u64 => {}
        Some(n) => bail!("report schema_version {n} is not supported (this overlay-trace reads version {SCHEMA_VERSION})"),
        None => bail!("not an overlay-trace report: no schema_version"),
    }
    serde_json::from_value(v).context("malformed overlay-trace report")
}

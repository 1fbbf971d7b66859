//! JSON rendering and parsing of a saved report.

use anyhow::{Context as _, Result, bail};

use super::report::Report;
use crate::stream::record::SCHEMA_VERSION;

pub fn to_string(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("a report always serializes")
}

/// Parses a saved report, refusing other schema versions with a clear message.
pub fn from_str(text: &str) -> Result<Report> {
    let v: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    match v.get("schema_version").and_then(|s| s.as_u64()) {
        Some(n) if n == SCHEMA_VERSION as u64 => {}
        Some(n) => bail!(
            "report schema_version {n} is not supported (this overlay-trace reads version {SCHEMA_VERSION})"
        ),
        None => bail!("not an overlay-trace report: no schema_version"),
    }
    serde_json::from_value(v).context("malformed overlay-trace report")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short fuzz run of the parser: thousands of mutations of a real report (bytes flipped,
    /// cut, duplicated) must each give a report or an error, never a panic.
    #[test]
    fn mutated_reports_never_panic() {
        let base = include_str!("../../tests/fixtures/bench-report.json")
            .as_bytes()
            .to_vec();
        assert!(from_str(std::str::from_utf8(&base).unwrap()).is_ok());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut err) = (0, 0);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % b.len();
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => b.truncate(i.max(1)),
                    2 => b.insert(i, b"{}[]\",:0123456789-e."[(next() % 16) as usize]),
                    _ => {
                        let j = (i + (next() as usize % 64)).min(b.len());
                        let dup = b[i..j].to_vec();
                        b.splice(i..i, dup);
                    }
                }
            }
            match from_str(&String::from_utf8_lossy(&b)) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        assert!(err > 0 && ok + err == 20_000);
    }
}

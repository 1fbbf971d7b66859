//! `report` and `diff`: reading saved reports. Bad input (unreadable, malformed, unknown schema
//! version, bad limits) exits 2; a regression exits 1.

use std::{fs, path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

use crate::report::{Report, diff, json, text};

fn load(path: &Path) -> Result<Report> {
    let t = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    json::from_str(&t).with_context(|| format!("{}", path.display()))
}

fn bad_input(e: anyhow::Error) -> ExitCode {
    eprintln!("overlay-trace: error: {e:#}");
    ExitCode::from(2)
}

pub fn report(file: &Path) -> ExitCode {
    match load(file) {
        Ok(r) => {
            print!("{}", text::render(&r));
            ExitCode::SUCCESS
        }
        Err(e) => bad_input(e),
    }
}

pub fn diff(base: &Path, new: &Path, limits: &str) -> ExitCode {
    let inputs = (|| Ok::<_, anyhow::Error>((load(base)?, load(new)?, diff::parse_limits(limits)?)))();
    let (b, n, limits) = match inputs {
        Ok(x) => x,
        Err(e) => return bad_input(e),
    };
    let rows = diff::compare(&b, &n, &limits);
    print!("{}", diff::render(&rows));
    if rows.iter().any(|r| r.regressed) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

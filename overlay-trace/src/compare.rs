//! `report` and `diff`: reading saved reports. Bad input (unreadable, malformed, unknown schema
//! version, bad limits) exits 2; a regression exits 1.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};

use crate::report::{Report, diff, json, plot, text};

fn load(path: &Path) -> Result<Report> {
    if crate::replay::is_events_file(path) {
        let (report, incomplete) = crate::replay::replay(path)?;
        if incomplete {
            eprintln!(
                "overlay-trace: warning: {} has no end record (the run was cut short): the time \
                 traced and the kernel side's loss counts are unknown",
                path.display()
            );
        }
        return Ok(report);
    }
    let t = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    json::from_str(&t).with_context(|| format!("{}", path.display()))
}

fn bad_input(e: anyhow::Error) -> ExitCode {
    eprintln!("overlay-trace: error: {e:#}");
    ExitCode::from(2)
}

pub fn report(
    files: &[PathBuf],
    json_out: Option<&Path>,
    svg: Option<&Path>,
    html: Option<&Path>,
) -> ExitCode {
    let reports: Result<Vec<(String, Report)>> = files
        .iter()
        .map(|f| {
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok((name, load(f)?))
        })
        .collect();
    let reports = match reports {
        Ok(r) => r,
        Err(e) => return bad_input(e),
    };
    for (_, r) in &reports {
        print!("{}", text::render(r));
    }
    if let (Some(path), Some((_, r))) = (json_out, reports.first()) {
        let written =
            crate::run::outputs::write_file(path, "the JSON report", json::to_string(r).as_bytes());
        if let Err(e) = written {
            eprintln!("overlay-trace: error: {e:#}");
            return ExitCode::from(1);
        }
    }
    let pictures = [
        (svg, plot::svg as fn(&[(String, Report)]) -> Result<String>),
        (html, plot::html),
    ];
    for (path, render) in pictures {
        let Some(path) = path else { continue };
        let written = render(&reports)
            .and_then(|doc| crate::run::outputs::write_file(path, "the picture", doc.as_bytes()));
        if let Err(e) = written {
            eprintln!("overlay-trace: error: {e:#}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

pub fn diff(base: &Path, new: &Path, limits: &str) -> ExitCode {
    let inputs =
        (|| Ok::<_, anyhow::Error>((load(base)?, load(new)?, diff::parse_limits(limits)?)))();
    let (b, n, limits) = match inputs {
        Ok(x) => x,
        Err(e) => return bad_input(e),
    };
    let rows = diff::compare(&b, &n, &limits);
    print!("{}", diff::render(&rows));
    if rows.iter().any(|r| r.regressed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

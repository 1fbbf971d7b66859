//! `report` and `diff`: reading saved reports. Bad input (unreadable, malformed, unknown schema
//! version, bad limits) exits 2; a regression exits 1.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};

use crate::{
    model::replay,
    stream::input::{is_events_file, is_header_line},
    views::report::Report,
};

use crate::views::{diff, json, plot, text};

use crate::views::timeline_svg::Timeline;

/// The largest JSON report read (one of a thousand mounts is a few MiB).
const REPORT_MAX: u64 = 256 << 20;

/// A report or events file named on the command line: read where it lies, or held whole when
/// it cannot be read twice (a pipe: `report <(zcat events.ndjson.gz)`).
enum Input<'a> {
    File(&'a Path),
    Held(&'a Path, String),
}

impl<'a> Input<'a> {
    fn open(path: &'a Path) -> Result<Self> {
        Ok(match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_file() && !m.file_type().is_dir() => Input::Held(
                path,
                crate::base::safe_fs::read_user_file(path, REPORT_MAX)?,
            ),
            _ => Input::File(path),
        })
    }

    fn is_events(&self) -> bool {
        match self {
            Input::File(path) => is_events_file(path),
            Input::Held(_, text) => is_header_line(text.lines().next().unwrap_or("").as_bytes()),
        }
    }

    /// The events replayed into the report of the run that wrote them (a file not whole is
    /// warned about).
    fn replay(
        &self,
        on_event: impl FnMut(&crate::stream::event::Event, crate::stream::record::MountKey),
        on_name: impl FnMut(crate::stream::record::MountKey, String, bool),
    ) -> Result<Report> {
        let r = match self {
            Input::File(path) => replay::replay_with(path, on_event, on_name)?,
            Input::Held(path, text) => {
                replay::replay_from(path, text.as_bytes(), on_event, on_name)?
            }
        };
        if let Some(w) = &r.warning {
            eprintln!("overlay-trace: warning: {w}");
        }
        Ok(Report::replayed(r))
    }

    fn json(&self) -> Result<Report> {
        let (path, text) = match self {
            Input::File(path) => (
                *path,
                crate::base::safe_fs::read_user_file(path, REPORT_MAX)?,
            ),
            Input::Held(path, text) => (*path, text.clone()),
        };
        json::from_str(&text).with_context(|| format!("{}", path.display()))
    }
}

fn load(path: &Path) -> Result<Report> {
    let input = Input::open(path)?;
    if input.is_events() {
        input.replay(|_, _| {}, |_, _, _| {})
    } else {
        input.json()
    }
}

/// An events file replayed into its report, its timeline drawn from the events on the way.
fn load_with_timeline(path: &Path) -> Result<(Report, Timeline)> {
    let input = Input::open(path)?;
    if !input.is_events() {
        return Err(anyhow::anyhow!(crate::base::BadInput(format!(
            "--timeline needs an events file (`run --events`); {} is not one",
            path.display()
        ))));
    }
    let t = std::cell::RefCell::new(Timeline::default());
    let report = input.replay(
        |e, key| t.borrow_mut().add(e, key),
        |key, n, container| t.borrow_mut().name(key, n, container),
    )?;
    Ok((report, t.into_inner()))
}

fn bad_input(e: anyhow::Error) -> ExitCode {
    eprintln!("overlay-trace: error: {e:#}");
    ExitCode::from(2)
}

/// What `report` writes besides the text.
pub struct Outputs<'a> {
    pub json: Option<&'a Path>,
    pub timeline: Option<&'a Path>,
    pub svg: Option<&'a Path>,
    pub html: Option<&'a Path>,
    /// `--fail-on`: finding ids (or `any`) that make the exit status 3.
    pub fail_on: &'a [String],
    /// `--verify`: the first file's findings' fixes tried on the bench.
    pub verify: bool,
}

pub fn report(files: &[PathBuf], outputs: Outputs<'_>) -> ExitCode {
    let Outputs {
        json: json_out,
        timeline,
        svg,
        html,
        fail_on,
        verify,
    } = outputs;
    let mut picture = None;
    let reports: Result<Vec<(String, Report)>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            if i == 0 && timeline.is_some() {
                let (r, t) = load_with_timeline(f)?;
                picture = Some(t);
                return Ok((name, r));
            }
            Ok((name, load(f)?))
        })
        .collect();
    let mut reports = match reports {
        Ok(r) => r,
        Err(e) => return bad_input(e),
    };
    if verify {
        if !is_events_file(&files[0]) {
            return bad_input(anyhow::anyhow!(crate::base::BadInput(
                "--verify needs an events file (run --events), not a JSON report".into()
            )));
        }
        if let Err(e) = crate::cmd::verify::verify(&files[0], &mut reports[0].1) {
            eprintln!("overlay-trace: error: {e:#}");
            return ExitCode::from(1);
        }
    }
    for (_, r) in &reports {
        print!("{}", text::render(r));
    }
    if let (Some(path), Some(t)) = (timeline, picture.as_ref()) {
        let written = t.svg().and_then(|doc| {
            crate::stream::output::write_file(path, "the timeline", doc.as_bytes())
        });
        if let Err(e) = written {
            eprintln!("overlay-trace: error: {e:#}");
            return ExitCode::from(1);
        }
    }
    if let (Some(path), Some((_, r))) = (json_out, reports.first()) {
        let written = crate::stream::output::write_file(
            path,
            "the JSON report",
            json::to_string(r).as_bytes(),
        );
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
            .and_then(|doc| crate::stream::output::write_file(path, "the picture", doc.as_bytes()));
        if let Err(e) = written {
            eprintln!("overlay-trace: error: {e:#}");
            return ExitCode::from(1);
        }
    }
    let failing: Vec<String> = reports
        .iter()
        .flat_map(|(_, r)| crate::views::findings::failing(&r.findings, fail_on))
        .collect();
    for line in &failing {
        eprintln!("{line}");
    }
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
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

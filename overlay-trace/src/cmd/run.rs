//! `overlay-trace run`: a session (`cmd::session`) traced until Ctrl-C, SIGTERM, `--duration` or
//! the end of the traced command, then the report.

use std::{io::IsTerminal as _, time::Duration};

use anyhow::Result;

use crate::{
    cli::RunArgs,
    cmd::{
        child::{self, TracedCommand},
        session::{Options, Session},
        signals::Signals,
    },
    views::{report::Report, text},
};

/// The final naming pass gets this long; the report follows at most this late.
const NAMING_FINISH: Duration = Duration::from_millis(3000);

/// Why tracing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGINT, SIGTERM, SIGHUP or SIGQUIT (the signal number).
    Signal(i32),
    /// `--duration` elapsed.
    Duration,
    /// The traced command exited by itself, with this shell-style code.
    CommandExited(i32),
}

/// What `trace` produced.
pub struct Traced {
    pub report: Report,
    pub ending: Ending,
}

/// The exit status of `run`: 0 when the tracer was stopped by its user (Ctrl-C, SIGTERM,
/// `--duration`); with a command, the command's own status when it ended by itself, 130/143 when
/// the tracer was interrupted by SIGINT/SIGTERM (as shells report it), 124 when `--duration`
/// ended it (as `timeout(1)` does). An incomplete `--events` or `--trace` file turns a 0 into 1.
pub fn exit_code(ending: Ending, had_command: bool, events_failed: bool) -> i32 {
    let code = match (ending, had_command) {
        (Ending::CommandExited(c), _) => c,
        (Ending::Signal(sig), true) => 128 + sig,
        (Ending::Duration, true) => 124,
        (_, false) => 0,
    };
    if code == 0 && events_failed { 1 } else { code }
}

pub async fn run(args: RunArgs) -> Result<i32> {
    // Before anything is made: every ending signal ends the run cleanly, whenever it comes.
    let mut signals = Signals::install()?;
    let traced = match trace(&args, &mut signals).await? {
        Ok(t) => t,
        Err(sig) => {
            eprintln!(
                "overlay-trace: stopped by signal {sig} before tracing began; nothing written"
            );
            return Ok(128 + sig);
        }
    };
    print!("{}", text::render(&traced.report));
    let code = exit_code(
        traced.ending,
        !args.command.is_empty(),
        traced.report.events_file_error.is_some() || traced.report.trace_file_error.is_some(),
    );
    let failing = crate::views::findings::failing(&traced.report.findings, &args.fail_on);
    for line in &failing {
        eprintln!("{line}");
    }
    Ok(if code == 0 && !failing.is_empty() {
        3
    } else {
        code
    })
}

/// Attaches, traces until the end condition, detaches; the report and why it ended, or the
/// signal that came before tracing began.
async fn trace(args: &RunArgs, signals: &mut Signals) -> Result<Result<Traced, i32>> {
    let start = Session::start_unless_signalled(
        Options {
            tracing: args.tracing.clone(),
            only: &args.only_devs,
            json: args.json.as_deref(),
            events: args.events.as_deref(),
            trace: args.trace.as_deref(),
            ..Default::default()
        },
        signals,
    );
    let mut session = match start.await? {
        Ok(s) => s,
        Err(sig) => return Ok(Err(sig)),
    };
    let live = !args.quiet && std::io::stderr().is_terminal();
    let mut child = if args.command.is_empty() {
        None
    } else {
        Some(TracedCommand::spawn(&args.command)?)
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut status = tokio::time::interval(Duration::from_secs(1));
    let ending = loop {
        tokio::select! {
            r = session.step() => r?,
            _ = status.tick(), if live => eprint!("{}", session.status_line()),
            sig = signals.recv() => break Ending::Signal(sig),
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break Ending::Duration,
            status = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                break Ending::CommandExited(child::shell_code(status?));
            }
        }
    };
    // A command still running is ended (SIGTERM, then SIGKILL) while the probes still see it;
    // the drain goes on meanwhile so nothing it does is lost.
    if let Some(c) = child.as_mut() {
        if c.exited().is_none() {
            let stop = c.stop();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    s = &mut stop => { s?; break; }
                    r = session.step() => r?,
                }
            }
        }
    }
    if live {
        eprint!("\r{:80}\r", "");
    }
    let report = session.finish(NAMING_FINISH).await?;
    Ok(Ok(Traced { report, ending }))
}

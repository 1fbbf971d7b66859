//! `overlay-trace top`: a session (`cmd::session`) looked at once per `--interval` through the
//! model's window (`model::window`) and shown full-screen (`terminal`), or printed per interval
//! when stdout is not a terminal (`printer`). Ends on q, a signal, `--duration`, a terminal
//! gone or a closed stdout.
//!
//! Nothing here writes to the terminal from the drain's thread: warnings are held by the session
//! and shown in the header (on screen) or in the next block (piped).

mod printer;
mod terminal;

use std::{io::IsTerminal as _, time::Duration};

use anyhow::Result;

use crate::{
    cli::TopArgs,
    cmd::{
        session::{Options, Session},
        signals::Signals,
    },
    model::window::Window,
    views::top::{Snapshot, lines},
};

/// The last naming pass, piped: its names reach the last block (as `run`'s report).
const NAMING_FINISH: Duration = Duration::from_millis(3000);

/// Where the looks go.
enum Out {
    Screen(terminal::Screen),
    Lines(printer::Printer),
}

impl Out {
    /// Resolves when the view ends by itself (q; a terminal or reader gone).
    async fn ended(&mut self) {
        match self {
            Out::Screen(s) => s.ended().await,
            Out::Lines(p) => p.gone().await,
        }
    }
}

pub async fn top(args: TopArgs) -> Result<i32> {
    let mut signals = Signals::install()?;
    let full_screen = std::io::stdout().is_terminal();
    let start = Session::start_unless_signalled(
        Options {
            tracing: args.tracing.clone(),
            hold_warnings: true,
            ..Default::default()
        },
        &mut signals,
    );
    let mut session = match start.await? {
        Ok(s) => s,
        Err(sig) => return Ok(128 + sig),
    };
    // Dropped on every way out, the screen gives the terminal back.
    let mut out = if full_screen {
        Out::Screen(terminal::Screen::start(args.sort)?)
    } else {
        Out::Lines(printer::Printer::start()?)
    };
    let mut window = Window::default();
    let mut last_look = std::time::Instant::now();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            r = session.step() => r?,
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                let mut s = Snapshot {
                    traced_secs: session.started.elapsed().as_secs_f64(),
                    interval_secs: (now - last_look).as_secs_f64(),
                    rows: window.look(&session.fold.agg),
                    counts: session.counts(),
                    ..Default::default()
                };
                last_look = now;
                match &mut out {
                    Out::Screen(screen) => {
                        s.warnings = session.last_warning().map(str::to_string).into_iter().collect();
                        screen.show(s);
                    }
                    Out::Lines(p) => {
                        s.warnings = session.take_warnings().0;
                        p.print(lines::block(&s, args.sort));
                    }
                }
            }
            _ = signals.recv() => break,
            _ = out.ended() => break,
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
        }
    }
    let out = match out {
        Out::Screen(screen) => {
            // The terminal back first; the report is not shown, so no last naming pass.
            drop(screen);
            let held = session.take_warnings();
            session.finish(Duration::ZERO).await?;
            super::warnings::print(held);
            return Ok(0);
        }
        Out::Lines(p) => p,
    };
    let (traced_secs, interval_secs) = (
        session.started.elapsed().as_secs_f64(),
        last_look.elapsed().as_secs_f64(),
    );
    let warnings = session.take_warnings().0;
    let (report, model) = session.finish_and_model(NAMING_FINISH).await?;
    let s = Snapshot {
        traced_secs,
        interval_secs,
        rows: window.look(&model),
        counts: report.events,
        warnings,
        last: true,
    };
    out.finish(lines::block(&s, args.sort));
    Ok(0)
}

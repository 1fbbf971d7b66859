//! `overlay-trace top`: a session (`cmd::session`) looked at once per `--interval` through the
//! model's window (`model::window`) and shown full-screen (`terminal`), or printed per interval
//! when stdout is not a terminal (`printer`). Ends on q, a signal, `--duration` or a closed
//! stdout.

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

/// The final naming pass gets this long (as `run`'s).
const NAMING_FINISH: Duration = Duration::from_millis(3000);

/// Where the looks go.
enum Out {
    Screen(terminal::Screen),
    Lines(printer::Printer),
}

impl Out {
    /// Resolves when the view asks to end (q; a reader that went away).
    async fn ended(&mut self) {
        match self {
            Out::Screen(s) => s.quit_asked().await,
            Out::Lines(p) => p.gone().await,
        }
    }
}

pub async fn top(args: TopArgs) -> Result<i32> {
    let mut signals = Signals::install()?;
    let start = Session::start(Options {
        pid: args.pid,
        containers: &args.containers,
        maxactive: args.maxactive,
        probes: args.probes,
        ..Default::default()
    });
    let mut session = tokio::select! {
        biased;
        sig = signals.recv() => return Ok(128 + sig),
        s = start => s?,
    };
    if let Some(sig) = signals.pending().await {
        session.abort();
        return Ok(128 + sig);
    }
    let mut out = if std::io::stdout().is_terminal() {
        Out::Screen(terminal::Screen::start(args.sort)?)
    } else {
        Out::Lines(printer::Printer::start()?)
    };
    let mut window = Window::default();
    let mut seq = 0;
    let mut last_look = session.started;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            r = session.step() => r?,
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                seq += 1;
                let s = Snapshot {
                    seq,
                    traced_secs: session.started.elapsed().as_secs_f64(),
                    interval_secs: (now - last_look).as_secs_f64(),
                    rows: window.look(&session.fold.agg),
                    counts: session.counts(),
                    last: false,
                };
                last_look = now;
                match &mut out {
                    Out::Screen(screen) => screen.show(s),
                    Out::Lines(p) => p.print(lines::block(&s, args.sort, false)),
                }
            }
            _ = signals.recv() => break,
            _ = out.ended() => break,
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
        }
    }
    // The terminal first: the person gets it back while the probes are detached.
    if let Out::Screen(s) = out {
        s.stop();
        session.finish(NAMING_FINISH).await?;
        return Ok(0);
    }
    let traced_secs = session.started.elapsed().as_secs_f64();
    let (report, model) = session.finish_and_model(NAMING_FINISH).await?;
    let s = Snapshot {
        seq: seq + 1,
        traced_secs,
        interval_secs: last_look.elapsed().as_secs_f64(),
        rows: window.look(&model),
        counts: report.events,
        last: true,
    };
    if let Out::Lines(p) = out {
        p.finish(lines::block(&s, args.sort, false));
    }
    Ok(0)
}

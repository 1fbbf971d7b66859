//! The terminal of `top`, on a thread of its own: it draws the latest look it was handed and
//! reads keys. The drain never waits for it: a terminal that stops reading (a stuck ssh) blocks
//! this thread's writes, and the looks handed over meanwhile replace one another.
//!
//! The terminal is given back (raw mode off, alternate screen left, cursor shown) on `q`, when
//! `Screen` is dropped (every other way out of `top`) and from a panic hook. Restoring never
//! fails loudly: on a hung-up terminal every write fails (EIO), and ratatui's own `restore`
//! would print that, panic on the dead stderr and abort the process mid-trace.

use std::{
    io::stdout,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::Show,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};

use crate::views::top::{
    Column, Snapshot,
    screen::{self, Action, Key, Ui},
};

/// How long the terminal is waited for when `top` ends.
const RESTORE_WAIT: Duration = Duration::from_secs(1);

pub struct Screen {
    latest: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
    /// A message when the screen's thread ends by itself (q; or its terminal went away); closed
    /// when it panicked.
    ended: tokio::sync::mpsc::UnboundedReceiver<()>,
    done: mpsc::Receiver<()>,
}

/// Gives the terminal back, ignoring every failure (see the module's comment).
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, Show);
}

impl Screen {
    /// Takes the terminal (raw mode, alternate screen) and starts drawing.
    pub fn start(sort: Column) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        // A panic anywhere gives the terminal back, and the screen's thread stops drawing on it.
        let stopping = stop.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            stopping.store(true, Ordering::Relaxed);
            restore();
            previous(info);
        }));
        enable_raw_mode().context("setting up the terminal")?;
        let mut terminal = match execute!(stdout(), EnterAlternateScreen)
            .and_then(|()| Terminal::new(CrosstermBackend::new(stdout())))
        {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e).context("setting up the terminal");
            }
        };
        let latest: Arc<Mutex<Option<Snapshot>>> = Arc::default();
        let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::channel();
        let (shared, stopping) = (latest.clone(), stop.clone());
        std::thread::Builder::new()
            .name("top-screen".into())
            .spawn(move || {
                let mut ui = Ui::new(sort);
                let mut shown = Snapshot::default();
                let mut redraw = true;
                while !stopping.load(Ordering::Relaxed) {
                    if let Some(s) = shared.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        shown = s;
                        redraw = true;
                    }
                    if redraw {
                        // A terminal that went away: `top` ends (as on SIGHUP).
                        if terminal.draw(|f| screen::draw(f, &shown, &ui)).is_err() {
                            break;
                        }
                        redraw = false;
                    }
                    match next_key() {
                        Ok(Some(k)) => match ui.key(k, &shown) {
                            Action::Quit => break,
                            Action::Redraw => redraw = true,
                            Action::Nothing => {}
                        },
                        Ok(None) => {}
                        Err(()) => break,
                    }
                }
                restore();
                let _ = ended_tx.send(());
                let _ = done_tx.send(());
            })
            .context("starting the screen's thread")?;
        Ok(Self {
            latest,
            stop,
            ended,
            done,
        })
    }

    /// Hands over a look; one not drawn yet is replaced.
    pub fn show(&self, s: Snapshot) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// Resolves when the screen ended by itself: q, Esc or Ctrl-C, a terminal gone, a panic of
    /// its thread. Cancel-safe.
    pub async fn ended(&mut self) {
        let _ = self.ended.recv().await;
    }
}

impl Drop for Screen {
    /// Stops drawing and waits a second at most for the terminal to be given back: a terminal
    /// that does not take our writes cannot be restored anyway.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.done.recv_timeout(RESTORE_WAIT);
    }
}

/// A key pressed (or a resize) within the next 100 ms, if any; an error when the terminal
/// cannot be read any more.
fn next_key() -> Result<Option<Key>, ()> {
    if !event::poll(Duration::from_millis(100)).map_err(|_| ())? {
        return Ok(None);
    }
    let k = match event::read().map_err(|_| ())? {
        Event::Key(k) => k,
        Event::Resize(..) => return Ok(Some(Key::Resize)),
        _ => return Ok(None),
    };
    if k.kind != KeyEventKind::Press {
        return Ok(None);
    }
    Ok(Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Esc => Key::Esc,
        _ => return Ok(None),
    }))
}

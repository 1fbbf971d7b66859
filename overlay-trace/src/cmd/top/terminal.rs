//! The terminal of `top`, on a thread of its own: it draws the latest look it was handed and
//! reads keys. The drain never waits for it: a terminal that stops reading (a stuck ssh) blocks
//! this thread's writes, and the looks handed over meanwhile replace one another.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::views::top::{
    Column, Snapshot,
    screen::{self, Action, Key, Ui},
};

/// How long `stop` waits for the terminal to be given back.
const RESTORE_WAIT: Duration = Duration::from_secs(1);

pub struct Screen {
    latest: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
    quit: tokio::sync::mpsc::UnboundedReceiver<()>,
    done: mpsc::Receiver<()>,
}

impl Screen {
    /// Takes the terminal (raw mode, alternate screen; restored on panic too) and starts
    /// drawing.
    pub fn start(sort: Column) -> Result<Self> {
        let mut terminal = ratatui::try_init().context("setting up the terminal")?;
        let latest: Arc<Mutex<Option<Snapshot>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (quit_tx, quit) = tokio::sync::mpsc::unbounded_channel();
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
                        // A terminal that went away: nothing more to show, tracing goes on.
                        if terminal.draw(|f| screen::draw(f, &shown, &ui)).is_err() {
                            break;
                        }
                        redraw = false;
                    }
                    if let Some(k) = next_key() {
                        match ui.key(k, &shown) {
                            Action::Quit => {
                                let _ = quit_tx.send(());
                                break;
                            }
                            Action::Redraw => redraw = true,
                            Action::Nothing => {}
                        }
                    }
                }
                ratatui::restore();
                let _ = done_tx.send(());
            })
            .context("starting the screen's thread")?;
        Ok(Self {
            latest,
            stop,
            quit,
            done,
        })
    }

    /// Hands over a look; one not drawn yet is replaced.
    pub fn show(&self, s: Snapshot) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// Resolves when the person asked to quit (q, Esc, Ctrl-C). Cancel-safe.
    pub async fn quit_asked(&mut self) {
        if self.quit.recv().await.is_none() {
            // The screen's thread ended without a quit (its terminal went away): wait forever,
            // tracing goes on until a signal or --duration.
            std::future::pending::<()>().await;
        }
    }

    /// Gives the terminal back as it was (waits a second at most: a terminal that does not
    /// take our writes cannot be restored anyway).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.done.recv_timeout(RESTORE_WAIT);
    }
}

/// A key pressed (or a resize) within the next 100 ms, if any.
fn next_key() -> Option<Key> {
    if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
        return None;
    }
    let k = match event::read() {
        Ok(Event::Key(k)) => k,
        Ok(Event::Resize(..)) => return Some(Key::Resize),
        _ => return None,
    };
    if k.kind != KeyEventKind::Press {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Esc => Key::Esc,
        _ => return None,
    })
}

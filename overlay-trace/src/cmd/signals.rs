//! The signals that end a command: SIGINT, SIGTERM, SIGHUP (a terminal or ssh session that
//! goes away) and SIGQUIT. Installed before anything is made or attached, so that each of them,
//! whenever it comes, ends the command the same clean way (probes removed, outputs in place or
//! removed), never the kernel's default way (which would leave tracefs events and temporary
//! files behind).

use anyhow::{Context as _, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        let on = |k: SignalKind, name: &str| signal(k).with_context(|| format!("{name} handler"));
        Ok(Self {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
            quit: on(SignalKind::quit(), "SIGQUIT")?,
        })
    }

    /// The next signal's number. Cancel-safe.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }

    /// A signal that came already, if one did (without waiting).
    pub async fn pending(&mut self) -> Option<i32> {
        tokio::select! {
            biased;
            s = self.recv() => Some(s),
            _ = std::future::ready(()) => None,
        }
    }
}

//! Warnings that come while tracing, held instead of printed when a full-screen view owns the
//! terminal (`top`): the newest few, and how many there were in all.

use std::collections::VecDeque;

/// Warnings held at most (the newest; the rest are counted).
const HELD_MAX: usize = 16;

#[derive(Default)]
pub struct Held {
    newest: VecDeque<String>,
    all: u64,
}

impl Held {
    pub fn push(&mut self, w: String) {
        self.all += 1;
        self.newest.push_back(w);
        if self.newest.len() > HELD_MAX {
            self.newest.pop_front();
        }
    }

    pub fn last(&self) -> Option<&str> {
        self.newest.back().map(String::as_str)
    }

    /// The warnings held, the newest last, and how many there were in all; none held after.
    pub fn take(&mut self) -> (Vec<String>, u64) {
        (
            self.newest.drain(..).collect(),
            std::mem::take(&mut self.all),
        )
    }
}

/// Prints what was held, once the terminal is back: the newest, and how many are not shown.
pub fn print((shown, all): (Vec<String>, u64)) {
    if all > shown.len() as u64 {
        eprintln!(
            "overlay-trace: {} warnings while tracing; the last {}:",
            all,
            shown.len()
        );
    }
    for w in shown {
        eprintln!("warning: {w}");
    }
}

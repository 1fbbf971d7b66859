//! What every stage may use: file access that is safe as root on a shared host, escaping of
//! strings from the traced system, and the error of bad user input. Imports nothing of ours.

pub mod escape;
pub mod safe_fs;

/// An error in what the user gave (a scenario, an option): exit status 2, like bad usage.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

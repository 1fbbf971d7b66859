//! overlay-trace: an eBPF tracer for Linux overlayfs.
//!
//! One pipeline, data flowing one way, a folder per stage (each imports only those below it):
//!
//! ```text
//! kernel (programs, ring buffer) -> stream (decode, records) -> model (the fold) -> views
//!                 enrich (names, source layers: beside the drain) --^
//! ```
//!
//! `base` is beneath them all; `cmd` (the commands) and `cli` above.

pub mod base;
pub mod cli;
pub mod cmd;
pub mod enrich;
pub mod kernel;
pub mod model;
pub mod stream;
pub mod views;

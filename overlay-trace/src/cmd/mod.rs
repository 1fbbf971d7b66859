//! The commands, thin drivers that assemble the stages they need.

pub mod bench;
pub mod check;
pub mod child;
pub mod report;
pub mod run;
pub mod scenario;
pub mod scrape_limits;
mod select;
pub mod serve;
pub mod session;
pub mod signals;
pub mod top;
pub mod verify;
mod warnings;

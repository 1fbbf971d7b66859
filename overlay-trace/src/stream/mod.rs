//! The data between the stages: kernel events as decoded (`event`), the records that change
//! numbers (`record`), the names they carry (`names`), and the events file they are written to
//! (`output`) and read back from (`input`).

pub mod background;
pub mod event;
pub mod input;
pub mod names;
pub mod output;
pub mod record;
pub mod trigger;

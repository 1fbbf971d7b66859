//! Enrichment: what names and explains the kernel's events, found beside the drain and never in
//! its way. Each answer is a record the model applies (`replay::apply`), live and in a replay.
//!
//! `budget` runs filesystem work with a time budget (a path on FUSE or NFS may never answer);
//! `source_layers` finds each copy-up's source layer.

pub mod answer;
pub mod budget;
pub mod containers;
pub mod layers;
pub mod mountinfo;
pub mod naming;
pub mod origin;
pub mod source_layers;

//! overlay-trace: an eBPF tracer for Linux overlayfs.
//!
//! Data flows one way: `probes` (kernel programs, loaded with offsets from `btf_offsets`) ->
//! `events` (decode) -> `aggregate` (pure) -> `report` (text, JSON). `mounts` names superblocks.

pub mod aggregate;
pub mod bench;
pub mod btf_offsets;
pub mod check;
pub mod cli;
pub mod compare;
pub mod containers;
pub mod enrich;
pub mod events;
pub mod layers;
pub mod mounts;
pub mod preflight;
pub mod probes;
pub mod replay;
pub mod report;
pub mod run;
pub mod safe_fs;
pub mod serve;

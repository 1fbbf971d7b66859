//! The kernel side: what this kernel offers (`preflight`), struct offsets from its BTF
//! (`btf_offsets`), the probe table and how each probe is made (`probes`), and the loaded
//! programs with their maps and ring buffer (`session`), and the runs the kernel skipped
//! (`prog_info`).

pub mod btf_offsets;
pub mod preflight;
pub mod probes;
pub mod prog_info;
pub mod session;

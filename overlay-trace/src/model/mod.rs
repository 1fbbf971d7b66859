//! The model: records folded into numbers, defined once. `aggregate` (per mount, bounded, for
//! reports), `series` (per container label set, for Prometheus), both fed by `fold`, the one
//! fold of a record stream, live or replayed (`replay`); `window` looks at `aggregate` at intervals
//! (`top`).

pub mod aggregate;
pub mod counters;
pub mod evidence;
pub mod fold;
pub mod latency;
pub mod replay;
pub mod series;
pub mod stats;
pub mod window;

//! Views of the model: they render, they never compute a number. The report (`report`: built
//! from the model) as text, JSON and a diff of two; latency plots; timelines (Chrome trace
//! format, SVG); the Prometheus exposition.

pub mod chrome_trace;
pub mod diff;
pub mod findings;
pub mod json;
pub mod plot;
pub mod prometheus;
pub mod report;
pub mod text;
pub mod timeline_svg;
pub mod top;

//! The side-by-side benchmark suite behind BENCHMARKS.md: Vigil, Node `ws`
//! and Python `websockets` measured in one run, on one machine, with the
//! same ping interval and timeout.

pub mod measure;
pub mod procfs;
pub mod report;
pub mod servers;

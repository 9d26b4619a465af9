//! Vigil's load tool and benchmark suite, as a library for the two
//! programs: `vigil-load` (puts load on one server) and `vigil-bench`
//! (runs Vigil and its peers side by side and writes BENCHMARKS.md).
//! Loopback only; every run is bounded in count and time.

pub mod modes;
pub mod sessions;
pub mod stats;
pub mod suite;
pub mod target;

//! Vigil: a WebSocket session host whose liveness policy — health scoring,
//! timeout tiers, eviction — runs as sandboxed WebAssembly component plugins.
//!
//! The host owns the mechanics (sockets, heartbeats, queues, closing); the
//! plugin owns the decisions, through the `vigil:policy` WIT contract in
//! `wit/`. This file is the map of the crate.

/// Command line: `vigil serve`, `vigil policy check`.
pub mod cli;
/// `vigil.toml` and its defaults; what an operator can set.
pub mod config;
/// The policy runtime: loading plugins into the wasmtime sandbox, calling them
/// under limits, and falling back to the native default policy on faults.
pub mod policy;
/// The HTTP server.
pub mod server;

pub use vigil_policy_sdk as sdk;

//! Vigil: a WebSocket session host whose liveness policy — health scoring,
//! timeout tiers, eviction — runs as sandboxed WebAssembly component plugins.
//!
//! The host owns the mechanics (sockets, heartbeats, queues, closing); the
//! plugin owns the decisions, through the `vigil:policy` WIT contract in
//! `wit/`, run by the `vigil-policy-runtime` crate. This file is the map of
//! the crate, layer by layer; each layer imports only the ones above it in
//! this list (`tests/layers.rs` checks it, ARCHITECTURE.md draws it).

/// Layer 1, the core: sessions, liveness, the shared tick, the policy's
/// handle, behind one public API ([`SessionHost`]).
pub mod core;

/// Layer 2, cluster mode: nodes sharing one set of sessions over Redis.
pub mod cluster;
/// Layer 2, HTTP: the public API, the admin API, tokens, error answers.
pub mod http;
/// Layer 2, the profile seam: features that bring their own endpoints.
pub mod profile;

/// Layer 3, profiles: OneBot v11 forward-WebSocket endpoints.
pub mod onebot;

/// Layer 4, start-up: `vigil.toml` as a whole.
pub mod config;
/// Layer 4, start-up: the one way a host starts, the CLI, the file watch.
pub mod startup;

pub use crate::core::SessionHost;
pub use startup::{cli, RunningServer, Vigil, VigilBuilder};
pub use vigil_policy_runtime as policy;
pub use vigil_policy_runtime::sdk;

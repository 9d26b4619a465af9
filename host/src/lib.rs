//! Vigil: a WebSocket session host whose liveness policy — health scoring,
//! timeout tiers, eviction — runs as sandboxed WebAssembly component plugins.
//!
//! The host owns the mechanics (sockets, heartbeats, queues, closing); the
//! plugin owns the decisions, through the `vigil:policy` WIT contract in
//! `wit/`. This file is the map of the crate.

/// The admin API: policy swap, rollback and shadow, on its own listener.
pub mod admin;
/// Command line: `vigil serve`, `vigil policy check`.
pub mod cli;
/// `vigil.toml` and its defaults; what an operator can set.
pub mod config;
/// The shared tick: pings, pong deadlines, batched policy assessment.
pub mod heartbeat;
/// Shared state of the running host and the operations spanning sessions.
pub mod hub;
/// Prometheus metrics.
pub mod metrics;
/// The "sessions grow while nothing comes in" alarm.
pub mod monitor;
/// The OneBot v11 forward-WebSocket profile: `/`, `/event`, `/api`.
pub mod onebot;
/// The policy runtime: loading plugins into the wasmtime sandbox, calling them
/// under limits, and falling back to the native default policy on faults.
pub mod policy;
/// Live sessions by id and by client identity.
pub mod registry;
/// When each session next needs the shared tick.
pub mod schedule;
/// The HTTP server: WebSocket upgrade, JSON API, metrics, shutdown.
pub mod server;
/// One session: its state, bounded queue, and the task owning its socket.
pub mod session;
/// Socket options on accept and `TCP_INFO`.
pub mod tcp;
/// Reloading the policy when its file changes (`--watch`).
pub mod watch;

pub use vigil_policy_sdk as sdk;

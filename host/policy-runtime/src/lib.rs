//! Vigil's policy runtime: everything about running policy plugins. The
//! session host hands in session facts and events and gets verdicts back; no
//! wasmtime type crosses this crate's boundary, and the crate knows nothing
//! of HTTP, axum or sockets (it does not depend on them: the crate graph
//! keeps both rules, see ARCHITECTURE.md).
//!
//! - [`sandbox`]: wasmtime engine, component loading, one sandboxed instance.
//! - [`columns`]: a batch's facts and verdicts, column by column, as the
//!   contract carries them.
//! - `exports`: a plugin's exports, whichever contract version it was
//!   built for (0.3.0, or 0.2.0 and 0.1.0 still loaded).
//! - [`compile_cache`]: compiled plugins on disk, checked before use.
//! - [`limits`]: the deadline, memory and instance caps a plugin runs under.
//! - `watchdog`: enforces call deadlines, asleep while no call runs.
//! - [`batching`]: how many sessions one guest call carries.
//! - [`output`]: where a plugin's log lines and stdout/stderr go.
//! - [`fault`]: how a plugin call can fail.
//! - [`clock`]: the host-driven clock and seeded randomness plugins see.
//! - [`json`]: the contract's types as JSON, for reports and APIs.
//! - [`contract`]: checks that a plugin's answers make sense for the batch.
//! - [`supervisor`]: faults, fallback verdicts, re-instantiation, disabling.
//! - [`worker`]: the thread that owns the plugins, and its async handle;
//!   swaps, rollback and shadow happen there, between batches.
//! - [`thread`]: guest work on a plain thread, awaited from async code.
//! - [`swap`]: validating a candidate before it may replace the running one.
//! - [`shadow`]: running a candidate beside the active policy and comparing.
//! - [`scenarios`]: the built-in table behind `vigil policy check`.
//! - [`scenario_file`]: `vigil policy test`, scenario files with expectations.
//! - [`trace`]: recorded traces of the active policy's calls, read safely.
//! - [`recorder`]: recording them, off the policy thread.
//! - [`replay`]: `vigil policy replay`, a candidate run over a trace.

pub mod batching;
mod bindings;
pub mod clock;
pub mod columns;
pub mod compile_cache;
pub mod contract;
mod convert;
mod exports;
pub mod fault;
pub mod json;
pub mod limits;
pub mod output;
pub mod recorder;
pub mod replay;
pub mod sandbox;
pub mod scenario_file;
pub mod scenarios;
pub mod shadow;
pub mod supervisor;
pub mod swap;
pub mod thread;
pub mod trace;
mod watchdog;
pub mod worker;

/// The plugin-facing types, shared with plugins written in Rust.
pub use vigil_policy_sdk as sdk;

pub use columns::{SessionColumns, VerdictColumns};
pub use contract::ContractViolation;
pub use limits::SandboxLimits;
pub use sandbox::{LoadError, PluginSource, PolicyEngine, Sandbox};
pub use shadow::Shadow;
pub use supervisor::{
    AssessOutcome, FaultKind, PolicyState, PolicyStats, Supervisor, SupervisorConfig, VerdictSource,
};
pub use swap::{validate_off_runtime, RejectedCandidate, Validated};
pub use vigil_policy_sdk::{
    Action, Event, EventKind, Eviction, FrameKind, SessionFacts, SessionId, TcpFacts, Tier, Verdict,
};
pub use worker::{ChangeError, PluginReport, PolicyHandle, PolicyOverview};

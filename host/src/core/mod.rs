//! The session host: sessions, their liveness, the shared tick, and the
//! policy runtime's handle. Everything above it — the HTTP API, the admin
//! API, profiles, start-up — goes through [`SessionHost`]. Nothing in here
//! names a profile or routes HTTP requests (a test in `tests/layers.rs`
//! checks it), and the modules here import each other without a cycle:
//!
//! `config`, `classes`, `prefetch`, `schedule`, `tcp`, `tcp_io`, `write_gate`, `event_buffer` ←
//! `inbound` ← `session` ← `registry` ← `census`, `removals`, `metrics`,
//! `hub` ← `monitor`, `tick` ← `host`, `policy_changes`.

/// Sessions per tier and class, and the spread of health, now.
pub mod census;
/// Client class names, one copy each for the sessions that name them.
mod classes;
/// Close codes the host itself uses.
pub mod close_codes;
/// The core's settings, section by section.
pub mod config;
/// Events on their way to the policy, between ticks.
mod event_buffer;
/// Queued messages written straight to the socket by whoever queued them.
mod flush;
/// The public handle: accept, publish, list, evict, shut down.
mod host;
/// Shared state behind the public handle; private to the core.
mod hub;
/// The budget for inbound bytes held in unfinished messages.
pub mod inbound;
/// Prometheus metrics, one registry per host.
pub mod metrics;
/// The "sessions grow while nothing comes in" alarm.
pub mod monitor;
/// The seam a cluster hears of this node's sessions through.
pub mod observer;
/// Swap, rollback, shadow and promotion of the running policy.
mod policy_changes;
/// Starting the loads of memory the tick is about to touch.
mod prefetch;
/// Recording the active policy's calls into a trace.
mod recording;
/// Live sessions by id and by client identity, and their schedule.
mod registry;
/// The last removals, whole: session, peer, reason, tier, close code.
pub mod removals;
/// When each session next needs the shared tick.
mod schedule;
/// One session: state machine, outbound queue, socket task.
pub mod session;
/// Socket options on accept and `TCP_INFO`.
pub mod tcp;
/// Accepted connections, read without a wasted `recv` per frame burst.
pub mod tcp_io;
/// The shared tick: pings, pong deadlines, batched policy assessment.
pub mod tick;
/// Who may write to a socket: the session's task, or the tick, one ping.
pub mod write_gate;

pub use host::{
    AcceptError, DataHandler, EndpointSpec, SessionHost, SessionPage, SessionQuery, SessionView,
};
pub use hub::{PublishReport, Target, DRY_RUN_SESSIONS, REASSESS_SPREAD_TICKS};
pub use policy_changes::SwapReport;
pub use recording::RecordingError;
pub use session::queue::Enqueued;
pub use session::Endpoint;

//! The HTTP layer above the core: the public API (`/ws`, `/publish`,
//! `/sessions`, `/metrics`, `/healthz`), the admin API on its own listener,
//! the token check they share, and the error answers.

/// The admin API: policy swap, rollback and shadow.
pub mod admin;
/// The public API's routes.
pub mod api;
/// Bearer tokens, API keys and client identities, checked before any upgrade.
pub mod auth;
/// `[api]` and `[auth]`.
pub mod config;
/// The operator dashboard on the admin listener.
pub mod dashboard;
/// Error answers.
pub mod error;
/// Client JWTs.
pub mod jwt;
/// Per-source-IP connection limits.
pub mod limits;
/// The real client behind a trusted proxy.
pub mod peer;
/// The public listener's accept loop: handshake bounds, limits, TLS.
pub mod serve;
/// Native `wss://`, with certificate reload.
pub mod tls;

pub use error::AppError;

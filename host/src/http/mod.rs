//! The HTTP layer above the core: the public API (`/ws`, `/publish`,
//! `/sessions`, `/metrics`, `/healthz`), the admin API on its own listener,
//! the token check they share, and the error answers.

/// The admin API: policy swap, rollback and shadow.
pub mod admin;
/// The public API's routes.
pub mod api;
/// Bearer tokens, checked before any upgrade.
pub mod auth;
/// Error answers.
pub mod error;

pub use error::AppError;

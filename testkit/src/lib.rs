//! Integration tests for Vigil policy plugins, in your own crate: start a
//! real host in the test process with your plugin, connect clients that
//! behave like dead and dying ones, swap, shadow and roll back policies,
//! and assert what the host did — every wait bounded in time.
//!
//! ```no_run
//! use std::time::Duration;
//! use vigil_testkit::{Ending, TestHost};
//!
//! # async fn example() -> Result<(), vigil_testkit::KitError> {
//! let wasm = std::fs::read("target/wasm32-wasip2/release/my_policy.wasm").unwrap_or_default();
//! let host = TestHost::start(&wasm, "{}").await?;
//! let client = host.connect().await?;
//! client.answer_pings(false)?; // reads, but never answers a ping
//! assert_eq!(host.until_evicted(client.session_id()).await?, "pong-timeout");
//! assert!(matches!(client.until_closed().await?, Ending::Closed { code: 4000, .. }));
//! host.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! - [`TestHost`]: the host, on a free loopback port, with
//!   [`test_config`]'s timings (a dead client is found in about two
//!   seconds); [`TestHost::swap`], [`TestHost::shadow`],
//!   [`TestHost::promote`], [`TestHost::rollback`];
//!   [`TestHost::until_evicted`], [`TestHost::until_sessions`];
//!   [`TestHost::sessions`], [`TestHost::metrics`].
//! - [`Client`]: a scripted client — answers pings or not, stops reading,
//!   freezes, sends at a rate, closes with a code, drops or resets its
//!   TCP connection.
//! - [`plugins`]: Vigil's own example policies, to swap against.
//!
//! Every call that waits gives up after the host's timeout (10 s unless
//! [`TestHostBuilder::timeout`] says otherwise) with [`KitError::Timeout`],
//! so a broken policy fails a test rather than hanging it.

mod client;
mod error;
mod frames;
mod host;
mod metrics;
mod wait;

pub use client::{Client, Ending};
pub use error::KitError;
pub use host::{test_config, TestHost, TestHostBuilder, DEFAULT_TIMEOUT};
pub use metrics::Metrics;
pub use vigil::config::VigilConfig;

/// Vigil's own policies, built from `plugins/`, as component bytes.
pub mod plugins {
    /// Per-class quotas under capacity pressure.
    pub use vigil_plugin_artifacts::test_plugins::CAPACITY;
    /// Never evicts a session that answers pings for silence alone.
    pub use vigil_plugin_artifacts::test_plugins::LENIENT;
    /// Evicts at the first sign of trouble.
    pub use vigil_plugin_artifacts::test_plugins::STRICT;
    /// The default policy (what `vigil serve` runs without `--policy`).
    pub use vigil_plugin_artifacts::DEFAULT_POLICY;
}

// The test-kit example of `plugins/README.md` runs as a doctest of this
// crate, so the page's code cannot drift from the kit.
#[doc = include_str!("../../plugins/README.md")]
mod plugins_readme {}

//! What can go wrong in a test, named so a failing test says why.

use std::time::Duration;

/// An error from the test kit. Every await in the kit is bounded, so a
/// test that would hang fails with [`KitError::Timeout`] instead.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The host did not start (bad config, plugin refused, port).
    #[error("the host did not start: {0}")]
    Start(String),
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the kit was doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The WebSocket upgrade was refused or malformed.
    #[error("the WebSocket handshake failed: {0}")]
    Handshake(String),
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the kit waited.
        after: Duration,
    },
    /// A candidate policy was rejected (it did not load, faulted in its
    /// dry run, or broke the contract).
    #[error("the candidate policy was rejected: {0}")]
    Rejected(String),
    /// A policy change was refused (no previous policy, no shadow).
    #[error("the policy change was refused: {0}")]
    Refused(String),
    /// The client's connection is gone, so it cannot do what was asked.
    #[error("the client's connection is closed")]
    Disconnected,
    /// The kit needs the host's session observer, which cluster mode uses.
    #[error("the test kit runs single-node hosts; leave [cluster] out of the config")]
    ClusterMode,
}

impl KitError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> KitError {
        move |source| KitError::Io { what, source }
    }
}

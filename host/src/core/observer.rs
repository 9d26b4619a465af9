//! The seam through which the rest of a cluster hears of this node's
//! sessions: the core calls an observer, when one is installed, as sessions
//! open and leave. Single-node mode installs none, and pays nothing; the
//! test kit (`vigil-testkit`) installs one to learn sessions' ids and
//! removal reasons.

use vigil_policy_runtime::SessionId;

/// A session as the observer hears of it when it opens.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    /// The node-local id.
    pub id: SessionId,
    /// The client's address (after a trusted proxy's `X-Forwarded-For`).
    pub peer: std::net::SocketAddr,
    /// The client's identity, if any.
    pub identity: Option<String>,
    /// Whether it was proven by a token.
    pub identity_proven: bool,
}

/// Told of every session that opens or leaves this node. Called on the
/// session's path (admission, removal), so it must not block: queue the
/// work.
pub trait SessionObserver: Send + Sync + 'static {
    /// A session was admitted.
    fn opened(&self, session: &OpenedSession);
    /// A session left (evicted, closed, failed), for `reason`.
    fn closed(&self, id: SessionId, identity: Option<&str>, reason: &str);
}

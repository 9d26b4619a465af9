//! Cluster mode: several Vigil nodes behind a load balancer serve one set of
//! sessions, over Redis. Each node keeps serving, pinging and evicting its
//! own sessions whatever Redis does; Redis carries what crosses nodes —
//! publishes, listings, evictions, identities — and each node's heartbeat.
//! Without `[cluster] redis_url` none of this runs.

/// `[cluster]`.
pub mod config;
/// One node's membership: heartbeat, subscription, requests, identities.
pub mod node;
/// The messages nodes exchange.
pub mod wire;

pub use config::ClusterConfig;
pub use node::{ClusterMetrics, ClusterNode, ClusterPage, ClusterPublish, ClusterTarget};

//! `[cluster]`: several Vigil nodes serving one set of sessions over Redis.

use serde::Deserialize;

/// `[cluster]`. Without `redis_url` the host runs alone, as before.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis every node shares, `redis://host:port[/db]`. Default none:
    /// single-node mode.
    pub redis_url: Option<String>,
    /// This node's name, unique in the cluster; letters, digits, `-`, `_`.
    /// Default: generated at start (`node-` and random hex).
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a
    /// Redis. Default `vigil`.
    pub key_prefix: String,
    /// How long a cross-node request (publish, list, evict) waits for the
    /// other nodes' answers, ms; a node silent past it is `unreachable`.
    /// Default 1 000.
    pub request_timeout_ms: u64,
    /// How long a node's heartbeat lives in Redis, ms: a node silent this
    /// long is dead to the others. Default 5 000 (heartbeats every fifth
    /// of it).
    pub node_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            key_prefix: "vigil".to_owned(),
            request_timeout_ms: 1_000,
            node_ttl_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str())
                .map_err(|error| anyhow::anyhow!("[cluster] redis_url `{url}`: {error}"))?;
        }
        if let Some(node) = &self.node_id {
            let valid = !node.is_empty()
                && node.len() <= 64
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                anyhow::bail!("[cluster] node_id `{node}` must be 1 to 64 letters, digits, `-` or `_` (it is part of every session id)");
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            anyhow::bail!("[cluster] key_prefix must be non-empty and without spaces");
        }
        if self.request_timeout_ms == 0 || self.node_ttl_ms < 1_000 || self.node_ttl_ms > 10_000 {
            anyhow::bail!("[cluster] request_timeout_ms must be above 0 and node_ttl_ms between 1 000 and 10 000 (a dead node must leave within 10 s)");
        }
        Ok(())
    }
}

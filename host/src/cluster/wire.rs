//! What nodes say to each other over Redis pub/sub: requests (publish,
//! list, get, evict, supersede), their replies, and probes. JSON, one
//! message per envelope.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::PublishReport;

/// Whom a publish is for, on the node that receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireTarget {
    /// Every session.
    All,
    /// These node-local ids.
    Ids(Vec<u64>),
    /// The session of an identity.
    Identity(String),
    /// Every session of a class.
    Class(String),
}

/// A request to one node or to all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Deliver `data` to the target's local sessions.
    Publish {
        /// Whom.
        target: WireTarget,
        /// The message's text.
        data: String,
    },
    /// A page of local sessions, after `after` in cluster order.
    List {
        /// Only this class.
        class: Option<String>,
        /// Only this tier.
        tier: Option<String>,
        /// Node-local ids above this, when the cursor is on this node.
        after_id: Option<u64>,
        /// At most this many.
        limit: usize,
        /// Only sessions mentioning this text (absent from older nodes).
        #[serde(default)]
        search: Option<String>,
    },
    /// One local session.
    Get {
        /// Node-local id.
        id: u64,
    },
    /// Evict a local session.
    Evict {
        /// Node-local id.
        id: u64,
        /// Why.
        reason: String,
        /// Close code.
        code: u16,
    },
}

/// A node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Reply {
    /// What the node's publish did.
    Published {
        /// Its counts.
        report: PublishReport,
    },
    /// A page of its sessions.
    Listed {
        /// Matching sessions on the node.
        count: usize,
        /// The page, as the API shows sessions.
        sessions: Vec<Value>,
    },
    /// One session, if it is there.
    Got {
        /// The session, as the API shows it.
        session: Option<Value>,
    },
    /// Whether the eviction found the session.
    Evicted {
        /// Found and evicted.
        evicted: bool,
    },
}

/// One message on a channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Envelope {
    /// A request; answered to `from`'s channel with the same `id`.
    Request {
        /// Correlates the replies.
        id: u64,
        /// The asking node.
        from: String,
        /// What is asked.
        request: Request,
    },
    /// A reply to request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answering node.
        from: String,
        /// The answer.
        reply: Reply,
    },
    /// Evict the named local session: its identity moved to another node.
    Supersede {
        /// Node-local id.
        id: u64,
        /// The node the identity moved to.
        by: String,
    },
    /// A node's probe of its own subscription: it must come back.
    Probe {
        /// Increasing per probe.
        seq: u64,
    },
}

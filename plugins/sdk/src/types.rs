//! Plain Rust mirrors of the `vigil:policy` WIT types.
//!
//! Policy logic written against these types compiles both to a wasm component
//! (through the glue in [`crate::guest`]) and natively, which is how the host
//! runs the default policy as its fallback without a second copy of the logic.
//! Field meanings and units are documented once, in `wit/policy.wit`.
//!
//! With the `serde` feature, every type is (de)serializable, in the shape
//! recorded traces use (`vigil policy replay`): snake_case fields, tiers
//! and actions by their WIT names, events tagged by `type`.

use std::sync::Arc;

/// Identifies a session for its whole life; never reused while the host runs.
pub type SessionId = u64;

/// How closely the host watches a session (`tier` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Tier {
    /// Frequent probes, short pong timeout: sessions the policy distrusts.
    Fast,
    /// The usual heartbeat.
    Regular,
    /// Infrequent probes for clients that answer pings but are otherwise quiet.
    KeepAlive,
}

impl Tier {
    /// The tier's code in the contract's `tier` columns (0.3.0 on): `fast`
    /// 0, `regular` 1, `keep-alive` 2. Integers, not a WIT enum, so a
    /// column of them crosses the component boundary in one copy.
    pub const fn code(self) -> u8 {
        match self {
            Tier::Fast => 0,
            Tier::Regular => 1,
            Tier::KeepAlive => 2,
        }
    }

    /// The tier a contract code stands for; `None` for a code no tier has.
    pub const fn from_code(code: u8) -> Option<Tier> {
        match code {
            0 => Some(Tier::Fast),
            1 => Some(Tier::Regular),
            2 => Some(Tier::KeepAlive),
            _ => None,
        }
    }

    /// The name used in WIT, configuration and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Regular => "regular",
            Tier::KeepAlive => "keep-alive",
        }
    }
}

/// Kernel TCP figures from `TCP_INFO` (`tcp-facts` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)] // documented field by field in the WIT
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TcpFacts {
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub total_retransmits: u32,
    pub unacked: u32,
    pub last_data_recv_ms: u32,
}

/// Everything the host knows about one session (`session-facts` in the WIT).
///
/// `client_class` is shared (`Arc<str>`): sessions of one class point at one
/// string, on the host and in the plugin, so building a batch allocates
/// nothing per session for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // documented field by field in the WIT
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionFacts {
    pub id: SessionId,
    pub client_class: Arc<str>,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub app_idle_ms: u64,
    pub since_pong_ms: Option<u64>,
    pub outstanding_pings: u32,
    pub oldest_ping_ms: Option<u64>,
    pub pong_overdue: bool,
    pub last_rtt_ms: Option<u32>,
    pub send_errors: u32,
    pub transport_errors: u32,
    pub queued_bytes: u64,
    pub queued_frames: u32,
    pub backlog_ms: u64,
    pub dropped_frames: u32,
    pub tier: Tier,
    pub tcp: Option<TcpFacts>,
}

impl SessionFacts {
    /// A session that was just accepted and has done nothing yet; a starting
    /// point for tests and scenarios, which then set what they need.
    pub fn new(id: SessionId, client_class: impl Into<Arc<str>>) -> Self {
        SessionFacts {
            id,
            client_class: client_class.into(),
            age_ms: 0,
            idle_ms: 0,
            app_idle_ms: 0,
            since_pong_ms: None,
            outstanding_pings: 0,
            oldest_ping_ms: None,
            pong_overdue: false,
            last_rtt_ms: None,
            send_errors: 0,
            transport_errors: 0,
            queued_bytes: 0,
            queued_frames: 0,
            backlog_ms: 0,
            dropped_frames: 0,
            tier: Tier::Fast,
            tcp: None,
        }
    }
}

/// WebSocket frame types (`frame-kind` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum FrameKind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// What happened (`event-kind` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // documented case by case in the WIT
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "kebab-case"))]
pub enum EventKind {
    Connected {
        session: SessionId,
        client_class: String,
    },
    FrameReceived {
        session: SessionId,
        kind: FrameKind,
        size_bytes: u32,
    },
    FrameSent {
        session: SessionId,
        kind: FrameKind,
        size_bytes: u32,
    },
    PingSent {
        session: SessionId,
    },
    PongReceived {
        session: SessionId,
        rtt_ms: u32,
    },
    SendFailed {
        session: SessionId,
        detail: String,
    },
    Backpressure {
        session: SessionId,
        queued_bytes: u64,
    },
    TransportError {
        session: SessionId,
        detail: String,
    },
    CloseReceived {
        session: SessionId,
        code: u16,
    },
    Removed {
        session: SessionId,
        reason: String,
    },
    Tick,
}

impl EventKind {
    /// The session the event is about; `None` for [`EventKind::Tick`].
    pub fn session(&self) -> Option<SessionId> {
        match self {
            EventKind::Connected { session, .. }
            | EventKind::FrameReceived { session, .. }
            | EventKind::FrameSent { session, .. }
            | EventKind::PingSent { session }
            | EventKind::PongReceived { session, .. }
            | EventKind::SendFailed { session, .. }
            | EventKind::Backpressure { session, .. }
            | EventKind::TransportError { session, .. }
            | EventKind::CloseReceived { session, .. }
            | EventKind::Removed { session, .. } => Some(*session),
            EventKind::Tick => None,
        }
    }
}

/// One event and when it happened (`event` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// Host monotonic clock, ms (the clock of `now_ms`).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Why and how to close an evicted session (the `reason-index` and
/// `close-code` of a `verdict-batch` row in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Eviction {
    /// Short machine-friendly reason, used in metrics labels and close
    /// frames. Shared, not owned: a policy that keeps its reasons (see
    /// [`Eviction::new`]) hands out the same string to every eviction, and
    /// the WIT carries each distinct reason once per answer.
    pub reason: Arc<str>,
    /// WebSocket close code; see [`is_valid_close_code`].
    pub close_code: u16,
}

impl Eviction {
    /// An eviction for `reason`, closing with `close_code`. Pass an
    /// `Arc<str>` the policy keeps to share one string between evictions;
    /// a `&str` is copied into a new one.
    pub fn new(reason: impl Into<Arc<str>>, close_code: u16) -> Self {
        Eviction {
            reason: reason.into(),
            close_code,
        }
    }
}

/// What the host should do with a session now (`action` in the WIT, with
/// the eviction's columns).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Action {
    /// Leave it as it is.
    Keep,
    /// Send a WebSocket ping now.
    Ping,
    /// Close it.
    Evict(Eviction),
}

/// The codes of the contract's `action` column (0.3.0 on), integers for
/// the reason [`Tier::code`] gives.
pub mod action_code {
    /// [`super::Action::Keep`].
    pub const KEEP: u8 = 0;
    /// [`super::Action::Ping`].
    pub const PING: u8 = 1;
    /// [`super::Action::Evict`], with its reason and close code in their
    /// own columns.
    pub const EVICT: u8 = 2;
}

impl Action {
    /// The action's code in the contract's `action` column.
    pub fn code(&self) -> u8 {
        match self {
            Action::Keep => action_code::KEEP,
            Action::Ping => action_code::PING,
            Action::Evict(_) => action_code::EVICT,
        }
    }

    /// The name used in reports and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Ping => "ping",
            Action::Evict(_) => "evict",
        }
    }
}

/// The policy's decision about one session (one row of `verdict-batch` in
/// the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // documented field by field in the WIT
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Verdict {
    pub session: SessionId,
    pub health: u8,
    pub tier: Tier,
    pub action: Action,
    pub reassess_in_ms: u32,
}

/// Severity of a plugin log line (`level` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Close codes a policy may put in an eviction: the ones RFC 6455 allows an
/// endpoint to send that make sense for a server closing a session, plus the
/// registered and private application ranges.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 1008 | 1011 | 1013 | 3000..=4999)
}

/// The most bytes of a close reason that fit in a WebSocket close frame.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

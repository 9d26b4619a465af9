//! The wasm side of the SDK: WIT bindings and conversions between the
//! generated types and the plain ones in [`crate::types`]. Used through
//! [`crate::export_policy!`]; nothing here is meant to be called directly.

use crate::types::*;

#[allow(missing_docs, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "vigil_policy_sdk::guest::bindings",
        runtime_path: "vigil_policy_sdk::guest::wit_bindgen::rt",
    });
}

pub use wit_bindgen;

use bindings::vigil::policy::log as wit_log;
use bindings::vigil::policy::types as wit;

pub use bindings::exports::vigil::policy::policy::Guest;
pub use wit::Event as WitEvent;
pub use wit::SessionFacts as WitSessionFacts;
pub use wit::Verdict as WitVerdict;

pub(crate) fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Trace => wit_log::Level::Trace,
        LogLevel::Debug => wit_log::Level::Debug,
        LogLevel::Info => wit_log::Level::Info,
        LogLevel::Warn => wit_log::Level::Warn,
        LogLevel::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

fn tier_from_wit(tier: wit::Tier) -> Tier {
    match tier {
        wit::Tier::Fast => Tier::Fast,
        wit::Tier::Regular => Tier::Regular,
        wit::Tier::KeepAlive => Tier::KeepAlive,
    }
}

fn tier_to_wit(tier: Tier) -> wit::Tier {
    match tier {
        Tier::Fast => wit::Tier::Fast,
        Tier::Regular => wit::Tier::Regular,
        Tier::KeepAlive => wit::Tier::KeepAlive,
    }
}

fn frame_kind_from_wit(kind: wit::FrameKind) -> FrameKind {
    match kind {
        wit::FrameKind::Text => FrameKind::Text,
        wit::FrameKind::Binary => FrameKind::Binary,
        wit::FrameKind::Ping => FrameKind::Ping,
        wit::FrameKind::Pong => FrameKind::Pong,
        wit::FrameKind::Close => FrameKind::Close,
    }
}

#[doc(hidden)]
pub fn facts_from_wit(sessions: Vec<wit::SessionFacts>) -> Vec<SessionFacts> {
    sessions
        .into_iter()
        .map(|f| SessionFacts {
            id: f.id,
            client_class: f.client_class,
            age_ms: f.age_ms,
            idle_ms: f.idle_ms,
            app_idle_ms: f.app_idle_ms,
            since_pong_ms: f.since_pong_ms,
            outstanding_pings: f.outstanding_pings,
            oldest_ping_ms: f.oldest_ping_ms,
            pong_overdue: f.pong_overdue,
            last_rtt_ms: f.last_rtt_ms,
            send_errors: f.send_errors,
            transport_errors: f.transport_errors,
            queued_bytes: f.queued_bytes,
            queued_frames: f.queued_frames,
            backlog_ms: f.backlog_ms,
            dropped_frames: f.dropped_frames,
            tier: tier_from_wit(f.tier),
            tcp: f.tcp.map(|t| TcpFacts {
                rtt_us: t.rtt_us,
                rttvar_us: t.rttvar_us,
                total_retransmits: t.total_retransmits,
                unacked: t.unacked,
                last_data_recv_ms: t.last_data_recv_ms,
            }),
        })
        .collect()
}

#[doc(hidden)]
pub fn events_from_wit(events: Vec<wit::Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| Event {
            at_ms: e.at_ms,
            kind: match e.kind {
                wit::EventKind::Connected(c) => EventKind::Connected {
                    session: c.session,
                    client_class: c.client_class,
                },
                wit::EventKind::FrameReceived(f) => EventKind::FrameReceived {
                    session: f.session,
                    kind: frame_kind_from_wit(f.kind),
                    size_bytes: f.size_bytes,
                },
                wit::EventKind::FrameSent(f) => EventKind::FrameSent {
                    session: f.session,
                    kind: frame_kind_from_wit(f.kind),
                    size_bytes: f.size_bytes,
                },
                wit::EventKind::PingSent(session) => EventKind::PingSent { session },
                wit::EventKind::PongReceived(p) => EventKind::PongReceived {
                    session: p.session,
                    rtt_ms: p.rtt_ms,
                },
                wit::EventKind::SendFailed(f) => EventKind::SendFailed {
                    session: f.session,
                    detail: f.detail,
                },
                wit::EventKind::Backpressure(b) => EventKind::Backpressure {
                    session: b.session,
                    queued_bytes: b.queued_bytes,
                },
                wit::EventKind::TransportError(f) => EventKind::TransportError {
                    session: f.session,
                    detail: f.detail,
                },
                wit::EventKind::CloseReceived(c) => EventKind::CloseReceived {
                    session: c.session,
                    code: c.code,
                },
                wit::EventKind::Removed(r) => EventKind::Removed {
                    session: r.session,
                    reason: r.reason,
                },
                wit::EventKind::Tick => EventKind::Tick,
            },
        })
        .collect()
}

#[doc(hidden)]
pub fn verdicts_to_wit(verdicts: Vec<Verdict>) -> Vec<wit::Verdict> {
    verdicts
        .into_iter()
        .map(|v| wit::Verdict {
            session: v.session,
            health: v.health,
            tier: tier_to_wit(v.tier),
            action: match v.action {
                Action::Keep => wit::Action::Keep,
                Action::Ping => wit::Action::Ping,
                Action::Evict(e) => wit::Action::Evict(wit::Eviction {
                    reason: e.reason,
                    close_code: e.close_code,
                }),
            },
            reassess_in_ms: v.reassess_in_ms,
        })
        .collect()
}

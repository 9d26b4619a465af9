//! Between the SDK's plain types (what the host and the native fallback use)
//! and the types wasmtime's bindgen generated for the WIT contract. Facts are
//! lent, not copied: the class strings are borrowed for the call.

use vigil_policy_sdk::{
    Action, Event, EventKind, Eviction, FrameKind, SessionFacts, Tier, Verdict,
};

use super::sandbox::wit_types as wit;

fn tier_to_wit(tier: Tier) -> wit::Tier {
    match tier {
        Tier::Fast => wit::Tier::Fast,
        Tier::Regular => wit::Tier::Regular,
        Tier::KeepAlive => wit::Tier::KeepAlive,
    }
}

fn tier_from_wit(tier: wit::Tier) -> Tier {
    match tier {
        wit::Tier::Fast => Tier::Fast,
        wit::Tier::Regular => Tier::Regular,
        wit::Tier::KeepAlive => Tier::KeepAlive,
    }
}

fn frame_kind_to_wit(kind: FrameKind) -> wit::FrameKind {
    match kind {
        FrameKind::Text => wit::FrameKind::Text,
        FrameKind::Binary => wit::FrameKind::Binary,
        FrameKind::Ping => wit::FrameKind::Ping,
        FrameKind::Pong => wit::FrameKind::Pong,
        FrameKind::Close => wit::FrameKind::Close,
    }
}

pub(crate) fn facts_to_wit(sessions: &[SessionFacts]) -> Vec<wit::SessionFacts<'_>> {
    sessions
        .iter()
        .map(|f| wit::SessionFacts {
            id: f.id,
            client_class: &f.client_class,
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
            tier: tier_to_wit(f.tier),
            tcp: f.tcp.map(|t| wit::TcpFacts {
                rtt_us: t.rtt_us,
                rttvar_us: t.rttvar_us,
                total_retransmits: t.total_retransmits,
                unacked: t.unacked,
                last_data_recv_ms: t.last_data_recv_ms,
            }),
        })
        .collect()
}

pub(crate) fn events_to_wit(events: &[Event]) -> Vec<wit::Event<'_>> {
    events
        .iter()
        .map(|e| wit::Event {
            at_ms: e.at_ms,
            kind: match &e.kind {
                EventKind::Connected {
                    session,
                    client_class,
                } => wit::EventKind::Connected(wit::ConnectedEvent {
                    session: *session,
                    client_class,
                }),
                EventKind::FrameReceived {
                    session,
                    kind,
                    size_bytes,
                } => wit::EventKind::FrameReceived(wit::FrameEvent {
                    session: *session,
                    kind: frame_kind_to_wit(*kind),
                    size_bytes: *size_bytes,
                }),
                EventKind::FrameSent {
                    session,
                    kind,
                    size_bytes,
                } => wit::EventKind::FrameSent(wit::FrameEvent {
                    session: *session,
                    kind: frame_kind_to_wit(*kind),
                    size_bytes: *size_bytes,
                }),
                EventKind::PingSent { session } => wit::EventKind::PingSent(*session),
                EventKind::PongReceived { session, rtt_ms } => {
                    wit::EventKind::PongReceived(wit::PongEvent {
                        session: *session,
                        rtt_ms: *rtt_ms,
                    })
                }
                EventKind::SendFailed { session, detail } => {
                    wit::EventKind::SendFailed(wit::FailureEvent {
                        session: *session,
                        detail,
                    })
                }
                EventKind::Backpressure {
                    session,
                    queued_bytes,
                } => wit::EventKind::Backpressure(wit::BackpressureEvent {
                    session: *session,
                    queued_bytes: *queued_bytes,
                }),
                EventKind::TransportError { session, detail } => {
                    wit::EventKind::TransportError(wit::FailureEvent {
                        session: *session,
                        detail,
                    })
                }
                EventKind::CloseReceived { session, code } => {
                    wit::EventKind::CloseReceived(wit::CloseEvent {
                        session: *session,
                        code: *code,
                    })
                }
                EventKind::Removed { session, reason } => {
                    wit::EventKind::Removed(wit::RemovedEvent {
                        session: *session,
                        reason,
                    })
                }
                EventKind::Tick => wit::EventKind::Tick,
            },
        })
        .collect()
}

pub(crate) fn verdicts_from_wit(verdicts: Vec<wit::Verdict>) -> Vec<Verdict> {
    verdicts
        .into_iter()
        .map(|v| Verdict {
            session: v.session,
            health: v.health,
            tier: tier_from_wit(v.tier),
            action: match v.action {
                wit::Action::Keep => Action::Keep,
                wit::Action::Ping => Action::Ping,
                wit::Action::Evict(e) => Action::Evict(Eviction {
                    reason: e.reason,
                    close_code: e.close_code,
                }),
            },
            reassess_in_ms: v.reassess_in_ms,
        })
        .collect()
}

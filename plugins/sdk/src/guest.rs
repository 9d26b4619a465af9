//! The wasm side of the SDK: WIT bindings and conversions between the
//! generated types and the plain ones in [`crate::types`]. Used through
//! [`crate::export_policy!`]; nothing here is meant to be called directly.

use std::sync::Arc;

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
pub use wit::SessionBatch as WitSessionBatch;
pub use wit::VerdictBatch as WitVerdictBatch;

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

fn frame_kind_from_wit(kind: wit::FrameKind) -> FrameKind {
    match kind {
        wit::FrameKind::Text => FrameKind::Text,
        wit::FrameKind::Binary => FrameKind::Binary,
        wit::FrameKind::Ping => FrameKind::Ping,
        wit::FrameKind::Pong => FrameKind::Pong,
        wit::FrameKind::Close => FrameKind::Close,
    }
}

/// Turns the batch's columns back into one record per session.
#[doc(hidden)]
pub fn facts_from_wit(batch: wit::SessionBatch) -> Vec<SessionFacts> {
    let classes: Vec<Arc<str>> = batch.classes.into_iter().map(Arc::from).collect();
    let unknown_class: Arc<str> = Arc::from("");
    let known_u64 = |value: u64| (value != u64::MAX).then_some(value);
    let known_u32 = |value: u32| (value != u32::MAX).then_some(value);
    // The host sends columns of equal length; should one be short, the
    // batch is cut to the shortest rather than read out of bounds.
    let len = [
        batch.id.len(),
        batch.class_index.len(),
        batch.age_ms.len(),
        batch.idle_ms.len(),
        batch.app_idle_ms.len(),
        batch.since_pong_ms.len(),
        batch.outstanding_pings.len(),
        batch.oldest_ping_ms.len(),
        batch.pong_overdue.len(),
        batch.last_rtt_ms.len(),
        batch.send_errors.len(),
        batch.transport_errors.len(),
        batch.queued_bytes.len(),
        batch.queued_frames.len(),
        batch.backlog_ms.len(),
        batch.dropped_frames.len(),
        batch.tier.len(),
        batch.tcp_rtt_us.len(),
        batch.tcp_rttvar_us.len(),
        batch.tcp_total_retransmits.len(),
        batch.tcp_unacked.len(),
        batch.tcp_last_data_recv_ms.len(),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    // Every column cut to `len` first, so indexing below needs no bounds
    // check per fact (the compiler sees each is `len` long).
    let id = &batch.id[..len];
    let class_index = &batch.class_index[..len];
    let age_ms = &batch.age_ms[..len];
    let idle_ms = &batch.idle_ms[..len];
    let app_idle_ms = &batch.app_idle_ms[..len];
    let since_pong_ms = &batch.since_pong_ms[..len];
    let outstanding_pings = &batch.outstanding_pings[..len];
    let oldest_ping_ms = &batch.oldest_ping_ms[..len];
    let pong_overdue = &batch.pong_overdue[..len];
    let last_rtt_ms = &batch.last_rtt_ms[..len];
    let send_errors = &batch.send_errors[..len];
    let transport_errors = &batch.transport_errors[..len];
    let queued_bytes = &batch.queued_bytes[..len];
    let queued_frames = &batch.queued_frames[..len];
    let backlog_ms = &batch.backlog_ms[..len];
    let dropped_frames = &batch.dropped_frames[..len];
    let tier = &batch.tier[..len];
    let tcp_rtt_us = &batch.tcp_rtt_us[..len];
    let tcp_rttvar_us = &batch.tcp_rttvar_us[..len];
    let tcp_total_retransmits = &batch.tcp_total_retransmits[..len];
    let tcp_unacked = &batch.tcp_unacked[..len];
    let tcp_last_data_recv_ms = &batch.tcp_last_data_recv_ms[..len];
    (0..len)
        .map(|i| SessionFacts {
            id: id[i],
            client_class: classes
                .get(class_index[i] as usize)
                .unwrap_or(&unknown_class)
                .clone(),
            age_ms: age_ms[i],
            idle_ms: idle_ms[i],
            app_idle_ms: app_idle_ms[i],
            since_pong_ms: known_u64(since_pong_ms[i]),
            outstanding_pings: outstanding_pings[i],
            oldest_ping_ms: (outstanding_pings[i] > 0).then_some(oldest_ping_ms[i]),
            pong_overdue: pong_overdue[i] != 0,
            last_rtt_ms: known_u32(last_rtt_ms[i]),
            send_errors: send_errors[i],
            transport_errors: transport_errors[i],
            queued_bytes: queued_bytes[i],
            queued_frames: queued_frames[i],
            backlog_ms: backlog_ms[i],
            dropped_frames: dropped_frames[i],
            // The host sends only the codes it defines.
            tier: Tier::from_code(tier[i]).unwrap_or(Tier::Fast),
            tcp: known_u32(tcp_rtt_us[i]).map(|rtt_us| TcpFacts {
                rtt_us,
                rttvar_us: tcp_rttvar_us[i],
                total_retransmits: tcp_total_retransmits[i],
                unacked: tcp_unacked[i],
                last_data_recv_ms: tcp_last_data_recv_ms[i],
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

/// The verdicts as the WIT's columns, each distinct eviction reason once
/// in `reasons`. Reasons are found by pointer first, so a policy that keeps
/// its reasons as `Arc<str>` pays no string comparison; a policy with a
/// handful of reasons (they are metrics labels) pays a short scan at most.
#[doc(hidden)]
pub fn verdicts_to_wit(verdicts: Vec<Verdict>) -> wit::VerdictBatch {
    let len = verdicts.len();
    let mut session = Vec::with_capacity(len);
    let mut health = Vec::with_capacity(len);
    let mut tier = Vec::with_capacity(len);
    let mut action = Vec::with_capacity(len);
    let mut reason_index = Vec::with_capacity(len);
    let mut close_code = Vec::with_capacity(len);
    let mut reassess_in_ms = Vec::with_capacity(len);
    let mut reasons: Vec<Arc<str>> = Vec::new();
    for verdict in verdicts {
        let (kind, reason, code) = match verdict.action {
            Action::Keep => (action_code::KEEP, 0, 0),
            Action::Ping => (action_code::PING, 0, 0),
            Action::Evict(eviction) => (
                action_code::EVICT,
                intern(&mut reasons, eviction.reason),
                eviction.close_code,
            ),
        };
        session.push(verdict.session);
        health.push(verdict.health);
        tier.push(verdict.tier.code());
        action.push(kind);
        reason_index.push(reason);
        close_code.push(code);
        reassess_in_ms.push(verdict.reassess_in_ms);
    }
    wit::VerdictBatch {
        reasons: reasons
            .iter()
            .map(|reason| String::from(&**reason))
            .collect(),
        session,
        health,
        tier,
        action,
        reason_index,
        close_code,
        reassess_in_ms,
    }
}

/// The index of `reason` in `reasons`, adding it if new.
fn intern(reasons: &mut Vec<Arc<str>>, reason: Arc<str>) -> u32 {
    let found = reasons
        .iter()
        .position(|known| Arc::ptr_eq(known, &reason) || **known == *reason);
    let index = found.unwrap_or_else(|| {
        reasons.push(reason);
        reasons.len() - 1
    });
    index as u32
}

//! The wasm side of the SDK: WIT bindings and conversions between the
//! generated types and the plain ones in [`crate::types`]. Used through
//! [`crate::export_policy!`]; nothing here is meant to be called directly.

use crate::batch::{FactColumns, VerdictWriter};
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

/// The batch's columns as a [`FactColumns`] view. The host sends columns
/// of equal length; should one be short, the batch is cut to the shortest
/// rather than read out of bounds.
fn fact_columns<'a>(batch: &'a wit::SessionBatch) -> FactColumns<'a> {
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
    FactColumns {
        len,
        classes: &batch.classes,
        id: &batch.id[..len],
        class_index: &batch.class_index[..len],
        age_ms: &batch.age_ms[..len],
        idle_ms: &batch.idle_ms[..len],
        app_idle_ms: &batch.app_idle_ms[..len],
        since_pong_ms: &batch.since_pong_ms[..len],
        outstanding_pings: &batch.outstanding_pings[..len],
        oldest_ping_ms: &batch.oldest_ping_ms[..len],
        pong_overdue: &batch.pong_overdue[..len],
        last_rtt_ms: &batch.last_rtt_ms[..len],
        send_errors: &batch.send_errors[..len],
        transport_errors: &batch.transport_errors[..len],
        queued_bytes: &batch.queued_bytes[..len],
        queued_frames: &batch.queued_frames[..len],
        backlog_ms: &batch.backlog_ms[..len],
        dropped_frames: &batch.dropped_frames[..len],
        tier: &batch.tier[..len],
        tcp_rtt_us: &batch.tcp_rtt_us[..len],
        tcp_rttvar_us: &batch.tcp_rttvar_us[..len],
        tcp_total_retransmits: &batch.tcp_total_retransmits[..len],
        tcp_unacked: &batch.tcp_unacked[..len],
        tcp_last_data_recv_ms: &batch.tcp_last_data_recv_ms[..len],
    }
}

/// Turns the batch's columns back into one record per session.
#[doc(hidden)]
pub fn facts_from_wit(batch: wit::SessionBatch) -> Vec<SessionFacts> {
    fact_columns(&batch).to_rows()
}

/// `assess` as the export calls it: the batch read in place, the answer
/// written in place ([`crate::Policy::assess_batch`]).
#[doc(hidden)]
pub fn assess(
    policy: &mut impl crate::Policy,
    now_ms: u64,
    batch: wit::SessionBatch,
) -> wit::VerdictBatch {
    let sessions = fact_columns(&batch);
    let mut verdicts = VerdictWriter::with_capacity(sessions.len());
    policy.assess_batch(now_ms, sessions, &mut verdicts);
    writer_to_wit(verdicts)
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
/// in `reasons`.
#[doc(hidden)]
pub fn verdicts_to_wit(verdicts: Vec<Verdict>) -> wit::VerdictBatch {
    let mut writer = VerdictWriter::with_capacity(verdicts.len());
    for verdict in &verdicts {
        writer.push_verdict(verdict);
    }
    writer_to_wit(writer)
}

/// The written answer as the WIT's record: the columns move, only the
/// reasons are copied.
fn writer_to_wit(writer: VerdictWriter) -> wit::VerdictBatch {
    wit::VerdictBatch {
        reasons: writer
            .reasons
            .iter()
            .map(|reason| String::from(&**reason))
            .collect(),
        session: writer.session,
        health: writer.health,
        tier: writer.tier,
        action: writer.action,
        reason_index: writer.reason_index,
        close_code: writer.close_code,
        reassess_in_ms: writer.reassess_in_ms,
    }
}

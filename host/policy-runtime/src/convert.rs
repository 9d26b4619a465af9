//! Between the SDK's plain types (what the host and the native fallback use)
//! and the types wasmtime's bindgen generated for the WIT contract (and, in
//! [`v0_1`], for the older version still loaded). Facts are lent, not
//! copied: the class strings are borrowed for the call.

use std::sync::Arc;

use vigil_policy_sdk::{
    Action, Event, EventKind, Eviction, FrameKind, SessionFacts, TcpFacts, Tier, Verdict,
};

use super::bindings::wit_types as wit;
use super::contract::ContractViolation;

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

/// The batch as the WIT carries it: each class once, then one column per
/// fact (see `session-batch` in the WIT for why columns).
pub(crate) struct WitBatch<'a> {
    classes: Vec<&'a str>,
    id: Vec<u64>,
    class_index: Vec<u32>,
    age_ms: Vec<u64>,
    idle_ms: Vec<u64>,
    app_idle_ms: Vec<u64>,
    since_pong_ms: Vec<u64>,
    outstanding_pings: Vec<u32>,
    oldest_ping_ms: Vec<u64>,
    pong_overdue: Vec<bool>,
    last_rtt_ms: Vec<u32>,
    send_errors: Vec<u32>,
    transport_errors: Vec<u32>,
    queued_bytes: Vec<u64>,
    queued_frames: Vec<u32>,
    backlog_ms: Vec<u64>,
    dropped_frames: Vec<u32>,
    tier: Vec<wit::Tier>,
    tcp_rtt_us: Vec<u32>,
    tcp_rttvar_us: Vec<u32>,
    tcp_total_retransmits: Vec<u32>,
    tcp_unacked: Vec<u32>,
    tcp_last_data_recv_ms: Vec<u32>,
}

/// The `session-batch` record of the bindings module `$wit`, lending the
/// columns of `$batch` with `$tier` as its tier column. Every contract
/// version carries the same record, so one list of fields serves them all.
macro_rules! lend_session_batch {
    ($wit:ident, $batch:expr, $tier:expr) => {{
        let batch = $batch;
        $wit::SessionBatch {
            classes: &batch.classes,
            id: &batch.id,
            class_index: &batch.class_index,
            age_ms: &batch.age_ms,
            idle_ms: &batch.idle_ms,
            app_idle_ms: &batch.app_idle_ms,
            since_pong_ms: &batch.since_pong_ms,
            outstanding_pings: &batch.outstanding_pings,
            oldest_ping_ms: &batch.oldest_ping_ms,
            pong_overdue: &batch.pong_overdue,
            last_rtt_ms: &batch.last_rtt_ms,
            send_errors: &batch.send_errors,
            transport_errors: &batch.transport_errors,
            queued_bytes: &batch.queued_bytes,
            queued_frames: &batch.queued_frames,
            backlog_ms: &batch.backlog_ms,
            dropped_frames: &batch.dropped_frames,
            tier: $tier,
            tcp_rtt_us: &batch.tcp_rtt_us,
            tcp_rttvar_us: &batch.tcp_rttvar_us,
            tcp_total_retransmits: &batch.tcp_total_retransmits,
            tcp_unacked: &batch.tcp_unacked,
            tcp_last_data_recv_ms: &batch.tcp_last_data_recv_ms,
        }
    }};
}

impl WitBatch<'_> {
    pub(crate) fn as_wit(&self) -> wit::SessionBatch<'_> {
        lend_session_batch!(wit, self, &self.tier)
    }
}

/// Index of `class` in `classes`, adding it if new. Batches hold a handful
/// of classes, so a scan (pointer comparison first) beats hashing.
fn class_index<'a>(classes: &mut Vec<&'a str>, class: &'a str) -> u32 {
    let found = classes
        .iter()
        .position(|known| std::ptr::eq(*known, class) || *known == class);
    let index = found.unwrap_or_else(|| {
        classes.push(class);
        classes.len() - 1
    });
    index as u32
}

pub(crate) fn facts_to_wit(sessions: &[SessionFacts]) -> WitBatch<'_> {
    // One pass per column: each is an exact-size collect of one field, which
    // the compiler turns into a tight loop (no per-push capacity checks).
    fn column<T>(sessions: &[SessionFacts], field: impl Fn(&SessionFacts) -> T) -> Vec<T> {
        sessions.iter().map(field).collect()
    }
    let mut classes = Vec::new();
    let class_index = sessions
        .iter()
        .map(|f| class_index(&mut classes, &f.client_class))
        .collect();
    let tcp = |f: &SessionFacts| {
        f.tcp.unwrap_or(TcpFacts {
            rtt_us: u32::MAX,
            ..TcpFacts::default()
        })
    };
    WitBatch {
        classes,
        id: column(sessions, |f| f.id),
        class_index,
        age_ms: column(sessions, |f| f.age_ms),
        idle_ms: column(sessions, |f| f.idle_ms),
        app_idle_ms: column(sessions, |f| f.app_idle_ms),
        since_pong_ms: column(sessions, |f| f.since_pong_ms.unwrap_or(u64::MAX)),
        outstanding_pings: column(sessions, |f| f.outstanding_pings),
        oldest_ping_ms: column(sessions, |f| f.oldest_ping_ms.unwrap_or(0)),
        pong_overdue: column(sessions, |f| f.pong_overdue),
        last_rtt_ms: column(sessions, |f| f.last_rtt_ms.unwrap_or(u32::MAX)),
        send_errors: column(sessions, |f| f.send_errors),
        transport_errors: column(sessions, |f| f.transport_errors),
        queued_bytes: column(sessions, |f| f.queued_bytes),
        queued_frames: column(sessions, |f| f.queued_frames),
        backlog_ms: column(sessions, |f| f.backlog_ms),
        dropped_frames: column(sessions, |f| f.dropped_frames),
        tier: column(sessions, |f| tier_to_wit(f.tier)),
        tcp_rtt_us: column(sessions, |f| tcp(f).rtt_us),
        tcp_rttvar_us: column(sessions, |f| tcp(f).rttvar_us),
        tcp_total_retransmits: column(sessions, |f| tcp(f).total_retransmits),
        tcp_unacked: column(sessions, |f| tcp(f).unacked),
        tcp_last_data_recv_ms: column(sessions, |f| tcp(f).last_data_recv_ms),
    }
}

/// The events as the bindings module `$wit` carries them, strings lent.
macro_rules! lend_events {
    ($wit:ident, $events:expr) => {{
        let frame_kind = |kind: FrameKind| match kind {
            FrameKind::Text => $wit::FrameKind::Text,
            FrameKind::Binary => $wit::FrameKind::Binary,
            FrameKind::Ping => $wit::FrameKind::Ping,
            FrameKind::Pong => $wit::FrameKind::Pong,
            FrameKind::Close => $wit::FrameKind::Close,
        };
        $events
            .iter()
            .map(|e| $wit::Event {
                at_ms: e.at_ms,
                kind: match &e.kind {
                    EventKind::Connected {
                        session,
                        client_class,
                    } => $wit::EventKind::Connected($wit::ConnectedEvent {
                        session: *session,
                        client_class,
                    }),
                    EventKind::FrameReceived {
                        session,
                        kind,
                        size_bytes,
                    } => $wit::EventKind::FrameReceived($wit::FrameEvent {
                        session: *session,
                        kind: frame_kind(*kind),
                        size_bytes: *size_bytes,
                    }),
                    EventKind::FrameSent {
                        session,
                        kind,
                        size_bytes,
                    } => $wit::EventKind::FrameSent($wit::FrameEvent {
                        session: *session,
                        kind: frame_kind(*kind),
                        size_bytes: *size_bytes,
                    }),
                    EventKind::PingSent { session } => $wit::EventKind::PingSent(*session),
                    EventKind::PongReceived { session, rtt_ms } => {
                        $wit::EventKind::PongReceived($wit::PongEvent {
                            session: *session,
                            rtt_ms: *rtt_ms,
                        })
                    }
                    EventKind::SendFailed { session, detail } => {
                        $wit::EventKind::SendFailed($wit::FailureEvent {
                            session: *session,
                            detail,
                        })
                    }
                    EventKind::Backpressure {
                        session,
                        queued_bytes,
                    } => $wit::EventKind::Backpressure($wit::BackpressureEvent {
                        session: *session,
                        queued_bytes: *queued_bytes,
                    }),
                    EventKind::TransportError { session, detail } => {
                        $wit::EventKind::TransportError($wit::FailureEvent {
                            session: *session,
                            detail,
                        })
                    }
                    EventKind::CloseReceived { session, code } => {
                        $wit::EventKind::CloseReceived($wit::CloseEvent {
                            session: *session,
                            code: *code,
                        })
                    }
                    EventKind::Removed { session, reason } => {
                        $wit::EventKind::Removed($wit::RemovedEvent {
                            session: *session,
                            reason,
                        })
                    }
                    EventKind::Tick => $wit::EventKind::Tick,
                },
            })
            .collect()
    }};
}

pub(crate) fn events_to_wit(events: &[Event]) -> Vec<wit::Event<'_>> {
    lend_events!(wit, events)
}

/// The plugin's `verdict-batch` as one [`Verdict`] per session, each
/// distinct reason shared between its evictions. Columns of unequal length
/// and reason indices past the reason list break the contract; everything
/// else about the verdicts is [`crate::contract`]'s to check.
pub(crate) fn verdicts_from_wit(
    batch: wit::VerdictBatch,
) -> Result<Vec<Verdict>, ContractViolation> {
    let wit::VerdictBatch {
        reasons,
        session,
        health,
        tier,
        action,
        reason_index,
        close_code,
        reassess_in_ms,
    } = batch;
    let len = session.len();
    let lengths = [
        ("health", health.len()),
        ("tier", tier.len()),
        ("action", action.len()),
        ("reason-index", reason_index.len()),
        ("close-code", close_code.len()),
        ("reassess-in-ms", reassess_in_ms.len()),
    ];
    if let Some((column, got)) = lengths.into_iter().find(|(_, got)| *got != len) {
        return Err(ContractViolation::RaggedVerdicts {
            column,
            got,
            sessions: len,
        });
    }
    let reasons: Vec<Arc<str>> = reasons.into_iter().map(Arc::from).collect();
    let mut verdicts = Vec::with_capacity(len);
    for i in 0..len {
        let action = match action[i] {
            wit::Action::Keep => Action::Keep,
            wit::Action::Ping => Action::Ping,
            wit::Action::Evict => {
                let index = reason_index[i];
                let Some(reason) = reasons.get(index as usize) else {
                    return Err(ContractViolation::UnknownReason {
                        session: session[i],
                        index,
                        reasons: reasons.len(),
                    });
                };
                Action::Evict(Eviction {
                    reason: reason.clone(),
                    close_code: close_code[i],
                })
            }
        };
        verdicts.push(Verdict {
            session: session[i],
            health: health[i],
            tier: tier_from_wit(tier[i]),
            action,
            reassess_in_ms: reassess_in_ms[i],
        });
    }
    Ok(verdicts)
}

pub(crate) mod v0_1;

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    /// An answer for sessions 1, 2 and 3: keep, evict for `pong-timeout`,
    /// evict for `pong-timeout` again (one reason in the list).
    fn answer() -> wit::VerdictBatch {
        wit::VerdictBatch {
            reasons: vec!["pong-timeout".to_owned()],
            session: vec![1, 2, 3],
            health: vec![100, 0, 5],
            tier: vec![wit::Tier::Regular, wit::Tier::Fast, wit::Tier::KeepAlive],
            action: vec![wit::Action::Keep, wit::Action::Evict, wit::Action::Evict],
            reason_index: vec![0, 0, 0],
            close_code: vec![0, 4000, 4001],
            reassess_in_ms: vec![5_000, 1_000, 30_000],
        }
    }

    #[test]
    fn columns_become_one_verdict_per_session_sharing_their_reasons() {
        let verdicts = verdicts_from_wit(answer()).expect("a well-formed answer");
        assert_eq!(verdicts.len(), 3);
        assert_eq!(verdicts[0].action, Action::Keep);
        assert_eq!(verdicts[0].reassess_in_ms, 5_000);
        assert_eq!(verdicts[2].tier, Tier::KeepAlive);
        let (Action::Evict(second), Action::Evict(third)) =
            (&verdicts[1].action, &verdicts[2].action)
        else {
            panic!("sessions 2 and 3 are evicted: {verdicts:?}");
        };
        assert_eq!((&*second.reason, second.close_code), ("pong-timeout", 4000));
        assert_eq!(third.close_code, 4001);
        assert!(
            Arc::ptr_eq(&second.reason, &third.reason),
            "one string for the reason, not one per eviction"
        );
    }

    #[test]
    fn a_short_column_is_named() {
        let mut ragged = answer();
        ragged.close_code.pop();
        assert_eq!(
            verdicts_from_wit(ragged).err(),
            Some(ContractViolation::RaggedVerdicts {
                column: "close-code",
                got: 2,
                sessions: 3
            })
        );
    }

    #[test]
    fn an_eviction_past_the_reasons_is_refused_and_others_are_not_read() {
        let mut past = answer();
        past.reason_index[2] = 1;
        assert_eq!(
            verdicts_from_wit(past).err(),
            Some(ContractViolation::UnknownReason {
                session: 3,
                index: 1,
                reasons: 1
            })
        );
        // A keep's reason index means nothing, whatever it holds.
        let mut keep = answer();
        keep.reason_index[0] = u32::MAX;
        assert!(verdicts_from_wit(keep).is_ok());
    }
}

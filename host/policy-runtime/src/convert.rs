//! Between the host's batches ([`SessionColumns`], [`VerdictColumns`]) and
//! the types wasmtime's bindgen generated for the WIT contract (and, in
//! [`v0_2`] and [`v0_1`], for the older versions still loaded). The
//! current contract carries the columns the host holds: facts are lent as
//! they are, with no copy, and the answer's columns are checked and kept
//! as wasmtime lifted them.

use std::ops::Range;
use std::sync::Arc;

use vigil_policy_sdk::{action_code, Event, EventKind, FrameKind, Tier};

use super::bindings::wit_types as wit;
use super::columns::{SessionColumns, VerdictColumns};
use super::contract::ContractViolation;

/// The `session-batch` record of the bindings module `$wit`, lending the
/// columns of the [`LentBatch`] `$lent` with `$tier` and `$pong_overdue`
/// as those columns. Every contract version carries the same record but
/// for the types of those two, so one list of fields serves them all.
macro_rules! lend_session_batch {
    ($wit:ident, $lent:expr, $tier:expr, $pong_overdue:expr) => {{
        let lent = $lent;
        let c = lent.columns;
        let r = lent.range.clone();
        $wit::SessionBatch {
            classes: &lent.classes,
            id: &c.id[r.clone()],
            class_index: &c.class_index[r.clone()],
            age_ms: &c.age_ms[r.clone()],
            idle_ms: &c.idle_ms[r.clone()],
            app_idle_ms: &c.app_idle_ms[r.clone()],
            since_pong_ms: &c.since_pong_ms[r.clone()],
            outstanding_pings: &c.outstanding_pings[r.clone()],
            oldest_ping_ms: &c.oldest_ping_ms[r.clone()],
            pong_overdue: $pong_overdue,
            last_rtt_ms: &c.last_rtt_ms[r.clone()],
            send_errors: &c.send_errors[r.clone()],
            transport_errors: &c.transport_errors[r.clone()],
            queued_bytes: &c.queued_bytes[r.clone()],
            queued_frames: &c.queued_frames[r.clone()],
            backlog_ms: &c.backlog_ms[r.clone()],
            dropped_frames: &c.dropped_frames[r.clone()],
            tier: $tier,
            tcp_rtt_us: &c.tcp_rtt_us[r.clone()],
            tcp_rttvar_us: &c.tcp_rttvar_us[r.clone()],
            tcp_total_retransmits: &c.tcp_total_retransmits[r.clone()],
            tcp_unacked: &c.tcp_unacked[r.clone()],
            tcp_last_data_recv_ms: &c.tcp_last_data_recv_ms[r],
        }
    }};
}

/// The sessions of a batch in `range`, lent to one plugin call: every
/// column sliced as it is, the class names borrowed.
pub(crate) struct LentBatch<'a> {
    columns: &'a SessionColumns,
    range: Range<usize>,
    classes: Vec<&'a str>,
}

impl<'a> LentBatch<'a> {
    /// Lends `range` of `columns`, clamped to the batch.
    pub(crate) fn new(columns: &'a SessionColumns, range: Range<usize>) -> Self {
        let end = range.end.min(columns.len());
        LentBatch {
            columns,
            range: range.start.min(end)..end,
            classes: columns.classes.iter().map(|class| &**class).collect(),
        }
    }

    /// Sessions lent.
    pub(crate) fn len(&self) -> usize {
        self.range.len()
    }

    /// The current contract's `session-batch`.
    pub(crate) fn as_wit(&self) -> wit::SessionBatch<'_> {
        let range = self.range.clone();
        lend_session_batch!(
            wit,
            self,
            &self.columns.tier[range.clone()],
            &self.columns.pong_overdue[range.clone()]
        )
    }

    /// The lent tier codes as an older contract's tier enum, given its
    /// `[fast, regular, keep-alive]` (the codes' order).
    pub(crate) fn tiers_as<T: Copy>(&self, [fast, regular, keep_alive]: [T; 3]) -> Vec<T> {
        self.columns.tier[self.range.clone()]
            .iter()
            .map(|code| match Tier::from_code(*code) {
                Some(Tier::Regular) => regular,
                Some(Tier::KeepAlive) => keep_alive,
                // Only `SessionColumns::push` writes the column, from a `Tier`.
                Some(Tier::Fast) | None => fast,
            })
            .collect()
    }

    /// The `pong-overdue` column as the booleans older contracts carry.
    pub(crate) fn pong_overdue_flags(&self) -> Vec<bool> {
        self.columns.pong_overdue[self.range.clone()]
            .iter()
            .map(|flag| *flag != 0)
            .collect()
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

/// The plugin's `verdict-batch`, checked and kept as columns: columns of
/// unequal length, a tier or action code the contract does not define, and
/// an eviction's reason index past the reason list break the contract;
/// everything else about the verdicts is [`crate::contract`]'s to check.
pub(crate) fn verdicts_from_wit(
    batch: wit::VerdictBatch,
) -> Result<VerdictColumns, ContractViolation> {
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
    if let Some(row) = tier
        .iter()
        .position(|code| Tier::from_code(*code).is_none())
    {
        return Err(ContractViolation::UnknownCode {
            column: "tier",
            session: session[row],
            code: tier[row],
        });
    }
    for row in 0..len {
        match action[row] {
            action_code::KEEP | action_code::PING => {}
            action_code::EVICT => {
                let index = reason_index[row];
                if index as usize >= reasons.len() {
                    return Err(ContractViolation::UnknownReason {
                        session: session[row],
                        index,
                        reasons: reasons.len(),
                    });
                }
            }
            code => {
                return Err(ContractViolation::UnknownCode {
                    column: "action",
                    session: session[row],
                    code,
                })
            }
        }
    }
    Ok(VerdictColumns {
        reasons: reasons.into_iter().map(Arc::from).collect(),
        session,
        health,
        tier,
        action,
        reason_index,
        close_code,
        reassess_in_ms,
    })
}

pub(crate) mod v0_1;
pub(crate) mod v0_2;

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use vigil_policy_sdk::{Action, Tier};

    use super::*;

    /// An answer for sessions 1, 2 and 3: keep, evict for `pong-timeout`,
    /// evict for `pong-timeout` again (one reason in the list).
    fn answer() -> wit::VerdictBatch {
        wit::VerdictBatch {
            reasons: vec!["pong-timeout".to_owned()],
            session: vec![1, 2, 3],
            health: vec![100, 0, 5],
            tier: vec![
                Tier::Regular.code(),
                Tier::Fast.code(),
                Tier::KeepAlive.code(),
            ],
            action: vec![action_code::KEEP, action_code::EVICT, action_code::EVICT],
            reason_index: vec![0, 0, 0],
            close_code: vec![0, 4000, 4001],
            reassess_in_ms: vec![5_000, 1_000, 30_000],
        }
    }

    #[test]
    fn columns_are_kept_and_read_back_as_one_verdict_per_session_sharing_their_reasons() {
        let verdicts = verdicts_from_wit(answer())
            .expect("a well-formed answer")
            .to_rows();
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

    #[test]
    fn a_tier_or_action_code_the_contract_lacks_is_refused_with_its_session() {
        let mut tier = answer();
        tier.tier[1] = 3;
        assert_eq!(
            verdicts_from_wit(tier).err(),
            Some(ContractViolation::UnknownCode {
                column: "tier",
                session: 2,
                code: 3
            })
        );
        let mut action = answer();
        action.action[2] = 7;
        assert_eq!(
            verdicts_from_wit(action).err(),
            Some(ContractViolation::UnknownCode {
                column: "action",
                session: 3,
                code: 7
            })
        );
    }

    #[test]
    fn a_lent_range_carries_only_its_sessions_and_every_class() {
        let mut facts: Vec<_> = (1..=4)
            .map(|id| {
                vigil_policy_sdk::SessionFacts::new(
                    id,
                    if id % 2 == 0 { "onebot" } else { "default" },
                )
            })
            .collect();
        facts[2].pong_overdue = true;
        facts[2].tier = Tier::KeepAlive;
        let columns = SessionColumns::from(&facts[..]);
        let lent = LentBatch::new(&columns, 1..3);
        let batch = lent.as_wit();
        assert_eq!(batch.id, &[2, 3]);
        assert_eq!(batch.classes, &["default", "onebot"]);
        assert_eq!(batch.class_index, &[1, 0]);
        assert_eq!(batch.pong_overdue, &[0, 1]);
        assert_eq!(batch.tier, &[Tier::Fast.code(), Tier::KeepAlive.code()]);
        assert_eq!(lent.pong_overdue_flags(), vec![false, true]);
        assert_eq!(lent.tiers_as(['f', 'r', 'k']), vec!['f', 'k']);
        assert_eq!(LentBatch::new(&columns, 3..9).len(), 1);
    }
}

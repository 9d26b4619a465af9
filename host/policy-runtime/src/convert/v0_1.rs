//! Conversions for plugins built for `vigil:policy@0.1.0`: the same facts
//! and events as the current contract, and an answer of one `verdict`
//! record per session, each eviction with its own reason string.

use std::sync::Arc;

use vigil_policy_sdk::{Action, Event, EventKind, Eviction, FrameKind, Tier, Verdict};

use super::LentBatch;
use crate::bindings::v0_1::wit_types as v0_1;
use crate::columns::VerdictColumns;

/// The lent tier codes as 0.1.0's enum (the same three tiers).
pub(crate) fn tiers(batch: &LentBatch<'_>) -> Vec<v0_1::Tier> {
    batch.tiers_as([v0_1::Tier::Fast, v0_1::Tier::Regular, v0_1::Tier::KeepAlive])
}

/// The batch as 0.1.0's `session-batch`, with `tiers` from [`tiers`] and
/// `overdue` from [`LentBatch::pong_overdue_flags`].
pub(crate) fn session_batch<'a>(
    batch: &'a LentBatch<'_>,
    tiers: &'a [v0_1::Tier],
    overdue: &'a [bool],
) -> v0_1::SessionBatch<'a> {
    lend_session_batch!(v0_1, batch, tiers, overdue)
}

/// The events as 0.1.0 carries them.
pub(crate) fn events_to_wit(events: &[Event]) -> Vec<v0_1::Event<'_>> {
    lend_events!(v0_1, events)
}

/// 0.1.0's `list<verdict>` as columns, each distinct reason once.
pub(crate) fn verdicts_from_wit(verdicts: Vec<v0_1::Verdict>) -> VerdictColumns {
    let mut last_reason: Option<Arc<str>> = None;
    let verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|v| Verdict {
            session: v.session,
            health: v.health,
            tier: match v.tier {
                v0_1::Tier::Fast => Tier::Fast,
                v0_1::Tier::Regular => Tier::Regular,
                v0_1::Tier::KeepAlive => Tier::KeepAlive,
            },
            action: match v.action {
                v0_1::Action::Keep => Action::Keep,
                v0_1::Action::Ping => Action::Ping,
                v0_1::Action::Evict(e) => {
                    let reason = match &last_reason {
                        Some(last) if **last == *e.reason => last.clone(),
                        _ => Arc::from(e.reason),
                    };
                    last_reason = Some(reason.clone());
                    Action::Evict(Eviction {
                        reason,
                        close_code: e.close_code,
                    })
                }
            },
            reassess_in_ms: v.reassess_in_ms,
        })
        .collect();
    VerdictColumns::from(&verdicts[..])
}

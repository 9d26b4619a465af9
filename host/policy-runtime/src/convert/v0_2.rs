//! Conversions for plugins built for `vigil:policy@0.2.0`: the same columns
//! as the current contract, but `tier` and `action` as enums and
//! `pong-overdue` as booleans.

use vigil_policy_sdk::{action_code, Event, EventKind, FrameKind, Tier};

use super::LentBatch;
use crate::bindings::v0_2::wit_types as v0_2;
use crate::bindings::wit_types as wit;
use crate::columns::VerdictColumns;
use crate::contract::ContractViolation;

/// The lent tier codes as 0.2.0's enum (the same three tiers).
pub(crate) fn tiers(batch: &LentBatch<'_>) -> Vec<v0_2::Tier> {
    batch.tiers_as([v0_2::Tier::Fast, v0_2::Tier::Regular, v0_2::Tier::KeepAlive])
}

/// The batch as 0.2.0's `session-batch`, with `tiers` from [`tiers`] and
/// `overdue` from [`LentBatch::pong_overdue_flags`].
pub(crate) fn session_batch<'a>(
    batch: &'a LentBatch<'_>,
    tiers: &'a [v0_2::Tier],
    overdue: &'a [bool],
) -> v0_2::SessionBatch<'a> {
    lend_session_batch!(v0_2, batch, tiers, overdue)
}

/// The events as 0.2.0 carries them (as the current contract does).
pub(crate) fn events_to_wit(events: &[Event]) -> Vec<v0_2::Event<'_>> {
    lend_events!(v0_2, events)
}

/// 0.2.0's `verdict-batch`, its enums turned into the current codes and
/// then read as the current contract's answer is.
pub(crate) fn verdicts_from_wit(
    batch: v0_2::VerdictBatch,
) -> Result<VerdictColumns, ContractViolation> {
    let tier = |tier: &v0_2::Tier| match tier {
        v0_2::Tier::Fast => Tier::Fast.code(),
        v0_2::Tier::Regular => Tier::Regular.code(),
        v0_2::Tier::KeepAlive => Tier::KeepAlive.code(),
    };
    let action = |action: &v0_2::Action| match action {
        v0_2::Action::Keep => action_code::KEEP,
        v0_2::Action::Ping => action_code::PING,
        v0_2::Action::Evict => action_code::EVICT,
    };
    super::verdicts_from_wit(wit::VerdictBatch {
        tier: batch.tier.iter().map(tier).collect(),
        action: batch.action.iter().map(action).collect(),
        reasons: batch.reasons,
        session: batch.session,
        health: batch.health,
        reason_index: batch.reason_index,
        close_code: batch.close_code,
        reassess_in_ms: batch.reassess_in_ms,
    })
}

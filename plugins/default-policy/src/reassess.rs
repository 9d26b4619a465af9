//! When to look at a session again: at its tier's interval while its
//! verdict may change at any moment, and, for a steady session, exactly
//! when the verdict next changes with the clock alone.
//!
//! A steady session is a `regular` one kept with nothing in flight and
//! nothing wrong: no ping unanswered, no backlog, no penalty for
//! application silence. What it is told changes only with the clock (its
//! silences grow) and with the answers to its heartbeat (a round trip, the
//! kernel's facts), and the host brings a session forward with each
//! heartbeat's answer, an overdue pong and backpressure (the WIT's
//! `reassess-in-ms`). So polling it between heartbeats tells the policy
//! nothing it would not hear anyway: the verdict is due again when the
//! first of its own thresholds falls due (the silence that moves it to
//! `keep-alive`, the half-way mark of the idle limit, the silence limit),
//! and at the latest after `reassess_steady_ms`.
//!
//! At 19 000 idle sessions pinged every 30 s this is one assessment per
//! heartbeat instead of six (BENCHMARKS.md).

use vigil_policy_sdk::{Action, Facts, Tier};

use crate::config::Settings;
use crate::scoring;

/// How long the host may wait before assessing the session again, ms, for
/// the verdict (`tier`, `action`) just given from `facts`.
pub(crate) fn reassess_in_ms<F: Facts + ?Sized>(
    settings: &Settings,
    facts: &F,
    tier: Tier,
    action: &Action,
) -> u32 {
    let tier_interval = settings.reassess_ms(tier);
    if settings.reassess_steady_ms == 0 {
        return tier_interval;
    }
    match steady_for_ms(settings, facts, tier, action) {
        Some(steady_ms) => steady_ms.min(u64::from(settings.reassess_steady_ms)) as u32,
        None => tier_interval,
    }
}

/// How long the verdict given from `facts` stays the verdict if nothing the
/// host reports happens: `None` when it may change sooner in a way the host
/// does not report (a ping in flight, a backlog growing, an application
/// frame lifting a silence penalty or a `keep-alive` tier).
fn steady_for_ms<F: Facts + ?Sized>(
    settings: &Settings,
    facts: &F,
    tier: Tier,
    action: &Action,
) -> Option<u64> {
    let quiet = *action == Action::Keep
        && tier == Tier::Regular
        && facts.outstanding_pings() == 0
        && !facts.pong_overdue()
        && facts.backlog_ms() == 0;
    if !quiet {
        return None;
    }
    let near_idle_limit = scoring::near_idle_limit_ms(settings);
    if near_idle_limit.is_some_and(|near| facts.app_idle_ms() >= near) {
        // Penalised for silence: a frame from the client lifts it, and
        // frames are not news.
        return None;
    }
    let mut steady = settings
        .keep_alive_after_ms
        .saturating_sub(facts.app_idle_ms());
    if let Some(near) = near_idle_limit {
        steady = steady.min(near - facts.app_idle_ms());
    }
    if settings.silent_evict_ms > 0 {
        steady = steady.min(settings.silent_evict_ms.saturating_sub(facts.idle_ms()));
    }
    Some(steady)
}

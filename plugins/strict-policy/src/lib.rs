//! Example policy: strict. For hosts that would rather drop a session too
//! early than keep a dead one: every session is watched in the `fast` tier,
//! one missed pong evicts (a second ping went out while the first is still
//! unanswered), so do an overdue pong, the first failed write, a dropped
//! message, a backlog lasting 2 s, and application silence past
//! `idle_evict_ms` (default 120 000 ms).
//!
//! Config: `{"idle_evict_ms": 120000, "backlog_evict_ms": 2000}`.

use serde::Deserialize;
use vigil_policy_sdk::{Action, Eviction, Policy, SessionFacts, SessionId, Tier, Verdict};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Strict {
    idle_evict_ms: u64,
    backlog_evict_ms: u64,
}

impl Default for Strict {
    fn default() -> Self {
        Strict {
            idle_evict_ms: 120_000,
            backlog_evict_ms: 2_000,
        }
    }
}

fn evict(reason: &str, close_code: u16) -> Action {
    Action::Evict(Eviction {
        reason: reason.into(),
        close_code,
    })
}

impl Strict {
    fn health(facts: &SessionFacts) -> u8 {
        let mut lost = 0u32;
        lost += 40 * facts.outstanding_pings.min(2);
        lost += 30 * facts.send_errors.min(2);
        lost += 20 * u32::from(facts.backlog_ms > 0);
        lost += 20 * facts.dropped_frames.min(1);
        100u32.saturating_sub(lost) as u8
    }

    fn action(&self, facts: &SessionFacts) -> Action {
        if facts.pong_overdue || facts.outstanding_pings >= 2 {
            evict("missed-pong", 4000)
        } else if facts.send_errors >= 1 {
            evict("send-failure", 4001)
        } else if facts.dropped_frames >= 1 || facts.backlog_ms >= self.backlog_evict_ms {
            evict("backlog", 4002)
        } else if facts.app_idle_ms >= self.idle_evict_ms {
            evict("idle", 4003)
        } else {
            Action::Keep
        }
    }
}

impl Policy for Strict {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        *self = serde_json::from_str(config)
            .map_err(|e| format!("invalid strict-policy config: {e}"))?;
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        sessions
            .iter()
            .map(|facts| Verdict {
                session: facts.id,
                health: Self::health(facts),
                tier: Tier::Fast,
                action: self.action(facts),
                reassess_in_ms: 500,
            })
            .collect()
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId> {
        vigil_policy_sdk::first_by_rank(sessions, excess, Self::health)
    }
}

vigil_policy_sdk::export_policy!(Strict);

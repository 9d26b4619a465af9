//! Example policy: lenient. For bots that stay silent for hours: a session
//! that answers pings is never evicted for silence; quiet sessions move to
//! the `keep-alive` tier (infrequent probes) after `quiet_after_ms` (default
//! 60 000 ms). Only clear evidence of death evicts: `missed_pongs` (default 3)
//! unanswered pings with the oldest overdue, or `send_failures` (default 10)
//! failed writes, or a message dropped at the full queue.
//!
//! Config: `{"quiet_after_ms": 60000, "missed_pongs": 3, "send_failures": 10}`.

use serde::Deserialize;
use vigil_policy_sdk::{Action, Eviction, Policy, SessionFacts, SessionId, Tier, Verdict};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Lenient {
    quiet_after_ms: u64,
    missed_pongs: u32,
    send_failures: u32,
}

impl Default for Lenient {
    fn default() -> Self {
        Lenient {
            quiet_after_ms: 60_000,
            missed_pongs: 3,
            send_failures: 10,
        }
    }
}

impl Lenient {
    fn health(facts: &SessionFacts) -> u8 {
        let lost = 15 * facts.outstanding_pings.min(4) + 5 * facts.send_errors.min(10);
        100u32.saturating_sub(lost) as u8
    }

    fn action(&self, facts: &SessionFacts) -> Action {
        let dead = facts.pong_overdue && facts.outstanding_pings >= self.missed_pongs;
        let broken = facts.send_errors >= self.send_failures;
        if dead || broken || facts.dropped_frames > 0 {
            Action::Evict(Eviction {
                reason: if dead {
                    "pong-timeout"
                } else {
                    "send-failures"
                }
                .into(),
                close_code: if dead { 4000 } else { 4001 },
            })
        } else {
            Action::Keep
        }
    }
}

impl Policy for Lenient {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let parsed: Lenient = serde_json::from_str(config)
            .map_err(|e| format!("invalid lenient-policy config: {e}"))?;
        if parsed.missed_pongs == 0 {
            return Err("`missed_pongs` must be at least 1".to_owned());
        }
        *self = parsed;
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        sessions
            .iter()
            .map(|facts| {
                let tier =
                    if facts.app_idle_ms >= self.quiet_after_ms && facts.outstanding_pings == 0 {
                        Tier::KeepAlive
                    } else {
                        Tier::Regular
                    };
                Verdict {
                    session: facts.id,
                    health: Self::health(facts),
                    tier,
                    action: self.action(facts),
                    reassess_in_ms: 10_000,
                }
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

vigil_policy_sdk::export_policy!(Lenient);

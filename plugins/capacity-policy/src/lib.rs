//! Example policy: capacity. Keeps at most `max_per_class[class]` sessions of
//! each client class (classes not listed are unlimited) and, when the host is
//! over its global limit, drops the least healthy sessions first, then the
//! longest-connected.
//!
//! It shows a stateful plugin: it counts live sessions per class from
//! `connected` and `removed` events. That state is lost on a swap or a
//! restart; until events rebuild it, the counts start from the sessions it
//! sees in batches, so a quota may be enforced late but never wrongly.
//!
//! Config: `{"max_per_class": {"default": 100, "onebot": 10}}`.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use vigil_policy_sdk::{
    Action, Event, EventKind, Eviction, Policy, SessionFacts, SessionId, Tier, Verdict,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    max_per_class: HashMap<String, u32>,
}

#[derive(Default)]
struct Capacity {
    config: Config,
    /// Live sessions by class, as learned from events and batches.
    live: HashMap<String, HashSet<SessionId>>,
}

fn health(facts: &SessionFacts) -> u8 {
    let lost = if facts.pong_overdue { 60 } else { 0 }
        + 10 * facts.outstanding_pings.min(3)
        + 15 * facts.send_errors.min(3)
        + if facts.backlog_ms > 0 { 10 } else { 0 };
    100u32.saturating_sub(lost) as u8
}

impl Policy for Capacity {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = serde_json::from_str(config)
            .map_err(|e| format!("invalid capacity-policy config: {e}"))?;
        Ok(())
    }

    fn on_events(&mut self, events: &[Event]) {
        for event in events {
            match &event.kind {
                EventKind::Connected {
                    session,
                    client_class,
                } => {
                    self.live
                        .entry(client_class.clone())
                        .or_default()
                        .insert(*session);
                }
                EventKind::Removed { session, .. } => {
                    for sessions in self.live.values_mut() {
                        sessions.remove(session);
                    }
                }
                _ => {}
            }
        }
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        for facts in sessions {
            self.live
                .entry(facts.client_class.to_string())
                .or_default()
                .insert(facts.id);
        }
        // Over quota: the newest sessions of the class in this batch go.
        let mut over_quota: HashSet<SessionId> = HashSet::new();
        for (class, live) in &self.live {
            let Some(max) = self.config.max_per_class.get(class) else {
                continue;
            };
            let excess = live.len().saturating_sub(*max as usize);
            let mut newest: Vec<&SessionFacts> = sessions
                .iter()
                .filter(|f| &*f.client_class == class)
                .collect();
            newest.sort_unstable_by_key(|f| (f.age_ms, f.id));
            over_quota.extend(newest.iter().take(excess).map(|f| f.id));
        }
        sessions
            .iter()
            .map(|facts| {
                let action = if over_quota.contains(&facts.id) {
                    Action::Evict(Eviction {
                        reason: "class-quota".into(),
                        close_code: 4013,
                    })
                } else if facts.pong_overdue {
                    Action::Evict(Eviction {
                        reason: "pong-timeout".into(),
                        close_code: 4000,
                    })
                } else {
                    Action::Keep
                };
                Verdict {
                    session: facts.id,
                    health: health(facts),
                    tier: Tier::Regular,
                    action,
                    reassess_in_ms: 5_000,
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
        vigil_policy_sdk::first_by_rank(sessions, excess, |f| {
            (health(f), std::cmp::Reverse(f.age_ms))
        })
    }
}

vigil_policy_sdk::export_policy!(Capacity);

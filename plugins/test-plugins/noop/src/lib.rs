//! A policy that decides nothing: every session is kept in the `regular`
//! tier at full health — or at the health given as `{"stamp": N}`, which lets
//! a test see which instance assessed a batch. The benchmark uses it to measure what moving a batch
//! across the component boundary costs, apart from any policy work; tests use
//! it as a policy that never evicts on heartbeat.

use vigil_policy_sdk::{Action, Policy, SessionFacts, SessionId, Tier, Verdict};

struct Noop {
    stamp: u8,
}

impl Default for Noop {
    fn default() -> Self {
        Noop { stamp: 100 }
    }
}

impl Policy for Noop {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
        if let Some(stamp) = value.get("stamp") {
            self.stamp = stamp
                .as_u64()
                .and_then(|stamp| u8::try_from(stamp).ok())
                .filter(|stamp| *stamp <= 100)
                .ok_or_else(|| format!("`stamp` must be a health value 0..=100, got {stamp}"))?;
        }
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        sessions
            .iter()
            .map(|facts| Verdict {
                session: facts.id,
                health: self.stamp,
                tier: Tier::Regular,
                action: Action::Keep,
                reassess_in_ms: 30_000,
            })
            .collect()
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        _sessions: &[SessionFacts],
        _excess: u32,
    ) -> Vec<SessionId> {
        Vec::new()
    }
}

vigil_policy_sdk::export_policy!(Noop);

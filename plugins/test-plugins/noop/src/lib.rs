//! A policy that decides nothing: every session is kept at full health in
//! the `regular` tier. The benchmark uses it to measure what moving a batch
//! across the component boundary costs, apart from any policy work; tests use
//! it as a policy that never evicts on heartbeat.

use vigil_policy_sdk::{Action, Policy, SessionFacts, SessionId, Tier, Verdict};

#[derive(Default)]
struct Noop;

impl Policy for Noop {
    fn configure(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        sessions
            .iter()
            .map(|facts| Verdict {
                session: facts.id,
                health: 100,
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

//! A policy built against `vigil:policy@0.1.0`, the contract as first
//! published (its WIT is kept beside this file), so the host's refusal of
//! a plugin for an older contract, and what it tells the operator, can be
//! tested. It keeps every session.

wit_bindgen::generate!({ path: "wit", world: "policy-plugin" });

use exports::vigil::policy::policy::Guest;
use vigil::policy::types::{Action, SessionBatch, Tier, Verdict};

struct OldContract;

impl Guest for OldContract {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_events(_events: Vec<vigil::policy::types::Event>) {}

    fn assess(_now_ms: u64, batch: SessionBatch) -> Vec<Verdict> {
        batch
            .id
            .iter()
            .map(|&session| Verdict {
                session,
                health: 100,
                tier: Tier::Regular,
                action: Action::Keep,
                reassess_in_ms: 1_000,
            })
            .collect()
    }

    fn select_evictions(_now_ms: u64, _batch: SessionBatch, _excess: u32) -> Vec<u64> {
        Vec::new()
    }
}

export!(OldContract);

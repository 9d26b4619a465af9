//! A policy that misbehaves on purpose, in the way its config names, so the
//! host's sandbox and fault handling can be tested against each failure:
//!
//! `{"fault": F, "in": C}` with F one of `loop`, `memory-bomb`, `panic`,
//! `missing-verdict`, `unknown-session`, `duplicate-verdict`, `bad-health`,
//! `bad-close-code`, `too-many-evictions`, `reject-config`, and four that
//! break the shape of the WIT's `verdict-batch`, which the SDK never
//! produces: `ragged-verdicts` (one column a value short),
//! `unknown-reason` (an eviction naming a reason past the list),
//! `unknown-tier-code` and `unknown-action-code` (a code the contract does
//! not define in the `tier` or `action` column); C the call it
//! strikes in: `assess` (default), `select-evictions` or `configure`.
//! With `"trigger_class": "poison"` it strikes in `assess` and
//! `select-evictions` only for batches holding a session of that client
//! class, so a test can fault one batch and see the next, clean one answered
//! by the fresh instance. Until it strikes it keeps everything.

use vigil_policy_sdk::{
    Action, Eviction, LogLevel, Policy, SessionFacts, SessionId, Tier, Verdict,
};

#[derive(Default)]
struct Misbehaving {
    fault: String,
    strike_in: String,
    trigger_class: Option<String>,
}

fn keep(facts: &SessionFacts) -> Verdict {
    Verdict {
        session: facts.id,
        health: 100,
        tier: Tier::Regular,
        action: Action::Keep,
        reassess_in_ms: 1_000,
    }
}

/// Spins until the host's deadline interrupts it.
fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

/// Allocates memory until the host's memory cap stops it. Large untouched
/// allocations reach the cap at once, well inside any call deadline.
fn eat_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(Vec::with_capacity(8 << 20));
        std::hint::black_box(&hoard);
    }
}

impl Misbehaving {
    fn strikes_in(&self, call: &str, sessions: &[SessionFacts]) -> bool {
        self.strike_in == call
            && match &self.trigger_class {
                None => true,
                Some(class) => sessions.iter().any(|facts| *facts.client_class == **class),
            }
    }

    /// The faults that do not depend on the call's return type.
    fn strike_generic(&self) {
        match self.fault.as_str() {
            "loop" => spin_forever(),
            "memory-bomb" => eat_memory(),
            "panic" => panic!("misbehaving policy panicked on purpose"),
            _ => {}
        }
    }
}

impl Policy for Misbehaving {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
        self.fault = value["fault"].as_str().unwrap_or("none").to_owned();
        self.strike_in = value["in"].as_str().unwrap_or("assess").to_owned();
        self.trigger_class = value["trigger_class"].as_str().map(str::to_owned);
        vigil_policy_sdk::log(
            LogLevel::Info,
            &format!(
                "misbehaving policy armed: {} in {}",
                self.fault, self.strike_in
            ),
        );
        if self.strikes_in("configure", &[]) {
            self.strike_generic();
            if self.fault == "reject-config" {
                return Err("misbehaving policy refuses every config".to_owned());
            }
        }
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        let mut verdicts: Vec<Verdict> = sessions.iter().map(keep).collect();
        if !self.strikes_in("assess", sessions) {
            return verdicts;
        }
        self.strike_generic();
        match self.fault.as_str() {
            "missing-verdict" => {
                verdicts.pop();
            }
            "unknown-session" => {
                if let Some(first) = verdicts.first_mut() {
                    first.session = u64::MAX;
                }
            }
            "duplicate-verdict" => {
                if let Some(first) = verdicts.first().cloned() {
                    verdicts.pop();
                    verdicts.push(first);
                }
            }
            "bad-health" => {
                if let Some(first) = verdicts.first_mut() {
                    first.health = 101;
                }
            }
            "bad-close-code" => {
                if let Some(first) = verdicts.first_mut() {
                    first.action = Action::Evict(Eviction {
                        reason: "bad-code".into(),
                        close_code: 1006,
                    });
                }
            }
            _ => {}
        }
        verdicts
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId> {
        if self.strikes_in("select-evictions", sessions) {
            self.strike_generic();
            match self.fault.as_str() {
                "unknown-session" => return vec![u64::MAX],
                "too-many-evictions" => return sessions.iter().map(|f| f.id).collect(),
                _ => {}
            }
        }
        sessions
            .iter()
            .take(excess as usize)
            .map(|f| f.id)
            .collect()
    }
}

impl Misbehaving {
    /// Breaks the shape of an `assess` answer after the SDK built it, for
    /// the faults no `Vec<Verdict>` can express.
    #[cfg(target_arch = "wasm32")]
    fn tamper(
        &self,
        sessions: &[SessionFacts],
        answer: &mut vigil_policy_sdk::guest::WitVerdictBatch,
    ) {
        use vigil_policy_sdk::action_code;
        if !self.strikes_in("assess", sessions) {
            return;
        }
        match self.fault.as_str() {
            "ragged-verdicts" => {
                answer.health.pop();
            }
            "unknown-reason" if !answer.action.is_empty() => {
                answer.action[0] = action_code::EVICT;
                answer.reason_index[0] = answer.reasons.len() as u32 + 7;
                answer.close_code[0] = 4000;
            }
            "unknown-tier-code" if !answer.tier.is_empty() => {
                answer.tier[0] = 3;
            }
            "unknown-action-code" if !answer.action.is_empty() => {
                answer.action[0] = 9;
            }
            _ => {}
        }
    }
}

/// The SDK's export, by hand, so `assess` can pass its answer through
/// [`Misbehaving::tamper`] on the way out.
#[cfg(target_arch = "wasm32")]
mod export {
    use std::cell::RefCell;

    use vigil_policy_sdk::guest::{self, Guest, WitEvent, WitSessionBatch, WitVerdictBatch};
    use vigil_policy_sdk::Policy;

    use super::Misbehaving;

    std::thread_local! {
        static POLICY: RefCell<Misbehaving> = RefCell::new(Misbehaving::default());
    }

    struct Export;

    impl Guest for Export {
        fn configure(config: String) -> Result<(), String> {
            POLICY.with_borrow_mut(|policy| policy.configure(&config))
        }

        fn on_events(events: Vec<WitEvent>) {
            let events = guest::events_from_wit(events);
            POLICY.with_borrow_mut(|policy| policy.on_events(&events))
        }

        fn assess(now_ms: u64, batch: WitSessionBatch) -> WitVerdictBatch {
            let sessions = guest::facts_from_wit(batch);
            POLICY.with_borrow_mut(|policy| {
                let mut answer = guest::verdicts_to_wit(policy.assess(now_ms, &sessions));
                policy.tamper(&sessions, &mut answer);
                answer
            })
        }

        fn select_evictions(now_ms: u64, batch: WitSessionBatch, excess: u32) -> Vec<u64> {
            let sessions = guest::facts_from_wit(batch);
            POLICY.with_borrow_mut(|policy| policy.select_evictions(now_ms, &sessions, excess))
        }
    }

    vigil_policy_sdk::guest::bindings::export_bindings!(Export with_types_in vigil_policy_sdk::guest::bindings);
}

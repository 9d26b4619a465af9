//! Shadow mode: a candidate policy assesses the same batches as the active
//! one, after it, and only the active one's verdicts are carried out. Where
//! the two disagree (action, tier, or health beyond a threshold) the host
//! counts it and keeps a sample, so an operator sees what the candidate would
//! have done before promoting it. The candidate's faults are its own: they
//! never touch the active policy.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};
use vigil_policy_sdk::{SessionFacts, Verdict};

use crate::columns::{SessionColumns, VerdictColumns};
use crate::json::{facts_json, verdict_json};

use super::supervisor::{Supervisor, VerdictSource};

/// Disagreements kept for the report, newest last.
const SAMPLE_CAPACITY: usize = 100;

/// One session the two policies judged differently.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// What both saw.
    pub facts: SessionFacts,
    /// What was done.
    pub active: Verdict,
    /// What the candidate would have done.
    pub shadow: Verdict,
    /// `action`, `tier` and/or `health`.
    pub differences: Vec<&'static str>,
}

/// A candidate running in shadow.
pub struct Shadow {
    supervisor: Supervisor,
    health_threshold: u8,
    batches: u64,
    sessions_compared: u64,
    disagreements: u64,
    faulted_batches: u64,
    samples: VecDeque<Disagreement>,
}

impl Shadow {
    /// Shadows `supervisor`; health differences above `health_threshold`
    /// count as disagreements.
    pub fn new(supervisor: Supervisor, health_threshold: u8) -> Self {
        Shadow {
            supervisor,
            health_threshold,
            batches: 0,
            sessions_compared: 0,
            disagreements: 0,
            faulted_batches: 0,
            samples: VecDeque::new(),
        }
    }

    /// The candidate.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Gives the candidate up, e.g. to promote it.
    pub fn into_supervisor(self) -> Supervisor {
        self.supervisor
    }

    /// Events go to the candidate too, so its history matches.
    pub fn on_events(&mut self, events: &[vigil_policy_sdk::Event]) {
        self.supervisor.on_events(events);
    }

    /// Assesses the batch the active policy just assessed and compares.
    pub fn observe(&mut self, now_ms: u64, sessions: &SessionColumns, active: &VerdictColumns) {
        self.batches += 1;
        let outcome = self.supervisor.assess(now_ms, sessions);
        if outcome.source != VerdictSource::Plugin {
            // The fallback's verdicts say nothing about the candidate.
            self.faulted_batches += 1;
            return;
        }
        let shadow_by_id: HashMap<u64, Verdict> =
            outcome.verdicts.rows().map(|v| (v.session, v)).collect();
        let index_by_id: HashMap<u64, usize> = sessions
            .ids()
            .iter()
            .enumerate()
            .map(|(index, id)| (*id, index))
            .collect();
        for active_verdict in active.rows() {
            let Some(shadow_verdict) = shadow_by_id.get(&active_verdict.session) else {
                continue;
            };
            self.sessions_compared += 1;
            let differences = self.differences(&active_verdict, shadow_verdict);
            if differences.is_empty() {
                continue;
            }
            self.disagreements += 1;
            let facts = index_by_id
                .get(&active_verdict.session)
                .and_then(|index| sessions.row(*index));
            if let Some(facts) = facts {
                if self.samples.len() == SAMPLE_CAPACITY {
                    self.samples.pop_front();
                }
                self.samples.push_back(Disagreement {
                    facts,
                    shadow: shadow_verdict.clone(),
                    active: active_verdict,
                    differences,
                });
            }
        }
    }

    fn differences(&self, active: &Verdict, shadow: &Verdict) -> Vec<&'static str> {
        let mut differences = Vec::new();
        if active.action != shadow.action {
            differences.push("action");
        }
        if active.tier != shadow.tier {
            differences.push("tier");
        }
        if active.health.abs_diff(shadow.health) > self.health_threshold {
            differences.push("health");
        }
        differences
    }

    /// Sessions judged differently so far.
    pub fn disagreements(&self) -> u64 {
        self.disagreements
    }

    /// The report served at `GET /admin/policy/shadow/report`.
    pub fn report(&self) -> Value {
        let sandbox = self.supervisor.sandbox();
        json!({
            "name": &**sandbox.name(),
            "sha256": sandbox.sha256(),
            "batches": self.batches,
            "sessions_compared": self.sessions_compared,
            "disagreements": self.disagreements,
            "faulted_batches": self.faulted_batches,
            "health_threshold": self.health_threshold,
            "samples": self.samples.iter().map(disagreement_json).collect::<Vec<_>>(),
        })
    }
}

fn disagreement_json(d: &Disagreement) -> Value {
    json!({
        "session": d.facts.id,
        "differences": d.differences,
        "facts": facts_json(&d.facts),
        "active": verdict_json(&d.active),
        "shadow": verdict_json(&d.shadow),
    })
}

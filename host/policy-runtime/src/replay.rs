//! `vigil policy replay`: shadow mode, offline. A candidate takes every
//! call of a recorded trace in order (events too, so its history matches)
//! and its answers are compared with what ran. The same plugin with the
//! same configuration gives no disagreement at all, because plugins are
//! deterministic ([`crate::clock`]); that is the determinism check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil_policy_sdk::{Action, SessionFacts, Verdict};

use crate::columns::SessionColumns;
use crate::json::{facts_json, verdict_json};
use crate::supervisor::{Supervisor, VerdictSource};
use crate::trace::{TraceError, TraceHeader, TraceReader, TraceRecord};

/// How a replay compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Health differences above this count (`health`). Default 0: a
    /// determinism check wants exact equality.
    pub health_threshold: u8,
    /// Disagreements kept as samples. Default 10.
    pub samples: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            health_threshold: 0,
            samples: 10,
        }
    }
}

/// One answer the candidate gave differently.
#[derive(Debug, Clone)]
pub enum ReplaySample {
    /// A session's verdict.
    Verdict {
        /// The call's `now-ms`.
        now_ms: u64,
        /// What both saw.
        facts: Box<SessionFacts>,
        /// What ran.
        recorded: Verdict,
        /// What the candidate answered.
        candidate: Verdict,
        /// The kinds of difference.
        kinds: Vec<&'static str>,
    },
    /// A capacity-pressure choice.
    Selection {
        /// The call's `now-ms`.
        now_ms: u64,
        /// How many had to go.
        excess: u32,
        /// What ran.
        recorded: Option<Vec<u64>>,
        /// What the candidate chose.
        candidate: Option<Vec<u64>>,
    },
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The trace's header.
    pub header: TraceHeader,
    /// The candidate's name and hash.
    pub candidate: (String, String),
    /// Why the recording ended; `None` for a truncated trace read partly.
    pub trace_end: Option<String>,
    /// Calls replayed, by kind (`assess`, `on-events`, `select-evictions`).
    pub calls: BTreeMap<&'static str, u64>,
    /// Session verdicts compared.
    pub sessions_compared: u64,
    /// Sessions with at least one difference.
    pub sessions_disagreeing: u64,
    /// Capacity choices compared, and how many differed.
    pub selections_compared: u64,
    /// Differences by kind: `action`, `reason`, `close-code`, `tier`,
    /// `health`, `reassess`, `selection`.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Batches the candidate faulted on (answered by the fallback, not
    /// compared), by fault.
    pub candidate_faults: BTreeMap<String, u64>,
    /// The first disagreements.
    pub samples: Vec<ReplaySample>,
    /// Time spent replaying.
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Every difference counted, of every kind.
    pub fn disagreements(&self) -> u64 {
        self.sessions_disagreeing + self.by_kind.get("selection").copied().unwrap_or(0)
    }

    /// Calls replayed.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Calls replayed per second of replay.
    pub fn calls_per_second(&self) -> f64 {
        self.total_calls() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as JSON (`--format json`).
    pub fn to_json(&self) -> Value {
        json!({
            "recorded_policy": {
                "name": self.header.policy.name,
                "sha256": self.header.policy.sha256,
            },
            "candidate": { "name": self.candidate.0, "sha256": self.candidate.1 },
            "trace_end": self.trace_end,
            "sessions_at_start": self.header.sessions_at_start,
            "calls": self.calls,
            "calls_per_second": self.calls_per_second(),
            "elapsed_ms": self.elapsed.as_secs_f64() * 1e3,
            "sessions_compared": self.sessions_compared,
            "sessions_disagreeing": self.sessions_disagreeing,
            "selections_compared": self.selections_compared,
            "disagreements": self.disagreements(),
            "by_kind": self.by_kind,
            "candidate_faults": self.candidate_faults,
            "samples": self.samples.iter().map(sample_json).collect::<Vec<_>>(),
        })
    }
}

fn sample_json(sample: &ReplaySample) -> Value {
    match sample {
        ReplaySample::Verdict {
            now_ms,
            facts,
            recorded,
            candidate,
            kinds,
        } => json!({
            "call": "assess",
            "now_ms": now_ms,
            "session": facts.id,
            "differences": kinds,
            "facts": facts_json(facts),
            "recorded": verdict_json(recorded),
            "candidate": verdict_json(candidate),
        }),
        ReplaySample::Selection {
            now_ms,
            excess,
            recorded,
            candidate,
        } => json!({
            "call": "select-evictions",
            "now_ms": now_ms,
            "excess": excess,
            "recorded": recorded,
            "candidate": candidate,
        }),
    }
}

fn action_text(verdict: &Verdict) -> String {
    match &verdict.action {
        Action::Evict(eviction) => format!("evict {} ({})", eviction.reason, eviction.close_code),
        other => other.name().to_owned(),
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recorded = &self.header.policy;
        writeln!(
            f,
            "replayed {} calls recorded from {} ({}) through {} ({}) in {:.1} ms: {:.0} calls/s",
            self.total_calls(),
            recorded.name,
            short(&recorded.sha256),
            self.candidate.0,
            short(&self.candidate.1),
            self.elapsed.as_secs_f64() * 1e3,
            self.calls_per_second(),
        )?;
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        writeln!(f, "calls: {}", calls.join(", "))?;
        match &self.trace_end {
            Some(reason) => writeln!(f, "the recording ended: {reason}")?,
            None => writeln!(f, "the trace is truncated; replayed what was intact")?,
        }
        if self.header.sessions_at_start > 0 {
            writeln!(
                f,
                "note: {} sessions were open before the recording started; a policy that remembers events did not see their history",
                self.header.sessions_at_start
            )?;
        }
        writeln!(
            f,
            "sessions compared: {}, disagreeing: {}; capacity choices compared: {}",
            self.sessions_compared, self.sessions_disagreeing, self.selections_compared
        )?;
        if self.by_kind.is_empty() {
            writeln!(f, "disagreements: 0")?;
        } else {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            writeln!(
                f,
                "disagreements: {} ({})",
                self.disagreements(),
                kinds.join(", ")
            )?;
        }
        for (fault, n) in &self.candidate_faults {
            writeln!(
                f,
                "candidate faulted on {n} batches ({fault}); those were not compared"
            )?;
        }
        for sample in &self.samples {
            match sample {
                ReplaySample::Verdict {
                    now_ms,
                    facts,
                    recorded,
                    candidate,
                    kinds,
                } => writeln!(
                    f,
                    "  at {now_ms} ms session {} [{}]: recorded {} (health {}, {}), candidate {} (health {}, {}); facts {}",
                    facts.id,
                    kinds.join(", "),
                    action_text(recorded),
                    recorded.health,
                    recorded.tier.as_str(),
                    action_text(candidate),
                    candidate.health,
                    candidate.tier.as_str(),
                    facts_json(facts),
                )?,
                ReplaySample::Selection {
                    now_ms,
                    excess,
                    recorded,
                    candidate,
                } => writeln!(
                    f,
                    "  at {now_ms} ms, {excess} sessions to drop: recorded {recorded:?}, candidate {candidate:?}"
                )?,
            }
        }
        Ok(())
    }
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Runs `candidate` over every call of `trace` and compares.
pub fn replay(
    mut trace: TraceReader,
    mut candidate: Supervisor,
    options: ReplayOptions,
) -> Result<ReplayReport, TraceError> {
    let started = Instant::now();
    let sandbox = candidate.sandbox();
    let mut report = ReplayReport {
        header: trace.header().clone(),
        candidate: (sandbox.name().to_string(), sandbox.sha256().to_owned()),
        trace_end: None,
        calls: BTreeMap::new(),
        sessions_compared: 0,
        sessions_disagreeing: 0,
        selections_compared: 0,
        by_kind: BTreeMap::new(),
        candidate_faults: BTreeMap::new(),
        samples: Vec::new(),
        elapsed: Duration::ZERO,
    };
    while let Some(record) = trace.next_record()? {
        match record {
            TraceRecord::OnEvents { events } => {
                *report.calls.entry("on-events").or_default() += 1;
                candidate.on_events(&events);
            }
            TraceRecord::Assess {
                now_ms,
                sessions,
                verdicts,
                source: _,
            } => {
                *report.calls.entry("assess").or_default() += 1;
                let outcome = candidate.assess(now_ms, &SessionColumns::from(&sessions[..]));
                let fault = match outcome.source {
                    VerdictSource::Plugin => None,
                    VerdictSource::Fallback(kind) => Some(kind.to_string()),
                    VerdictSource::Disabled => Some("disabled".to_owned()),
                };
                if let Some(fault) = fault {
                    *report.candidate_faults.entry(fault).or_default() += 1;
                    continue;
                }
                compare_verdicts(
                    &mut report,
                    &options,
                    now_ms,
                    &sessions,
                    &verdicts,
                    &outcome.verdicts.to_rows(),
                );
            }
            TraceRecord::SelectEvictions {
                now_ms,
                excess,
                sessions,
                chosen,
            } => {
                *report.calls.entry("select-evictions").or_default() += 1;
                let answer = candidate.select_evictions(
                    now_ms,
                    &SessionColumns::from(&sessions[..]),
                    excess,
                );
                report.selections_compared += 1;
                let as_set = |ids: &Option<Vec<u64>>| {
                    ids.as_ref()
                        .map(|ids| ids.iter().copied().collect::<BTreeSet<_>>())
                };
                if as_set(&chosen) != as_set(&answer) {
                    *report.by_kind.entry("selection").or_default() += 1;
                    if report.samples.len() < options.samples {
                        report.samples.push(ReplaySample::Selection {
                            now_ms,
                            excess,
                            recorded: chosen,
                            candidate: answer,
                        });
                    }
                }
            }
            // The reader consumes the end record itself.
            TraceRecord::End { .. } => {}
        }
    }
    report.trace_end = trace.ended().map(str::to_owned);
    report.elapsed = started.elapsed();
    Ok(report)
}

fn compare_verdicts(
    report: &mut ReplayReport,
    options: &ReplayOptions,
    now_ms: u64,
    sessions: &[SessionFacts],
    recorded: &[Verdict],
    candidate: &[Verdict],
) {
    let by_session: BTreeMap<u64, &Verdict> = candidate.iter().map(|v| (v.session, v)).collect();
    for recorded in recorded {
        let Some(answer) = by_session.get(&recorded.session) else {
            continue;
        };
        report.sessions_compared += 1;
        let kinds = differences(recorded, answer, options.health_threshold);
        if kinds.is_empty() {
            continue;
        }
        report.sessions_disagreeing += 1;
        for kind in &kinds {
            *report.by_kind.entry(kind).or_default() += 1;
        }
        if report.samples.len() < options.samples {
            if let Some(facts) = sessions.iter().find(|f| f.id == recorded.session) {
                report.samples.push(ReplaySample::Verdict {
                    now_ms,
                    facts: Box::new(facts.clone()),
                    recorded: recorded.clone(),
                    candidate: (*answer).clone(),
                    kinds,
                });
            }
        }
    }
}

/// The kinds of difference between two verdicts on one session.
fn differences(recorded: &Verdict, candidate: &Verdict, health_threshold: u8) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    match (&recorded.action, &candidate.action) {
        (Action::Evict(a), Action::Evict(b)) => {
            if a.reason != b.reason {
                kinds.push("reason");
            }
            if a.close_code != b.close_code {
                kinds.push("close-code");
            }
        }
        (a, b) if a != b => kinds.push("action"),
        _ => {}
    }
    if recorded.tier != candidate.tier {
        kinds.push("tier");
    }
    if recorded.health.abs_diff(candidate.health) > health_threshold {
        kinds.push("health");
    }
    if recorded.reassess_in_ms != candidate.reassess_in_ms {
        kinds.push("reassess");
    }
    kinds
}

#[cfg(test)]
mod tests {
    use vigil_policy_sdk::{Eviction, Tier};

    use super::*;

    fn verdict(action: Action, health: u8, tier: Tier) -> Verdict {
        Verdict {
            session: 1,
            health,
            tier,
            action,
            reassess_in_ms: 1_000,
        }
    }

    #[test]
    fn each_kind_of_difference_is_named() {
        let keep = verdict(Action::Keep, 90, Tier::Regular);
        assert!(differences(&keep, &keep, 0).is_empty());
        let evict = |reason: &str, code| {
            verdict(
                Action::Evict(Eviction::new(reason, code)),
                90,
                Tier::Regular,
            )
        };
        assert_eq!(differences(&keep, &evict("idle", 4003), 0), vec!["action"]);
        assert_eq!(
            differences(&evict("idle", 4003), &evict("backlog", 4002), 0),
            vec!["reason", "close-code"]
        );
        let other = verdict(Action::Keep, 85, Tier::Fast);
        assert_eq!(differences(&keep, &other, 0), vec!["tier", "health"]);
        assert_eq!(differences(&keep, &other, 5), vec!["tier"]);
        let mut later = keep.clone();
        later.reassess_in_ms = 2_000;
        assert_eq!(differences(&keep, &later, 0), vec!["reassess"]);
    }
}

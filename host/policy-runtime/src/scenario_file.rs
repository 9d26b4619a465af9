//! `vigil policy test`: scenario files that say what a policy must do, run
//! against a plugin, each answer checked, every difference shown.
//!
//! A file (TOML) holds `[[scenario]]` tables: one session's facts (any
//! subset over an established, healthy session), optional events before
//! the call, `now_ms`, and what the verdict must be. `[[selection]]` tables
//! do the same for `select-evictions`: a batch, an excess, and the ids (or
//! how many) the policy must name. Each case runs on a fresh instance of the
//! plugin, so cases cannot leak state into each other.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::Deserialize;

use crate::columns::SessionColumns;
use crate::sandbox::Sandbox;
use crate::scenarios::established;
use crate::sdk::{
    Action, Event, EventKind, FrameKind, SessionFacts, SessionId, TcpFacts, Tier, Verdict,
};

/// A whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// `assess` cases.
    #[serde(default)]
    pub scenario: Vec<AssessCase>,
    /// `select-evictions` cases.
    #[serde(default)]
    pub selection: Vec<SelectionCase>,
}

/// The `now_ms` a case runs at unless it says otherwise.
pub const DEFAULT_NOW_MS: u64 = 1_000_000_000;

/// One `assess` case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessCase {
    /// Shown in the report.
    pub name: String,
    /// The call's `now-ms`. Default [`DEFAULT_NOW_MS`].
    pub now_ms: Option<u64>,
    /// What differs from an established, healthy session.
    #[serde(default)]
    pub facts: FactsSpec,
    /// Events handed to `on-events` first, oldest first.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// What the verdict must be.
    pub expect: Expectation,
}

/// Facts, each optional; unset ones are an established session's: 20 min
/// old, chatty, answering pings in 3 ms, regular tier, class `default`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the WIT's `session-batch` documents each
pub struct FactsSpec {
    pub id: Option<SessionId>,
    pub class: Option<String>,
    pub age_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub app_idle_ms: Option<u64>,
    pub since_pong_ms: Option<u64>,
    pub outstanding_pings: Option<u32>,
    pub oldest_ping_ms: Option<u64>,
    pub pong_overdue: Option<bool>,
    pub last_rtt_ms: Option<u32>,
    pub send_errors: Option<u32>,
    pub transport_errors: Option<u32>,
    pub queued_bytes: Option<u64>,
    pub queued_frames: Option<u32>,
    pub backlog_ms: Option<u64>,
    pub dropped_frames: Option<u32>,
    pub tier: Option<TierName>,
    /// False: no TCP facts for this session.
    pub tcp: Option<bool>,
    pub tcp_rtt_us: Option<u32>,
    pub tcp_total_retransmits: Option<u32>,
    pub tcp_unacked: Option<u32>,
}

/// A tier as files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum TierName {
    Fast,
    Regular,
    KeepAlive,
}

impl TierName {
    fn tier(self) -> Tier {
        match self {
            TierName::Fast => Tier::Fast,
            TierName::Regular => Tier::Regular,
            TierName::KeepAlive => Tier::KeepAlive,
        }
    }
}

/// An event about the case's session, `ago_ms` before `now_ms`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)]
pub enum EventSpec {
    Connected {
        #[serde(default)]
        ago_ms: u64,
    },
    FrameReceived {
        #[serde(default)]
        ago_ms: u64,
        #[serde(default)]
        size_bytes: u32,
    },
    PingSent {
        #[serde(default)]
        ago_ms: u64,
    },
    PongReceived {
        #[serde(default)]
        ago_ms: u64,
        rtt_ms: u32,
    },
    SendFailed {
        #[serde(default)]
        ago_ms: u64,
    },
    Backpressure {
        #[serde(default)]
        ago_ms: u64,
        queued_bytes: u64,
    },
    CloseReceived {
        #[serde(default)]
        ago_ms: u64,
        code: u16,
    },
    Tick {
        #[serde(default)]
        ago_ms: u64,
    },
}

/// What a verdict must be; every field optional but the action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `keep`, `ping` or `evict`.
    pub action: ActionName,
    /// The eviction's reason.
    pub reason: Option<String>,
    /// The eviction's close code.
    pub close_code: Option<u16>,
    /// The tier.
    pub tier: Option<TierName>,
    /// Health within `[low, high]`, inclusive.
    pub health: Option<[u8; 2]>,
    /// `reassess-in-ms` at most this.
    pub reassess_at_most_ms: Option<u32>,
}

/// An action as files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum ActionName {
    Keep,
    Ping,
    Evict,
}

/// One `select-evictions` case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionCase {
    /// Shown in the report.
    pub name: String,
    /// The call's `now-ms`.
    pub now_ms: Option<u64>,
    /// The batch; ids default to 1, 2, 3, ... in order.
    pub sessions: Vec<FactsSpec>,
    /// How many the host is over its limit.
    pub excess: u32,
    /// Exactly these ids, in any order.
    pub expect_ids: Option<Vec<SessionId>>,
    /// Exactly this many.
    pub expect_count: Option<usize>,
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioFileError {
    /// Not TOML, or not this shape.
    #[error("{0}")]
    Parse(String),
    /// Parsed, but says nothing or says it wrongly.
    #[error("{0}")]
    Invalid(String),
}

impl ScenarioFile {
    /// Parses and checks a file's text.
    pub fn parse(text: &str) -> Result<Self, ScenarioFileError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|error| ScenarioFileError::Parse(error.to_string()))?;
        if file.scenario.is_empty() && file.selection.is_empty() {
            return Err(ScenarioFileError::Invalid(
                "no [[scenario]] or [[selection]] in the file".to_owned(),
            ));
        }
        for case in &file.selection {
            if case.expect_ids.is_none() && case.expect_count.is_none() {
                return Err(ScenarioFileError::Invalid(format!(
                    "selection {:?} expects nothing: give expect_ids or expect_count",
                    case.name
                )));
            }
        }
        Ok(file)
    }
}

impl FactsSpec {
    fn facts(&self, default_id: SessionId) -> SessionFacts {
        let mut facts = established(self.id.unwrap_or(default_id));
        if let Some(class) = &self.class {
            facts.client_class = Arc::from(class.as_str());
        }
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(value) = self.$field { facts.$field = value; } )* };
        }
        set!(
            age_ms,
            idle_ms,
            app_idle_ms,
            outstanding_pings,
            pong_overdue,
            send_errors,
            transport_errors,
            queued_bytes,
            queued_frames,
            backlog_ms,
            dropped_frames
        );
        if let Some(value) = self.since_pong_ms {
            facts.since_pong_ms = Some(value);
        }
        if let Some(value) = self.oldest_ping_ms {
            facts.oldest_ping_ms = Some(value);
        }
        if let Some(value) = self.last_rtt_ms {
            facts.last_rtt_ms = Some(value);
        }
        if let Some(tier) = self.tier {
            facts.tier = tier.tier();
        }
        if self.tcp == Some(false) {
            facts.tcp = None;
        } else if let Some(tcp) = facts.tcp.as_mut() {
            let TcpFacts {
                rtt_us,
                total_retransmits,
                unacked,
                ..
            } = tcp;
            *rtt_us = self.tcp_rtt_us.unwrap_or(*rtt_us);
            *total_retransmits = self.tcp_total_retransmits.unwrap_or(*total_retransmits);
            *unacked = self.tcp_unacked.unwrap_or(*unacked);
        }
        facts
    }
}

impl EventSpec {
    fn event(&self, session: SessionId, class: &str, now_ms: u64) -> Event {
        let (ago_ms, kind) = match *self {
            EventSpec::Connected { ago_ms } => (
                ago_ms,
                EventKind::Connected {
                    session,
                    client_class: class.to_owned(),
                },
            ),
            EventSpec::FrameReceived { ago_ms, size_bytes } => (
                ago_ms,
                EventKind::FrameReceived {
                    session,
                    kind: FrameKind::Text,
                    size_bytes,
                },
            ),
            EventSpec::PingSent { ago_ms } => (ago_ms, EventKind::PingSent { session }),
            EventSpec::PongReceived { ago_ms, rtt_ms } => {
                (ago_ms, EventKind::PongReceived { session, rtt_ms })
            }
            EventSpec::SendFailed { ago_ms } => (
                ago_ms,
                EventKind::SendFailed {
                    session,
                    detail: "scenario".to_owned(),
                },
            ),
            EventSpec::Backpressure {
                ago_ms,
                queued_bytes,
            } => (
                ago_ms,
                EventKind::Backpressure {
                    session,
                    queued_bytes,
                },
            ),
            EventSpec::CloseReceived { ago_ms, code } => {
                (ago_ms, EventKind::CloseReceived { session, code })
            }
            EventSpec::Tick { ago_ms } => (ago_ms, EventKind::Tick),
        };
        Event {
            at_ms: now_ms.saturating_sub(ago_ms),
            kind,
        }
    }
}

/// How one case came out.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `assess` or `select-evictions`.
    pub call: &'static str,
    /// What differed from the expectation; empty when it passed.
    pub differences: Vec<String>,
}

impl CaseResult {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Every case of `file` against `sandbox`, each on a fresh instance.
pub fn run_file(sandbox: &mut Sandbox, file: &ScenarioFile) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in &file.scenario {
        results.push(CaseResult {
            name: case.name.clone(),
            call: "assess",
            differences: run_assess(sandbox, case),
        });
    }
    for case in &file.selection {
        results.push(CaseResult {
            name: case.name.clone(),
            call: "select-evictions",
            differences: run_selection(sandbox, case),
        });
    }
    results
}

fn run_assess(sandbox: &mut Sandbox, case: &AssessCase) -> Vec<String> {
    if let Err(fault) = sandbox.restart() {
        return vec![format!("the plugin did not start: {fault}")];
    }
    let now_ms = case.now_ms.unwrap_or(DEFAULT_NOW_MS);
    let facts = case.facts.facts(1);
    let events: Vec<Event> = case
        .events
        .iter()
        .map(|event| event.event(facts.id, &facts.client_class, now_ms))
        .collect();
    if !events.is_empty() {
        if let Err(fault) = sandbox.on_events(&events) {
            return vec![format!("on-events faulted: {fault}")];
        }
    }
    let batch = SessionColumns::from(std::slice::from_ref(&facts));
    let verdicts = match sandbox.assess(now_ms, &batch) {
        Ok(verdicts) => verdicts.to_rows(),
        Err(fault) => return vec![format!("assess faulted: {fault}")],
    };
    match verdicts.as_slice() {
        [verdict] if verdict.session == facts.id => compare(&case.expect, verdict),
        _ => vec![format!(
            "expected one verdict for session {}, got {verdicts:?}",
            facts.id
        )],
    }
}

/// The differences between what was expected and `verdict`.
fn compare(expect: &Expectation, verdict: &Verdict) -> Vec<String> {
    let mut differences = Vec::new();
    let action = action_text(&verdict.action);
    let expected_action = match expect.action {
        ActionName::Keep => "keep",
        ActionName::Ping => "ping",
        ActionName::Evict => "evict",
    };
    if verdict.action.name() != expected_action {
        differences.push(format!("action: expected {expected_action}, got {action}"));
    }
    if let Action::Evict(eviction) = &verdict.action {
        if let Some(reason) = &expect.reason {
            if *eviction.reason != **reason {
                differences.push(format!(
                    "reason: expected {reason:?}, got {:?}",
                    eviction.reason
                ));
            }
        }
        if let Some(code) = expect.close_code {
            if eviction.close_code != code {
                differences.push(format!(
                    "close code: expected {code}, got {}",
                    eviction.close_code
                ));
            }
        }
    }
    if let Some(tier) = expect.tier {
        if verdict.tier != tier.tier() {
            differences.push(format!(
                "tier: expected {}, got {}",
                tier.tier().as_str(),
                verdict.tier.as_str()
            ));
        }
    }
    if let Some([low, high]) = expect.health {
        if !(low..=high).contains(&verdict.health) {
            differences.push(format!(
                "health: expected {low}..={high}, got {}",
                verdict.health
            ));
        }
    }
    if let Some(most) = expect.reassess_at_most_ms {
        if verdict.reassess_in_ms > most {
            differences.push(format!(
                "reassess: expected at most {most} ms, got {} ms",
                verdict.reassess_in_ms
            ));
        }
    }
    differences
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Evict(eviction) => format!("evict {} ({})", eviction.reason, eviction.close_code),
        other => other.name().to_owned(),
    }
}

fn run_selection(sandbox: &mut Sandbox, case: &SelectionCase) -> Vec<String> {
    if let Err(fault) = sandbox.restart() {
        return vec![format!("the plugin did not start: {fault}")];
    }
    let now_ms = case.now_ms.unwrap_or(DEFAULT_NOW_MS);
    let batch: Vec<SessionFacts> = case
        .sessions
        .iter()
        .zip(1..)
        .map(|(spec, id)| spec.facts(id))
        .collect();
    let batch = SessionColumns::from(&batch[..]);
    let mut chosen = match sandbox.select_evictions(now_ms, &batch, case.excess) {
        Ok(chosen) => chosen,
        Err(fault) => return vec![format!("select-evictions faulted: {fault}")],
    };
    chosen.sort_unstable();
    let mut differences = Vec::new();
    if let Some(expected) = &case.expect_ids {
        let mut expected = expected.clone();
        expected.sort_unstable();
        if chosen != expected {
            differences.push(format!("ids: expected {expected:?}, got {chosen:?}"));
        }
    }
    if let Some(count) = case.expect_count {
        if chosen.len() != count {
            differences.push(format!(
                "count: expected {count}, got {} ({chosen:?})",
                chosen.len()
            ));
        }
    }
    differences
}

/// The results as text, one line per case, differences indented below.
pub struct TextReport<'a>(pub &'a [CaseResult]);

impl fmt::Display for TextReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in self.0 {
            let mark = if result.passed() { "pass" } else { "FAIL" };
            writeln!(f, "{mark}  {:<16} {}", result.call, result.name)?;
            for difference in &result.differences {
                writeln!(f, "        {difference}")?;
            }
        }
        let failed = self.0.iter().filter(|result| !result.passed()).count();
        write!(
            f,
            "{} scenarios: {} passed, {failed} failed",
            self.0.len(),
            self.0.len() - failed
        )
    }
}

/// The results as JUnit XML, for CI.
pub fn junit(suite: &str, results: &[CaseResult]) -> String {
    let failed = results.iter().filter(|result| !result.passed()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">",
        escape(suite),
        results.len()
    );
    for result in results {
        let _ = write!(
            xml,
            "  <testcase classname=\"{}\" name=\"{}\"",
            result.call,
            escape(&result.name)
        );
        if result.passed() {
            xml.push_str("/>\n");
        } else {
            let message = result.differences.join("; ");
            let _ = writeln!(
                xml,
                ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
                escape(&message),
                escape(&result.differences.join("\n"))
            );
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_checked_before_anything_runs() {
        assert!(ScenarioFile::parse("").is_err(), "empty");
        assert!(ScenarioFile::parse("[[scenario]]\nname = 1").is_err());
        let unknown = "[[scenario]]\nname = \"x\"\nfacts = { send_errrors = 3 }\nexpect = { action = \"keep\" }";
        assert!(
            ScenarioFile::parse(unknown)
                .err()
                .is_some_and(|e| e.to_string().contains("send_errrors")),
            "a misspelt fact is named"
        );
        let no_expectation = "[[selection]]\nname = \"x\"\nsessions = [{}]\nexcess = 1";
        assert!(ScenarioFile::parse(no_expectation).is_err());
        let good = "[[scenario]]\nname = \"x\"\nfacts = { send_errors = 3, tier = \"keep-alive\" }\nexpect = { action = \"evict\", health = [0, 50] }";
        assert!(ScenarioFile::parse(good).is_ok());
    }

    #[test]
    fn every_difference_is_named() {
        let expect = Expectation {
            action: ActionName::Evict,
            reason: None,
            close_code: None,
            tier: Some(TierName::Fast),
            health: Some([0, 40]),
            reassess_at_most_ms: Some(1_000),
        };
        let verdict = Verdict {
            session: 1,
            health: 90,
            tier: Tier::Regular,
            action: Action::Keep,
            reassess_in_ms: 5_000,
        };
        let differences = compare(&expect, &verdict);
        assert_eq!(differences.len(), 4, "{differences:?}");
        assert_eq!(differences[0], "action: expected evict, got keep");
    }

    #[test]
    fn junit_escapes_what_it_quotes() {
        let results = vec![CaseResult {
            name: "a <b> & \"c\"".to_owned(),
            call: "assess",
            differences: vec!["action: expected evict, got keep".to_owned()],
        }];
        let xml = junit("suite", &results);
        assert!(xml.contains("a &lt;b&gt; &amp; &quot;c&quot;"), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
    }
}

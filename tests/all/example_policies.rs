//! The example policies under `plugins/` do what their documentation says,
//! run through wasmtime as the host runs them.

use vigil::policy::scenarios::{scenarios, SCENARIO_NOW_MS};
use vigil::policy::Sandbox;
use vigil::policy::SessionColumns;
use vigil::sdk::{Action, Event, EventKind, SessionFacts, Tier, Verdict};
use vigil_tests::{load, test_plugins};

fn loaded(name: &str, bytes: &[u8], config: &str) -> Sandbox {
    match load(name, bytes, config) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("{name} should load: {error}"),
    }
}

fn scenario_verdicts(sandbox: &mut Sandbox) -> Vec<(&'static str, Verdict)> {
    let table = scenarios();
    let facts: Vec<SessionFacts> = table.iter().map(|s| s.facts.clone()).collect();
    let verdicts = match sandbox.assess(SCENARIO_NOW_MS, &SessionColumns::from(&facts[..])) {
        Ok(verdicts) => verdicts.to_rows(),
        Err(fault) => panic!("assess faulted: {fault}"),
    };
    table.iter().map(|s| s.name).zip(verdicts).collect()
}

fn reason(verdicts: &[(&str, Verdict)], scenario: &str) -> Option<String> {
    let verdict = verdicts
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, v)| v);
    match verdict.map(|v| &v.action) {
        Some(Action::Evict(eviction)) => Some(eviction.reason.to_string()),
        Some(_) => None,
        None => panic!("no verdict for {scenario}"),
    }
}

#[test]
fn strict_policy_evicts_at_the_first_sign_of_trouble() {
    let mut strict = loaded("strict", test_plugins::STRICT, "{}");
    let verdicts = scenario_verdicts(&mut strict);
    assert_eq!(reason(&verdicts, "healthy"), None);
    assert_eq!(
        reason(&verdicts, "missed-pong").as_deref(),
        Some("missed-pong"),
        "one missed pong is enough"
    );
    assert_eq!(
        reason(&verdicts, "overdue-pong").as_deref(),
        Some("missed-pong")
    );
    assert_eq!(
        reason(&verdicts, "send-failures").as_deref(),
        Some("send-failure")
    );
    assert_eq!(
        reason(&verdicts, "sustained-backlog").as_deref(),
        Some("backlog")
    );
    assert_eq!(
        reason(&verdicts, "quiet").as_deref(),
        Some("idle"),
        "a short idle limit"
    );
    assert!(
        verdicts.iter().all(|(_, v)| v.tier == Tier::Fast),
        "everything is watched closely"
    );
}

#[test]
fn lenient_policy_never_evicts_silent_sessions_that_answer_pings() {
    let mut lenient = loaded("lenient", test_plugins::LENIENT, "{}");
    let verdicts = scenario_verdicts(&mut lenient);
    for silent in ["quiet", "long-app-idle"] {
        assert_eq!(reason(&verdicts, silent), None, "{silent} was evicted");
        let tier = verdicts
            .iter()
            .find(|(name, _)| *name == silent)
            .map(|(_, v)| v.tier);
        assert_eq!(tier, Some(Tier::KeepAlive), "{silent}");
    }
    assert_eq!(
        reason(&verdicts, "overdue-pong"),
        None,
        "one overdue pong is not enough"
    );

    let mut dead = scenarios()[3].facts.clone(); // overdue-pong
    dead.outstanding_pings = 3;
    let verdict = match lenient.assess(SCENARIO_NOW_MS, &SessionColumns::from(&[dead][..])) {
        Ok(verdicts) => verdicts.to_rows(),
        Err(fault) => panic!("{fault}"),
    };
    assert!(
        matches!(&verdict[0].action, Action::Evict(e) if &*e.reason == "pong-timeout"),
        "{verdict:?}"
    );
}

#[test]
fn capacity_policy_enforces_class_quotas_and_drops_the_least_healthy_then_oldest() {
    let mut capacity = loaded(
        "capacity",
        test_plugins::CAPACITY,
        r#"{"max_per_class": {"onebot": 2}}"#,
    );
    let sessions: Vec<SessionFacts> = (1..=4u64)
        .map(|id| SessionFacts {
            age_ms: 10_000 * id, // session 1 is the newest
            ..SessionFacts::new(id, "onebot")
        })
        .collect();
    let events: Vec<Event> = sessions
        .iter()
        .map(|f| Event {
            at_ms: 1,
            kind: EventKind::Connected {
                session: f.id,
                client_class: "onebot".to_owned(),
            },
        })
        .collect();
    if let Err(fault) = capacity.on_events(&events) {
        panic!("{fault}");
    }
    let verdicts = match capacity.assess(50_000, &SessionColumns::from(&sessions[..])) {
        Ok(verdicts) => verdicts,
        Err(fault) => panic!("{fault}"),
    };
    let over_quota: Vec<u64> = verdicts
        .rows()
        .filter(|v| matches!(&v.action, Action::Evict(e) if &*e.reason == "class-quota"))
        .map(|v| v.session)
        .collect();
    assert_eq!(over_quota, [1, 2], "the two newest go over a quota of two");

    // Capacity pressure: the unhealthy one first, then the longest-connected.
    let mut pressured = sessions.clone();
    pressured[1].pong_overdue = true;
    pressured[1].outstanding_pings = 1;
    let chosen = match capacity.select_evictions(50_000, &SessionColumns::from(&pressured[..]), 2) {
        Ok(chosen) => chosen,
        Err(fault) => panic!("{fault}"),
    };
    assert_eq!(chosen, [2, 4]);
}

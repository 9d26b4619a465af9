//! The default policy through wasmtime: the verdicts it documents, and the
//! same verdicts as its native build (the host's fallback).

use vigil::policy::scenarios::{self, capacity_batch, SCENARIO_NOW_MS};
use vigil::policy::SandboxLimits;
use vigil::sdk::{Action, Policy, Tier, Verdict};
use vigil_default_policy::{close_codes, DefaultPolicy};
use vigil_tests::{generated_facts, load, load_with_limits, DEFAULT_POLICY};

fn scenario_verdicts() -> Vec<(&'static str, Verdict)> {
    let mut sandbox = match load("default-policy", DEFAULT_POLICY, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("default policy should load: {error}"),
    };
    let report = match scenarios::run_check(&mut sandbox, 20) {
        Ok(report) => report,
        Err(error) => panic!("default policy should pass its own check: {error}"),
    };
    report
        .rows
        .into_iter()
        .map(|(scenario, verdict)| (scenario.name, verdict))
        .collect()
}

fn verdict_for<'a>(verdicts: &'a [(&'static str, Verdict)], name: &str) -> &'a Verdict {
    match verdicts.iter().find(|(scenario, _)| *scenario == name) {
        Some((_, verdict)) => verdict,
        None => panic!("no verdict for scenario {name}"),
    }
}

fn evicted_for(verdict: &Verdict) -> Option<(&str, u16)> {
    match &verdict.action {
        Action::Evict(eviction) => Some((eviction.reason.as_str(), eviction.close_code)),
        _ => None,
    }
}

#[test]
fn each_scenario_gets_the_documented_verdict_through_wasm() {
    let verdicts = scenario_verdicts();

    let healthy = verdict_for(&verdicts, "healthy");
    assert_eq!(
        (healthy.health, healthy.tier, &healthy.action),
        (100, Tier::Regular, &Action::Keep)
    );

    let new = verdict_for(&verdicts, "new");
    assert_eq!(
        (new.tier, &new.action),
        (Tier::Fast, &Action::Keep),
        "new sessions are watched closely"
    );

    let missed = verdict_for(&verdicts, "missed-pong");
    assert_eq!(
        missed.action,
        Action::Keep,
        "a pong that is late but not overdue is no reason to evict"
    );
    assert!(missed.health < 100, "an unanswered ping costs health");

    let overdue = verdict_for(&verdicts, "overdue-pong");
    assert_eq!(
        evicted_for(overdue),
        Some(("pong-timeout", close_codes::PONG_TIMEOUT))
    );

    let failing = verdict_for(&verdicts, "send-failures");
    assert_eq!(
        evicted_for(failing),
        Some(("send-failures", close_codes::SEND_FAILURES))
    );

    let brief = verdict_for(&verdicts, "brief-backlog");
    assert_eq!(
        brief.action,
        Action::Ping,
        "a backed-up queue is probed before anything else"
    );

    let sustained = verdict_for(&verdicts, "sustained-backlog");
    assert_eq!(
        evicted_for(sustained),
        Some(("backlog", close_codes::BACKLOG))
    );

    let quiet = verdict_for(&verdicts, "quiet");
    assert_eq!(
        (quiet.tier, &quiet.action),
        (Tier::KeepAlive, &Action::Keep)
    );

    let idle = verdict_for(&verdicts, "long-app-idle");
    assert_eq!(idle.tier, Tier::KeepAlive);
    assert_eq!(evicted_for(idle), Some(("idle", close_codes::IDLE)));

    let slow = verdict_for(&verdicts, "slow-transport");
    assert_eq!(
        slow.tier,
        Tier::Fast,
        "a slow, lossy transport is watched closely"
    );
    assert!(
        slow.health < 60,
        "slow RTT, retransmits and unacked data cost health: {}",
        slow.health
    );
}

#[test]
fn capacity_pressure_drops_the_least_healthy_sessions() {
    let batch = capacity_batch(20);
    let mut sandbox = match load("default-policy", DEFAULT_POLICY, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("default policy should load: {error}"),
    };
    let chosen = match sandbox.select_evictions(SCENARIO_NOW_MS, &batch, 3) {
        Ok(chosen) => chosen,
        Err(fault) => panic!("select-evictions faulted: {fault}"),
    };
    // Two sessions have an overdue pong (the 7th and 14th): they go first;
    // the third choice is one of those with send failures, and no session
    // without trouble is chosen.
    let facts_of = |id: &u64| match batch.iter().find(|f| f.id == *id) {
        Some(facts) => facts,
        None => panic!("chose session {id}, which was not offered"),
    };
    assert_eq!(chosen.len(), 3);
    assert!(
        facts_of(&chosen[0]).pong_overdue && facts_of(&chosen[1]).pong_overdue,
        "{chosen:?}"
    );
    assert!(facts_of(&chosen[2]).send_errors > 0, "{chosen:?}");
}

#[test]
fn wasm_and_native_verdicts_agree_on_generated_facts() {
    let configs = [
        "{}",
        r#"{"idle_evict_ms": 0, "send_failures_to_evict": 1,
            "classes": {"onebot": {"keep_alive_after_ms": 30000, "idle_evict_ms": 3600000},
                        "bots": {"slow_rtt_ms": 200, "fast_below_health": 80}}}"#,
    ];
    for (round, config) in configs.iter().enumerate() {
        // This test is about agreement, not speed: a generous deadline keeps
        // a busy test machine from turning it into a timing test.
        let limits = SandboxLimits {
            call_deadline: std::time::Duration::from_secs(5),
            ..SandboxLimits::default()
        };
        let mut sandbox = match load_with_limits("default-policy", DEFAULT_POLICY, config, limits) {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("config {round} should load: {error}"),
        };
        let mut native = DefaultPolicy::default();
        if let Err(error) = native.configure(config) {
            panic!("config {round} should be valid natively: {error}");
        }
        let facts = generated_facts(4_000, 42 + round as u64);
        let from_wasm = match sandbox.assess(5_000_000, &facts) {
            Ok(verdicts) => verdicts,
            Err(fault) => panic!("assess faulted: {fault}"),
        };
        let from_native = native.assess(5_000_000, &facts);
        assert_eq!(from_wasm.len(), facts.len());
        for (wasm, native) in from_wasm.iter().zip(&from_native) {
            assert_eq!(wasm, native, "config {round}: wasm and native disagree");
        }
        // The generated facts must exercise every kind of decision, or the
        // agreement above proves little.
        for wanted in ["keep", "ping", "evict"] {
            assert!(
                from_native.iter().any(|v| v.action.name() == wanted),
                "config {round}: generated facts never led to {wanted}"
            );
        }

        let chosen_wasm = sandbox.select_evictions(5_000_000, &facts, 250);
        let chosen_native = native.select_evictions(5_000_000, &facts, 250);
        assert_eq!(
            chosen_wasm.ok(),
            Some(chosen_native),
            "config {round}: evictions differ"
        );
    }
}

#[test]
fn default_policy_config_errors_name_the_setting() {
    for (config, expected) in [
        (r#"{"fast_below_health": 300}"#, "fast_below_health"),
        (r#"{"idle_evict_ms": "ten minutes"}"#, "idle_evict_ms"),
        (r#"{"no_such_setting": 1}"#, "no_such_setting"),
        (
            r#"{"classes": {"onebot": {"overdue_pings_to_evict": 0}}}"#,
            "onebot",
        ),
        ("[1, 2, 3]", "expected a JSON object"),
        ("{not json", "invalid default-policy config"),
    ] {
        match load("default-policy", DEFAULT_POLICY, config) {
            Ok(_) => panic!("config {config} should be refused"),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains("rejected its configuration") && message.contains(expected),
                    "config {config}: unhelpful error: {message}"
                );
            }
        }
    }
}

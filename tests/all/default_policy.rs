//! The default policy through wasmtime: the verdicts it documents, and the
//! same verdicts as its native build (the host's fallback).

use vigil::policy::scenarios::{self, capacity_batch, SCENARIO_NOW_MS};
use vigil::policy::SandboxLimits;
use vigil::policy::SessionColumns;
use vigil::sdk::{Action, FactBatch, Policy, Tier, Verdict, VerdictWriter};
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
        Action::Evict(eviction) => Some((&*eviction.reason, eviction.close_code)),
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
    let chosen =
        match sandbox.select_evictions(SCENARIO_NOW_MS, &SessionColumns::from(&batch[..]), 3) {
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
        let from_wasm = match sandbox.assess(5_000_000, &SessionColumns::from(&facts[..])) {
            Ok(verdicts) => verdicts,
            Err(fault) => panic!("assess faulted: {fault}"),
        };
        let from_native = native.assess(5_000_000, &facts);
        // The columns path (what the wasm build runs) and the records path
        // (what the fallback runs) decide alike natively too.
        let mut written = VerdictWriter::with_capacity(facts.len());
        native.assess_batch(
            5_000_000,
            FactBatch::from_rows(&facts).columns(),
            &mut written,
        );
        assert_eq!(
            written.to_rows(),
            from_native,
            "config {round}: assess_batch and assess disagree"
        );
        assert_eq!(from_wasm.len(), facts.len());
        for (wasm, native) in from_wasm.rows().zip(&from_native) {
            assert_eq!(&wasm, native, "config {round}: wasm and native disagree");
        }
        // The generated facts must exercise every kind of decision, or the
        // agreement above proves little.
        for wanted in ["keep", "ping", "evict"] {
            assert!(
                from_native.iter().any(|v| v.action.name() == wanted),
                "config {round}: generated facts never led to {wanted}"
            );
        }

        let chosen_wasm =
            sandbox.select_evictions(5_000_000, &SessionColumns::from(&facts[..]), 250);
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

/// A bot that answers pings but has said nothing for three hours and whose
/// last write failed once, in `class`.
fn quiet_bot_with_one_failed_write(id: u64, class: &str) -> vigil::sdk::SessionFacts {
    let mut facts = vigil::sdk::SessionFacts::new(id, class);
    facts.age_ms = 4 * 3_600_000;
    facts.app_idle_ms = 3 * 3_600_000;
    facts.idle_ms = 10_000;
    facts.since_pong_ms = Some(10_000);
    facts.last_rtt_ms = Some(1);
    facts.tier = Tier::KeepAlive;
    facts
}

fn verdicts_through_wasm(config: &str, sessions: &[vigil::sdk::SessionFacts]) -> Vec<Verdict> {
    let mut sandbox = match load("default-policy", DEFAULT_POLICY, config) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("config {config} should load: {error}"),
    };
    match sandbox.assess(SCENARIO_NOW_MS, &SessionColumns::from(sessions)) {
        Ok(verdicts) => verdicts.to_rows(),
        Err(fault) => panic!("assess faulted: {fault:?}"),
    }
}

#[test]
fn onebot_sessions_get_the_onebot_preset_without_asking() {
    let silent_bot = quiet_bot_with_one_failed_write(1, "onebot");
    let silent_client = quiet_bot_with_one_failed_write(2, "default");
    let verdicts = verdicts_through_wasm("{}", &[silent_bot.clone(), silent_client.clone()]);
    assert_eq!(
        (verdicts[0].tier, &verdicts[0].action),
        (Tier::KeepAlive, &Action::Keep),
        "a bot silent for hours that answers pings stays"
    );
    assert_eq!(
        evicted_for(&verdicts[1]),
        Some(("idle", close_codes::IDLE)),
        "an ordinary client silent for hours is evicted as idle"
    );

    let mut failed_bot = silent_bot;
    failed_bot.send_errors = 1;
    let mut failed_client = silent_client;
    failed_client.send_errors = 1;
    failed_client.app_idle_ms = 1_000;
    let verdicts = verdicts_through_wasm("{}", &[failed_bot, failed_client]);
    assert_eq!(
        evicted_for(&verdicts[0]),
        Some(("send-failures", close_codes::SEND_FAILURES)),
        "one failed write evicts a bot"
    );
    assert!(
        evicted_for(&verdicts[1]).is_none(),
        "an ordinary client survives one failed write: {:?}",
        verdicts[1]
    );
}

#[test]
fn a_class_can_take_the_onebot_preset_or_opt_out_of_it() {
    let config = r#"{"classes": {
        "bots": {"preset": "onebot"},
        "onebot": {"preset": null},
        "tuned": {"preset": "onebot", "send_failures_to_evict": 2}
    }}"#;
    let policy = match vigil_default_policy::Config::from_json(config) {
        Ok(config) => config,
        Err(error) => panic!("config should parse: {error}"),
    };
    assert_eq!(policy.for_class("bots").idle_evict_ms, 0);
    assert_eq!(policy.for_class("bots").send_failures_to_evict, 1);
    assert_eq!(
        policy.for_class("onebot"),
        policy.base(),
        "`preset: null` leaves the class on the top-level settings"
    );
    assert_eq!(
        policy.for_class("tuned").send_failures_to_evict,
        2,
        "the class's own settings win over its preset"
    );
    assert_eq!(policy.for_class("tuned").idle_evict_ms, 0);

    for (config, expected) in [
        (r#"{"classes": {"x": {"preset": "nope"}}}"#, "`nope`"),
        (r#"{"classes": {"x": {"preset": 3}}}"#, "preset"),
    ] {
        match load("default-policy", DEFAULT_POLICY, config) {
            Ok(_) => panic!("config {config} should be refused"),
            Err(error) => assert!(
                error.to_string().contains(expected),
                "config {config}: unhelpful error: {error}"
            ),
        }
    }
}

#[test]
fn inbound_silence_evicts_only_when_configured() {
    let mut frozen = quiet_bot_with_one_failed_write(1, "onebot");
    frozen.idle_ms = 61_000;
    frozen.since_pong_ms = None;
    frozen.last_rtt_ms = None;
    let kept = verdicts_through_wasm("{}", std::slice::from_ref(&frozen));
    assert_eq!(
        kept[0].action,
        Action::Keep,
        "silence alone is not death by default"
    );
    let config = r#"{"classes": {"onebot": {"silent_evict_ms": 60000}}}"#;
    let evicted = verdicts_through_wasm(config, std::slice::from_ref(&frozen));
    assert_eq!(
        evicted_for(&evicted[0]),
        Some(("silent", close_codes::SILENT))
    );
    let native = DefaultPolicy::new(match vigil_default_policy::Config::from_json(config) {
        Ok(config) => config,
        Err(error) => panic!("config should parse: {error}"),
    })
    .verdict(&frozen);
    assert_eq!(native, evicted[0], "the fallback decides the same");
}

/// A session 20 minutes old, answering pings, last application frame
/// `app_idle_ms` ago, no ping in flight: steady, unless a test changes it.
fn steady_session(id: u64, app_idle_ms: u64) -> vigil::sdk::SessionFacts {
    let mut facts = vigil::sdk::SessionFacts::new(id, "default");
    facts.age_ms = 20 * 60_000;
    facts.app_idle_ms = app_idle_ms;
    facts.idle_ms = 1_000;
    facts.since_pong_ms = Some(1_000);
    facts.last_rtt_ms = Some(3);
    facts.tier = Tier::Regular;
    facts
}

fn default_policy(config: &str) -> DefaultPolicy {
    DefaultPolicy::new(match vigil_default_policy::Config::from_json(config) {
        Ok(config) => config,
        Err(error) => panic!("config {config} should parse: {error}"),
    })
}

#[test]
fn a_steady_session_is_next_assessed_when_its_verdict_can_change() {
    let policy = default_policy("{}");
    // Defaults: keep-alive after 120 s of application silence, the idle
    // limit's half at 300 s, the steady cap 60 s.
    let chatty = policy.verdict(&steady_session(1, 1_000));
    assert_eq!(
        (chatty.tier, &chatty.action),
        (Tier::Regular, &Action::Keep)
    );
    assert_eq!(
        chatty.reassess_in_ms, 60_000,
        "capped by reassess_steady_ms"
    );
    let quiet = policy.verdict(&steady_session(2, 100_000));
    assert_eq!(
        quiet.reassess_in_ms, 20_000,
        "back exactly when 120 s of silence moves it to keep-alive"
    );
    let later = steady_session(2, 120_000);
    assert_eq!(policy.verdict(&later).tier, Tier::KeepAlive, "and it does");

    let silent_limit = default_policy(r#"{"silent_evict_ms": 45000}"#);
    let mut client_pinging = steady_session(3, 1_000);
    client_pinging.idle_ms = 40_000;
    assert_eq!(
        silent_limit.verdict(&client_pinging).reassess_in_ms,
        5_000,
        "back when the silence limit falls due"
    );
    let half_idle_first =
        default_policy(r#"{"keep_alive_after_ms": 120000, "idle_evict_ms": 200000}"#);
    assert_eq!(
        half_idle_first
            .verdict(&steady_session(4, 90_000))
            .reassess_in_ms,
        10_000,
        "back at half the idle limit, where silence starts to cost health"
    );
}

#[test]
fn a_session_that_may_change_unreported_stays_on_its_tiers_interval() {
    let policy = default_policy("{}");
    let mut in_flight = steady_session(1, 1_000);
    in_flight.outstanding_pings = 1;
    in_flight.oldest_ping_ms = Some(10);
    let mut backlog = steady_session(2, 1_000);
    backlog.backlog_ms = 1_000;
    backlog.queued_bytes = 300_000;
    let mut slow = steady_session(3, 1_000);
    slow.last_rtt_ms = Some(1_500);
    let half_idle_penalised =
        default_policy(r#"{"keep_alive_after_ms": 120000, "idle_evict_ms": 200000}"#);
    let mut young = steady_session(4, 1_000);
    young.age_ms = 2_000;
    for (facts, why) in [
        (
            &in_flight,
            "a ping in flight: its second could go unanswered unreported",
        ),
        (&backlog, "a backlog grows by the millisecond"),
    ] {
        let verdict = policy.verdict(facts);
        assert_eq!(verdict.tier, Tier::Regular, "{why}");
        assert_eq!(verdict.reassess_in_ms, 5_000, "{why}");
    }
    let slow_verdict = policy.verdict(&slow);
    assert_eq!(
        (slow_verdict.tier, slow_verdict.reassess_in_ms),
        (Tier::Regular, 60_000),
        "a slow round trip is steady too: the next one is a heartbeat's answer"
    );
    assert_eq!(
        half_idle_penalised
            .verdict(&steady_session(5, 110_000))
            .reassess_in_ms,
        5_000,
        "silence already costs health, and a frame would lift it unreported"
    );
    assert_eq!(policy.verdict(&young).reassess_in_ms, 1_000, "fast tier");
    let mut keep_alive = steady_session(6, 200_000);
    keep_alive.tier = Tier::KeepAlive;
    assert_eq!(
        policy.verdict(&keep_alive).reassess_in_ms,
        30_000,
        "a frame moves a keep-alive session back to regular, unreported"
    );
    let off = default_policy(r#"{"reassess_steady_ms": 0}"#);
    assert_eq!(off.verdict(&steady_session(7, 1_000)).reassess_in_ms, 5_000);
}

#[test]
fn steady_sessions_get_the_same_reassessment_through_wasm() {
    let sessions = [
        steady_session(1, 1_000),
        steady_session(2, 100_000),
        steady_session(3, 119_999),
    ];
    let through_wasm = verdicts_through_wasm("{}", &sessions);
    let native: Vec<Verdict> = sessions
        .iter()
        .map(|facts| default_policy("{}").verdict(facts))
        .collect();
    assert_eq!(through_wasm, native);
    assert_eq!(
        through_wasm
            .iter()
            .map(|verdict| verdict.reassess_in_ms)
            .collect::<Vec<_>>(),
        [60_000, 20_000, 1]
    );
}

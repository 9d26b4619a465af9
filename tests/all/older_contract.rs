//! A plugin built for `vigil:policy@0.1.0`, the contract before verdicts
//! became columns, still loads and decides: its records are read as
//! verdicts, its evictions keep their reasons and close codes, its log
//! import works, and it runs in a live host. The load says it is old.

use std::time::Duration;

use vigil::policy::{Supervisor, SupervisorConfig, VerdictSource};
use vigil::sdk::{Action, Event, EventKind, SessionFacts, Tier};
use vigil_testkit::{KitError, TestHost};
use vigil_tests::{load, test_plugins, LogCapture};

fn batch() -> Vec<SessionFacts> {
    let mut overdue = SessionFacts::new(2, "default");
    overdue.outstanding_pings = 1;
    overdue.oldest_ping_ms = Some(40_000);
    overdue.pong_overdue = true;
    vec![
        SessionFacts::new(1, "default"),
        overdue,
        SessionFacts::new(3, "onebot"),
    ]
}

#[test]
fn an_older_plugin_loads_and_the_load_says_which_contract_it_speaks() {
    let log = LogCapture::default();
    let sandbox = log.during(|| load("old-contract.wasm", test_plugins::OLD_CONTRACT, "{}"));
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("a 0.1.0 plugin should load: {error}"),
    };
    assert_eq!(sandbox.contract(), "vigil:policy/policy@0.1.0");
    let text = log.text();
    assert!(
        text.contains("older contract") && text.contains("vigil:policy/policy@0.1.0"),
        "the load warns that the plugin is old:\n{text}"
    );
    assert!(
        text.contains("old-contract policy configured"),
        "the plugin's own line came through the 0.1.0 log import:\n{text}"
    );
    let current = match load("default-policy", vigil_tests::DEFAULT_POLICY, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("the default policy should load: {error}"),
    };
    assert_eq!(current.contract(), "vigil:policy/policy@0.2.0");
}

#[test]
fn an_older_plugins_verdicts_are_read_as_it_gave_them() {
    let mut sandbox = match load(
        "old-contract.wasm",
        test_plugins::OLD_CONTRACT,
        r#"{"stamp": 42}"#,
    ) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("a 0.1.0 plugin should load: {error}"),
    };
    let verdicts = match sandbox.assess(50_000, &batch()) {
        Ok(verdicts) => verdicts,
        Err(fault) => panic!("the 0.1.0 plugin faulted: {fault}"),
    };
    let summary: Vec<_> = verdicts
        .iter()
        .map(|v| {
            let action = match &v.action {
                Action::Evict(eviction) => {
                    format!("evict {} {}", eviction.reason, eviction.close_code)
                }
                other => other.name().to_owned(),
            };
            (v.session, v.health, v.tier, action)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 42, Tier::Regular, "keep".to_owned()),
            (2, 0, Tier::Fast, "evict pong-timeout 4000".to_owned()),
            (3, 42, Tier::Regular, "keep".to_owned()),
        ]
    );
    let events = [Event {
        at_ms: 49_000,
        kind: EventKind::Removed {
            session: 9,
            reason: "closed".into(),
        },
    }];
    if let Err(fault) = sandbox.on_events(&events) {
        panic!("events reach a 0.1.0 plugin: {fault}");
    }
    match sandbox.select_evictions(50_000, &batch(), 2) {
        Ok(chosen) => assert_eq!(chosen, vec![1, 2]),
        Err(fault) => panic!("select-evictions of a 0.1.0 plugin faulted: {fault}"),
    }
}

#[test]
fn an_older_plugin_is_supervised_like_any_other() {
    let sandbox = match load("old-contract.wasm", test_plugins::OLD_CONTRACT, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("a 0.1.0 plugin should load: {error}"),
    };
    let mut supervisor = Supervisor::new(sandbox, SupervisorConfig::default());
    let outcome = supervisor.assess(50_000, &batch());
    assert_eq!(
        outcome.source,
        VerdictSource::Plugin,
        "it passes the contract checks"
    );
    assert_eq!(outcome.verdicts.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_plugin_evicts_a_frozen_client_in_a_live_host() -> Result<(), KitError> {
    let host = TestHost::start(test_plugins::OLD_CONTRACT, "{}").await?;
    let frozen = host.connect().await?;
    let live = host.connect().await?;
    host.until_sessions(2).await?;
    frozen.freeze()?;
    let reason = host.until_evicted(frozen.session_id()).await?;
    assert_eq!(reason, "pong-timeout");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        host.session(live.session_id()).is_some(),
        "the live client stays"
    );
    // Swapped for the current default policy and back: the reports say
    // which contract each speaks.
    let current = host.swap(vigil_tests::DEFAULT_POLICY, "{}").await?;
    assert_eq!(current.plugin.contract, "vigil:policy/policy@0.2.0");
    let older = host.swap(test_plugins::OLD_CONTRACT, "{}").await?;
    assert_eq!(older.plugin.contract, "vigil:policy/policy@0.1.0");
    let metrics = host.metrics();
    assert!(
        metrics.sum("vigil_policy_calls_total", "", "") > 0.0,
        "the plugin was called: {:?}",
        metrics.series().collect::<Vec<_>>()
    );
    assert_eq!(
        metrics.sum("vigil_policy_faults_total", "", ""),
        0.0,
        "the plugin decided, not the fallback"
    );
    host.shutdown().await?;
    Ok(())
}

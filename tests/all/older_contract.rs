//! Plugins built for the older contracts still load and decide:
//! `vigil:policy@0.1.0` (verdicts as records) and `@0.2.0` (tiers, actions
//! and `pong-overdue` as enums and booleans). Their answers are read as
//! verdicts, their evictions keep their reasons and close codes, their log
//! import works, and they run in a live host. The load says they are old.

use std::time::Duration;

use vigil::policy::SessionColumns;
use vigil::policy::{Supervisor, SupervisorConfig, VerdictSource};
use vigil::sdk::{Action, Event, EventKind, SessionFacts, Tier};
use vigil_testkit::{KitError, TestHost};
use vigil_tests::{load, test_plugins, LogCapture};

/// Each older plugin: its name, its bytes, the interface it exports, and
/// the line it logs when configured.
const OLDER: [(&str, &[u8], &str, &str); 2] = [
    (
        "old-contract.wasm",
        test_plugins::OLD_CONTRACT,
        "vigil:policy/policy@0.1.0",
        "old-contract policy configured",
    ),
    (
        "contract-0-2.wasm",
        test_plugins::CONTRACT_0_2,
        "vigil:policy/policy@0.2.0",
        "0.2.0 policy configured",
    ),
];

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
    for (name, bytes, contract, configured) in OLDER {
        let log = LogCapture::default();
        let sandbox = match log.during(|| load(name, bytes, "{}")) {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("{name} should load: {error}"),
        };
        assert_eq!(sandbox.contract(), contract);
        let text = log.text();
        assert!(
            text.contains("older contract") && text.contains(contract),
            "the load warns that {name} is old:\n{text}"
        );
        assert!(
            text.contains(configured),
            "{name}'s own line came through its contract's log import:\n{text}"
        );
    }
    let current = match load("default-policy", vigil_tests::DEFAULT_POLICY, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("the default policy should load: {error}"),
    };
    assert_eq!(current.contract(), "vigil:policy/policy@0.3.0");
}

#[test]
fn an_older_plugins_verdicts_are_read_as_it_gave_them() {
    for (name, bytes, _, _) in OLDER {
        let mut sandbox = match load(name, bytes, r#"{"stamp": 42}"#) {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("{name} should load: {error}"),
        };
        let verdicts = match sandbox.assess(50_000, &SessionColumns::from(&batch()[..])) {
            Ok(verdicts) => verdicts,
            Err(fault) => panic!("{name} faulted: {fault}"),
        };
        let summary: Vec<_> = verdicts
            .rows()
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
            ],
            "{name}: the overdue session (a `true` in its contract's pong-overdue column) is the one evicted"
        );
        let events = [Event {
            at_ms: 49_000,
            kind: EventKind::Removed {
                session: 9,
                reason: "closed".into(),
            },
        }];
        if let Err(fault) = sandbox.on_events(&events) {
            panic!("events reach {name}: {fault}");
        }
        match sandbox.select_evictions(50_000, &SessionColumns::from(&batch()[..]), 2) {
            Ok(chosen) => assert_eq!(chosen, vec![1, 2]),
            Err(fault) => panic!("select-evictions of {name} faulted: {fault}"),
        }
    }
}

#[test]
fn an_older_plugin_is_supervised_like_any_other() {
    for (name, bytes, _, _) in OLDER {
        let sandbox = match load(name, bytes, "{}") {
            Ok(sandbox) => sandbox,
            Err(error) => panic!("{name} should load: {error}"),
        };
        let mut supervisor = Supervisor::new(sandbox, SupervisorConfig::default());
        let outcome = supervisor.assess(50_000, &SessionColumns::from(&batch()[..]));
        assert_eq!(
            outcome.source,
            VerdictSource::Plugin,
            "{name} passes the contract checks"
        );
        assert_eq!(outcome.verdicts.len(), 3);
    }
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
    assert_eq!(current.plugin.contract, "vigil:policy/policy@0.3.0");
    let older = host.swap(test_plugins::CONTRACT_0_2, "{}").await?;
    assert_eq!(older.plugin.contract, "vigil:policy/policy@0.2.0");
    let oldest = host.swap(test_plugins::OLD_CONTRACT, "{}").await?;
    assert_eq!(oldest.plugin.contract, "vigil:policy/policy@0.1.0");
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

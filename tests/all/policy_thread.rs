//! The policy thread, driven from async code: the shape the server uses. A
//! guest that panics (and so writes to stderr through the synchronous WASI
//! bindings) must not take a tokio runtime down with it.

use vigil::policy::SessionColumns;
use vigil::policy::{FaultKind, PolicyHandle, VerdictSource};
use vigil_tests::{generated_facts, supervise, test_plugins, DEFAULT_POLICY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_called_from_async_code_falls_back_without_harm() {
    let supervisor = supervise(
        "misbehaving.wasm",
        test_plugins::MISBEHAVING,
        r#"{"fault": "panic", "trigger_class": "poison"}"#,
    );
    let policy = match PolicyHandle::spawn(supervisor) {
        Ok(policy) => policy,
        Err(error) => panic!("cannot start the policy thread: {error}"),
    };
    let mut poisoned = generated_facts(20, 1);
    poisoned[0].client_class = "poison".into();
    let outcome = match policy
        .assess(1_000, SessionColumns::from(&poisoned[..]))
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(outcome.source, VerdictSource::Fallback(FaultKind::Trap));
    assert_eq!(outcome.verdicts.len(), 20);

    let clean = match policy
        .assess(1_000, SessionColumns::from(&generated_facts(20, 2)[..]))
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(clean.source, VerdictSource::Plugin);
    assert_eq!(policy.stats().faults(FaultKind::Trap), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_async_callers_share_one_policy_thread() {
    let policy = match PolicyHandle::spawn(supervise("default-policy", DEFAULT_POLICY, "{}")) {
        Ok(policy) => policy,
        Err(error) => panic!("cannot start the policy thread: {error}"),
    };
    let mut callers = Vec::new();
    for seed in 1..=16u64 {
        let policy = policy.clone();
        callers.push(tokio::spawn(async move {
            let facts = generated_facts(200, seed);
            policy
                .assess(10_000, SessionColumns::from(&facts[..]))
                .await
        }));
    }
    for caller in callers {
        let outcome = match caller.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => panic!("{error}"),
            Err(error) => panic!("caller task failed: {error}"),
        };
        assert_eq!(outcome.source, VerdictSource::Plugin);
        assert_eq!(outcome.verdicts.len(), 200);
    }
    assert_eq!(policy.stats().calls(), 16);
    assert_eq!(policy.stats().sessions_assessed(), 16 * 200);
}

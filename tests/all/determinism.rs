//! Plugins are deterministic: their clocks read the call's `now-ms` and
//! their random sources are seeded per instance, so the same batch gives
//! the same verdicts — in `policy check`, in tests and in a replay.

use vigil::policy::SessionColumns;
use vigil::sdk::{Action, Verdict};
use vigil_tests::{generated_facts, load, test_plugins};

fn assess_with_a_fresh_instance(now_ms: u64) -> Vec<Verdict> {
    let mut sandbox = match load("clock-reader.wasm", test_plugins::CLOCK_READER, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("the clock reader should load: {error}"),
    };
    match sandbox.assess(now_ms, &SessionColumns::from(&generated_facts(50, 7)[..])) {
        Ok(verdicts) => verdicts.to_rows(),
        Err(fault) => panic!("the clock reader faulted: {fault}"),
    }
}

fn readings(verdicts: &[Verdict]) -> String {
    match verdicts.first().map(|verdict| &verdict.action) {
        Some(Action::Evict(eviction)) => eviction.reason.to_string(),
        other => panic!("the first verdict should carry the readings, got {other:?}"),
    }
}

#[test]
fn a_plugins_clocks_read_the_calls_now_ms() {
    let verdicts = assess_with_a_fresh_instance(5_000);
    let reason = readings(&verdicts);
    assert!(
        reason.starts_with("wall=5000 mono=5000 "),
        "the plugin saw {reason}"
    );
    assert!(verdicts
        .iter()
        .all(|verdict| verdict.reassess_in_ms == 5_000));
    let later = readings(&assess_with_a_fresh_instance(7_250));
    assert!(later.starts_with("wall=7250 mono=7250 "), "{later}");
}

#[test]
fn the_same_batch_gives_the_same_verdicts_in_two_instances() {
    let first = assess_with_a_fresh_instance(5_000);
    let second = assess_with_a_fresh_instance(5_000);
    assert_eq!(first, second, "randomness is seeded per instance");
    let healths: std::collections::BTreeSet<u8> = first.iter().map(|v| v.health).collect();
    assert!(
        healths.len() > 5,
        "the random source still varies within a call: {healths:?}"
    );
}

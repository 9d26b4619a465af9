//! Plugins that must not load: each is refused with an error naming the
//! plugin and what is wrong, and nothing is half-loaded.

use std::time::{Duration, Instant};

use vigil::policy::SessionColumns;
use vigil::policy::{FaultKind, LoadError};
use vigil_tests::{load, test_plugins, DEFAULT_POLICY};

fn refused(name: &str, bytes: &[u8], config: &str) -> LoadError {
    match load(name, bytes, config) {
        Ok(_) => panic!("{name} with {config} should be refused"),
        Err(error) => {
            assert!(
                error.to_string().contains(name),
                "the error names the plugin: {error}"
            );
            error
        }
    }
}

#[test]
fn garbage_bytes_are_not_wasm() {
    let error = refused("garbage.wasm", b"this is not a plugin at all", "{}");
    assert!(matches!(error, LoadError::NotWasm { .. }), "{error}");
    let error = refused("empty.wasm", b"", "{}");
    assert!(matches!(error, LoadError::NotWasm { .. }), "{error}");
}

#[test]
fn a_core_module_is_told_to_become_a_component() {
    // The smallest valid core module: magic and version 1, no sections.
    let error = refused("core.wasm", b"\0asm\x01\0\0\0", "{}");
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error}");
    assert!(error.to_string().contains("wasm32-wasip2"), "{error}");
}

#[test]
fn a_truncated_component_fails_to_compile() {
    let truncated = &DEFAULT_POLICY[..DEFAULT_POLICY.len() / 2];
    let error = refused("truncated.wasm", truncated, "{}");
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = refused("wrong-world.wasm", test_plugins::WRONG_WORLD, "{}");
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    assert!(
        error.to_string().contains("vigil:policy/policy@0.3.0"),
        "{error}"
    );
    for older in ["vigil:policy/policy@0.2.0", "vigil:policy/policy@0.1.0"] {
        assert!(
            error.to_string().contains(older),
            "the error names the older contracts it also takes: {error}"
        );
    }
}

#[test]
fn a_plugin_that_rejects_its_config_is_not_loaded() {
    let error = refused(
        "misbehaving.wasm",
        test_plugins::MISBEHAVING,
        r#"{"fault": "reject-config", "in": "configure"}"#,
    );
    assert!(matches!(error, LoadError::Config { .. }), "{error}");
    assert!(
        error.to_string().contains("refuses every config"),
        "{error}"
    );
}

#[test]
fn a_plugin_that_loops_in_configure_is_cut_at_the_start_deadline() {
    let started = Instant::now();
    let error = refused(
        "misbehaving.wasm",
        test_plugins::MISBEHAVING,
        r#"{"fault": "loop", "in": "configure"}"#,
    );
    assert!(
        matches!(
            error,
            LoadError::Start {
                kind: FaultKind::Deadline,
                ..
            }
        ),
        "{error}"
    );
    // The 1 s init deadline, plus compiling on a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_plugin_that_panics_in_configure_is_refused() {
    let error = refused(
        "misbehaving.wasm",
        test_plugins::MISBEHAVING,
        r#"{"fault": "panic", "in": "configure"}"#,
    );
    assert!(
        matches!(
            error,
            LoadError::Start {
                kind: FaultKind::Trap,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn the_noop_plugin_loads_and_keeps_everything() {
    let mut sandbox = match load("noop.wasm", test_plugins::NOOP, "{}") {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("noop should load: {error}"),
    };
    let facts = vigil_tests::generated_facts(100, 3);
    let verdicts = match sandbox.assess(1, &SessionColumns::from(&facts[..])) {
        Ok(verdicts) => verdicts,
        Err(fault) => panic!("noop faulted: {fault}"),
    };
    assert_eq!(verdicts.len(), 100);
    assert!(verdicts
        .rows()
        .all(|v| v.action == vigil::sdk::Action::Keep));
}

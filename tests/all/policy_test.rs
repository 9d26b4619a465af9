//! `vigil policy test`: the shipped scenario files pass against their
//! policies (the default's is its readable spec, and the Python and
//! JavaScript examples follow it too), an edited expectation fails with a
//! readable difference, JUnit output for CI, and bad files get clear errors.

use std::path::{Path, PathBuf};

use vigil_tests::{polyglot_plugin, test_plugins, DEFAULT_POLICY_PATH};

use crate::cli::{run, text, vigil};

fn repo(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

fn written(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    if let Err(error) = std::fs::write(&path, bytes) {
        panic!("cannot write {}: {error}", path.display());
    }
    path
}

fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    }
}

/// `vigil policy test PLUGIN FILE [extra]`: status, stdout, stderr.
fn policy_test(plugin: &Path, scenarios: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = run(vigil()
        .args(["policy", "test"])
        .arg(plugin)
        .arg(scenarios)
        .args(extra));
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn the_shipped_scenario_files_pass_against_their_policies() {
    let dir = temp_dir();
    let strict = written(&dir, "strict.wasm", test_plugins::STRICT);
    let default_spec = repo("plugins/default-policy/scenarios.toml");
    let cases = [
        (PathBuf::from(DEFAULT_POLICY_PATH), default_spec.clone()),
        (strict, repo("plugins/strict-policy/scenarios.toml")),
        (polyglot_plugin("python-policy"), default_spec.clone()),
        (polyglot_plugin("js-policy"), default_spec),
    ];
    for (plugin, scenarios) in cases {
        let (passed, stdout, stderr) = policy_test(&plugin, &scenarios, &[]);
        assert!(passed, "{}: {stdout}\n{stderr}", plugin.display());
        assert!(!stdout.contains("FAIL"), "{stdout}");
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }
}

#[test]
fn a_scenario_expecting_the_wrong_action_fails_with_the_difference() {
    let dir = temp_dir();
    let spec = match std::fs::read_to_string(repo("plugins/default-policy/scenarios.toml")) {
        Ok(spec) => spec,
        Err(error) => panic!("{error}"),
    };
    let edited = spec.replacen(
        r#"expect = { action = "evict", reason = "send-failures""#,
        r#"expect = { action = "keep", reason = "send-failures""#,
        1,
    );
    assert_ne!(edited, spec, "the edit must change the file");
    let scenarios = written(&dir, "edited.toml", edited.as_bytes());
    let plugin = PathBuf::from(DEFAULT_POLICY_PATH);
    let (passed, stdout, stderr) = policy_test(&plugin, &scenarios, &[]);
    assert!(!passed, "a wrong expectation passed: {stdout}");
    assert!(
        stdout.contains("FAIL  assess           three failed writes evict"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action: expected keep, got evict send-failures (4001)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("14 scenarios: 13 passed, 1 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 14 scenarios failed"), "{stderr}");

    let (_, xml, _) = policy_test(&plugin, &scenarios, &["--format", "junit"]);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains(r#"tests="14" failures="1""#), "{xml}");
    assert!(
        xml.contains(
            r#"<failure message="action: expected keep, got evict send-failures (4001)">"#
        ),
        "{xml}"
    );
}

#[test]
fn a_bad_scenario_file_gets_a_clear_error() {
    let dir = temp_dir();
    let plugin = PathBuf::from(DEFAULT_POLICY_PATH);
    let cases: [(&str, &str); 4] = [
        ("", "no [[scenario]] or [[selection]]"),
        ("[[scenario]]\nname = \"x\"\nfacts = { send_errrors = 3 }\nexpect = { action = \"keep\" }\n", "send_errrors"),
        ("[[scenario]]\nname = \"x\"\nexpect = { action = \"explode\" }\n", "explode"),
        ("[[scenario]\nname = ", "scenario file"),
    ];
    for (contents, expected) in cases {
        let scenarios = written(&dir, "bad.toml", contents.as_bytes());
        let (passed, stdout, stderr) = policy_test(&plugin, &scenarios, &[]);
        assert!(!passed, "{contents:?} passed: {stdout}");
        assert!(stderr.contains(expected), "{contents:?}: {stderr}");
    }
    let missing = dir.path().join("missing.toml");
    let (passed, _, stderr) = policy_test(&plugin, &missing, &[]);
    assert!(!passed && stderr.contains("cannot read"), "{stderr}");
}

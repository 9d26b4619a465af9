//! Policies written in Python and JavaScript, built by the pinned
//! componentize-py and componentize-js (`plugins/polyglot/`), under the
//! same sandbox, limits and contract as Rust ones: `policy check` passes at
//! the default limits (the host splits their batches to fit the deadline),
//! they evict a frozen client, they hot-swap in under traffic and shadow
//! the Rust default, runaway, memory-bomb and trapping variants are cut off
//! while the host keeps serving, and compiled code is cached on disk.

use std::time::Duration;

use vigil::policy::SessionColumns;
use vigil::policy::{
    FaultKind, PolicyState, SandboxLimits, Supervisor, SupervisorConfig, VerdictSource,
};
use vigil::sdk::SessionFacts;
use vigil_tests::{
    generated_facts, load_with_limits, polyglot_bytes, polyglot_plugin, DEFAULT_POLICY,
};

use crate::cli::{run, text, vigil};
use crate::support::{
    admin_address, admin_config, fast_config, free_port, http, metric, session_count,
    sessions_become, start_host, upload_with, wait_until, WsClient, ADMIN_TOKEN,
};

/// The two example policies.
const EXAMPLES: [&str; 2] = ["python-policy", "js-policy"];

#[test]
fn the_python_and_javascript_examples_pass_policy_check_at_the_default_limits() {
    for example in EXAMPLES {
        let path = polyglot_plugin(example);
        let output = run(vigil().arg("policy").arg("check").arg(&path));
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{example}: {stdout}\n{}",
            text(&output.stderr)
        );
        for expected in [
            "new                   100  fast       keep",
            "overdue-pong           40  fast       evict pong-timeout (4000)",
            "sustained-backlog",
            "evict backlog (4002)",
            "evict idle (4003)",
            // 10 000 sessions fit only because the host split them.
            "    10000 ",
            "the host splits this plugin's batches into calls of at most",
        ] {
            assert_shows(example, &stdout, &[expected]);
        }
    }
}

/// `vigil policy check --policy-config` with `config_json`, for each example.
fn check_examples_with_config(config_json: &str) -> Vec<(&'static str, std::process::Output)> {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let config = dir.path().join("policy.json");
    if let Err(error) = std::fs::write(&config, config_json) {
        panic!("{error}");
    }
    EXAMPLES
        .iter()
        .map(|example| {
            let output = run(vigil()
                .args(["policy", "check", "--policy-config"])
                .arg(&config)
                .arg(polyglot_plugin(example)));
            (*example, output)
        })
        .collect()
}

/// Panics unless `stdout` holds every line of `expected`.
fn assert_shows(example: &str, stdout: &str, expected: &[&str]) {
    for line in expected {
        assert!(stdout.contains(line), "{example}: no {line:?} in\n{stdout}");
    }
}

#[test]
fn the_examples_follow_their_json_config() {
    // New sessions watched like any other, and a backlog of 2 s is enough.
    for (example, output) in
        check_examples_with_config(r#"{"new_session_ms": 0, "backlog_evict_ms": 1000}"#)
    {
        assert!(
            output.status.success(),
            "{example}: {}",
            text(&output.stderr)
        );
        assert_shows(
            example,
            &text(&output.stdout),
            &[
                "new                   100  regular    keep",
                "brief-backlog          70  regular    evict backlog (4002)",
            ],
        );
    }
}

#[test]
fn a_bad_config_is_refused_with_the_plugins_own_message() {
    for (example, output) in check_examples_with_config(r#"{"backlog_evict_msec": 5}"#) {
        assert!(!output.status.success(), "{example} took a bad config");
        assert_shows(
            example,
            &text(&output.stderr),
            &["unknown setting `backlog_evict_msec`"],
        );
    }
}

async fn frozen_client_is_evicted_by(example: &str) {
    let plugin = polyglot_bytes(example);
    let server = start_host(fast_config(), &plugin, "{}").await;
    let address = server.address;
    let frozen = WsClient::connect(address, "", &[]);
    let _healthy = WsClient::connect(address, "", &["--send-every-ms", "200"]);
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, 2, Duration::from_secs(10)).await,
        "2 sessions registered"
    );
    frozen.signal("STOP");
    assert!(
        sessions_become(address, 1, Duration::from_secs(6)).await,
        "{example}: the frozen client was not evicted"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="pong-timeout",tier="fast"}"#
        ),
        1.0,
        "{example}: {metrics}"
    );
    let health = http(address, "GET", "/healthz", None, None).await.json;
    assert_eq!(
        health["policy"]["fallback_batches"], 0,
        "{example}: {health}"
    );
    assert_eq!(health["policy"]["state"], "active", "{example}: {health}");
    frozen.signal("CONT");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_is_evicted_by_the_python_policy() {
    frozen_client_is_evicted_by("python-policy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_is_evicted_by_the_javascript_policy() {
    frozen_client_is_evicted_by("js-policy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_policies_hot_swap_in_under_traffic_losing_no_session() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let admin = admin_address(&server);
    let mut clients: Vec<WsClient> = (0..12)
        .map(|_| WsClient::connect(address, "", &["--send-every-ms", "300"]))
        .collect();
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, 12, Duration::from_secs(10)).await,
        "12 sessions registered"
    );
    for (round, example) in ["python-policy", "js-policy", "python-policy"]
        .iter()
        .enumerate()
    {
        let plugin = polyglot_bytes(example);
        let swapped = upload_with(
            admin,
            "/admin/policy",
            &plugin,
            &[("config", "{}"), ("name", &format!("{example}.wasm"))],
        )
        .await;
        assert_eq!(swapped.status, 200, "{example}: {}", swapped.text);
        assert!(
            swapped.json["sessions_per_call"]
                .as_u64()
                .is_some_and(|cap| cap >= 16),
            "{}",
            swapped.text
        );
        let published = http(
            address,
            "POST",
            "/publish",
            Some(&format!(r#"{{"to": "all", "data": "after swap {round}"}}"#)),
            None,
        )
        .await;
        assert_eq!(
            published.json["delivered"], 12,
            "{example}: {}",
            published.text
        );
        for client in &mut clients {
            let expected = format!("message after swap {round}");
            assert_eq!(
                client
                    .wait_for_line("message", Duration::from_secs(5))
                    .as_deref(),
                Some(expected.as_str()),
                "{example}"
            );
        }
        // Let the new policy assess everyone at least once.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            session_count(address).await,
            12,
            "{example}: a session was lost"
        );
        let health = http(address, "GET", "/healthz", None, None).await.json;
        assert_eq!(
            health["policy"]["fallback_batches"], 0,
            "{example}: {health}"
        );
    }
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_candidate_shadows_the_rust_default() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let admin = admin_address(&server);
    let _clients: Vec<WsClient> = (0..4)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();
    let plugin = polyglot_bytes("python-policy");
    let started = upload_with(admin, "/admin/policy/shadow", &plugin, &[("config", "{}")]).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let compared = wait_until(Duration::from_secs(6), || async {
        let report = http(
            admin,
            "GET",
            "/admin/policy/shadow/report",
            None,
            Some(ADMIN_TOKEN),
        )
        .await
        .json;
        report["sessions_compared"].as_u64().unwrap_or(0) >= 4 && report["faulted_batches"] == 0
    })
    .await;
    assert!(compared.is_some(), "the Python shadow compared nothing");
    assert_eq!(session_count(address).await, 4);
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_limits_of_its_own_over_the_admin_api_and_bad_ones_are_refused() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let admin = admin_address(&server);
    let plugin = polyglot_bytes("js-policy");
    let limits =
        r#"{"call_deadline_ms": 250, "memory_bytes": 134217728, "max_batch_sessions": 50}"#;
    let swapped = upload_with(
        admin,
        "/admin/policy",
        &plugin,
        &[("config", "{}"), ("limits", limits)],
    )
    .await;
    assert_eq!(swapped.status, 200, "{}", swapped.text);
    assert_eq!(
        swapped.json["limits"]["call_deadline_ms"], 250,
        "{}",
        swapped.text
    );
    assert_eq!(swapped.json["limits"]["memory_bytes"], 134_217_728_u64);
    assert_eq!(swapped.json["sessions_per_call"], 50, "{}", swapped.text);
    // What was not given comes from [policy.limits].
    assert_eq!(
        swapped.json["limits"]["init_deadline_ms"],
        SandboxLimits::default().init_deadline.as_millis() as u64
    );
    for bad in [
        r#"{"call_deadline_ms": 0}"#,
        r#"{"call_deadline": 20}"#,
        r#"{"memory_bytes": 1000}"#,
        r#"[1, 2]"#,
    ] {
        let refused = upload_with(
            admin,
            "/admin/policy",
            &plugin,
            &[("config", "{}"), ("limits", bad)],
        )
        .await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text);
        assert!(
            refused.text.contains("limits")
                || refused.text.contains("deadline")
                || refused.text.contains("memory"),
            "{bad}: {}",
            refused.text
        );
    }
    let health = http(server.address, "GET", "/healthz", None, None)
        .await
        .json;
    assert_eq!(health["policy"]["name"], "uploaded.wasm", "{health}");
    crate::support::shut_down(server).await;
}

/// A batch holding one session of the class that arms the hostile plugins.
fn poisoned_batch() -> Vec<SessionFacts> {
    let mut batch = generated_facts(40, 11);
    batch[7].client_class = "poison".into();
    batch
}

fn hostile(language: &str, how: &str) -> Supervisor {
    let plugin = polyglot_bytes(&format!("test-plugins/{language}-hostile"));
    let config = format!(r#"{{"misbehave": "{how}", "in": "assess", "trigger_class": "poison"}}"#);
    let mut limits = SandboxLimits::default();
    if how == "memory" {
        // Filling 64 MiB takes an interpreter longer than 20 ms: give it
        // time, so what stops it is the memory cap, not the deadline.
        limits.call_deadline = Duration::from_secs(3);
    }
    match load_with_limits(&format!("{language}-{how}"), &plugin, &config, limits) {
        Ok(sandbox) => Supervisor::new(sandbox, SupervisorConfig::default()),
        Err(error) => panic!("{language} {how}: should load: {error}"),
    }
}

#[test]
fn runaway_memory_bomb_and_trapping_python_and_javascript_plugins_are_contained() {
    for language in ["python", "js"] {
        for (how, kind) in [
            ("loop", FaultKind::Deadline),
            ("memory", FaultKind::MemoryLimit),
            ("trap", FaultKind::Trap),
        ] {
            let mut supervisor = hostile(language, how);
            let stats = supervisor.stats();
            let started = std::time::Instant::now();
            let outcome = supervisor.assess(1_000, &SessionColumns::from(&poisoned_batch()[..]));
            let took = started.elapsed();
            assert_eq!(
                outcome.source,
                VerdictSource::Fallback(kind),
                "{language} {how}"
            );
            assert_eq!(
                outcome.verdicts.len(),
                40,
                "{language} {how}: every session answered"
            );
            assert_eq!(stats.faults(kind), 1, "{language} {how}");
            assert!(
                took < Duration::from_secs(5),
                "{language} {how}: cut off late, {took:?}"
            );
            // A fresh instance answers the next, clean batch.
            let next =
                supervisor.assess(1_000, &SessionColumns::from(&generated_facts(40, 12)[..]));
            assert_eq!(
                next.source,
                VerdictSource::Plugin,
                "{language} {how}: after the fault"
            );
            assert_eq!(supervisor.state(), PolicyState::Active, "{language} {how}");
        }
    }
}

#[test]
fn compiled_plugins_are_cached_on_disk_checked_and_recompiled_when_corrupt() {
    let home = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    // The mechanism does not care about size; a small plugin keeps the
    // test quick (BENCHMARKS.md has the 18 MB figures).
    let plugin = home.path().join("noop.wasm");
    if let Err(error) = std::fs::write(&plugin, vigil_tests::test_plugins::NOOP) {
        panic!("{error}");
    }
    let check = || {
        let output = run(vigil()
            .env("XDG_CACHE_HOME", home.path())
            .env("RUST_LOG", "vigil_policy_runtime=debug,warn")
            .args(["policy", "check"])
            .arg(&plugin));
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stderr)
    };
    let cache = home.path().join("vigil").join("compiled");
    let first = check();
    assert!(first.contains("how=Fresh"), "{first}");
    let entries: Vec<std::path::PathBuf> = match std::fs::read_dir(&cache) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect(),
        Err(error) => panic!("no cache at {}: {error}", cache.display()),
    };
    assert_eq!(entries.len(), 1, "{entries:?}");
    let second = check();
    assert!(second.contains("how=FromDisk"), "{second}");

    // One flipped byte: refused, recompiled, rewritten.
    let mut bytes = match std::fs::read(&entries[0]) {
        Ok(bytes) => bytes,
        Err(error) => panic!("{error}"),
    };
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    if let Err(error) = std::fs::write(&entries[0], &bytes) {
        panic!("{error}");
    }
    let third = check();
    assert!(third.contains("corrupt; compiling instead"), "{third}");
    assert!(third.contains("how=Fresh"), "{third}");
    assert!(check().contains("how=FromDisk"));
}

/// The `sh` blocks of `plugins/README.md` marked `# walkthrough: <name>`.
fn walkthrough(name: &str) -> String {
    let guide =
        match std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/README.md"))
        {
            Ok(guide) => guide,
            Err(error) => panic!("cannot read plugins/README.md: {error}"),
        };
    let marker = format!("# walkthrough: {name}");
    let mut script = String::new();
    let mut blocks = guide.split("```sh\n").skip(1);
    for block in blocks.by_ref() {
        let Some((body, _)) = block.split_once("```") else {
            continue;
        };
        if body.lines().next() == Some(marker.as_str()) {
            script.push_str(body);
        }
    }
    assert!(
        !script.is_empty(),
        "plugins/README.md has no {marker:?} block"
    );
    script
}

/// Runs a walkthrough's commands as written (with free ports for 8080 and
/// 8081), `vigil` being the program under test.
fn run_walkthrough(language: &str) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let bin = dir.path().join("bin");
    let linked = std::fs::create_dir(&bin).and_then(|()| {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vigil-under-test"), bin.join("vigil"))
    });
    if let Err(error) = linked {
        panic!("{error}");
    }
    let script = format!(
        "set -euo pipefail\n{}\n{}",
        walkthrough(language),
        walkthrough("live")
    )
    .replace("8080", &free_port().to_string())
    .replace("8081", &free_port().to_string());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = run(std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("VIGIL", concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("ADMIN_TOKEN", "walkthrough-admin-token")
        .env("XDG_CACHE_HOME", vigil_tests::cache_home())
        .env("RUST_LOG", "warn"));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "the {language} walkthrough failed:\n{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("evict pong-timeout (4000)"), "{stdout}");
    assert!(
        stdout.contains(r#""name":"my_policy.wasm""#),
        "the live swap: {stdout}"
    );
    assert!(stdout.contains(r#""status":"ok""#), "{stdout}");
}

#[test]
fn the_python_walkthrough_works_as_written() {
    run_walkthrough("python");
}

#[test]
fn the_javascript_walkthrough_works_as_written() {
    run_walkthrough("js");
}

/// A host serving a hostile plugin armed by its own sessions' class: every
/// batch faults, and the host still serves, pings and evicts.
async fn the_host_keeps_serving_beside(language: &str, how: &str) {
    let mut config = fast_config();
    config.sessions.default_class = "poison".to_owned();
    let plugin = polyglot_bytes(&format!("test-plugins/{language}-hostile"));
    let plugin_config =
        format!(r#"{{"misbehave": "{how}", "in": "assess", "trigger_class": "poison"}}"#);
    let server = start_host(config, &plugin, &plugin_config).await;
    let address = server.address;
    let mut live = WsClient::connect(address, "", &["--send-every-ms", "200"]);
    let frozen = WsClient::connect(address, "", &[]);
    frozen.signal("STOP");
    // The built-in policy decides in the plugin's place: the frozen client
    // still goes, the live one stays and hears a publish.
    assert!(
        sessions_become(address, 1, Duration::from_secs(8)).await,
        "{language} {how}: the frozen client outlived the faulting plugin"
    );
    let published = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "still here"}"#),
        None,
    )
    .await;
    assert_eq!(
        published.json["delivered"], 1,
        "{language} {how}: {}",
        published.text
    );
    assert_eq!(
        live.wait_for_line("message", Duration::from_secs(5))
            .as_deref(),
        Some("message still here")
    );
    let health = http(address, "GET", "/healthz", None, None).await.json;
    assert!(
        health["policy"]["fallback_batches"].as_u64().unwrap_or(0) >= 1,
        "{language} {how}: {health}"
    );
    frozen.signal("CONT");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_serving_beside_a_looping_python_plugin() {
    the_host_keeps_serving_beside("python", "loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_serving_beside_a_memory_bombing_javascript_plugin() {
    the_host_keeps_serving_beside("js", "memory").await;
}

#[test]
fn an_overrun_is_retried_at_the_smaller_batch_size_instead_of_costing_the_batch() {
    // Loops on any call of more than 20 sessions: the first call (50)
    // overruns, the cap halves to 25, that overruns too, and at 16 the
    // plugin answers. The batch is the plugin's, not the fallback's.
    let plugin = polyglot_bytes("test-plugins/python-hostile");
    let config = r#"{"misbehave": "loop", "in": "assess", "batch_above": 20}"#;
    let sandbox = match load_with_limits("python-slow", &plugin, config, SandboxLimits::default()) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("should load: {error}"),
    };
    let mut supervisor = Supervisor::new(sandbox, SupervisorConfig::default());
    let outcome = supervisor.assess(1_000, &SessionColumns::from(&generated_facts(50, 13)[..]));
    assert_eq!(outcome.source, VerdictSource::Plugin);
    assert_eq!(outcome.verdicts.len(), 50);
    assert!(
        outcome.verdicts.rows().all(|v| v.health == 100),
        "the plugin's verdicts"
    );
    assert_eq!(supervisor.stats().total_faults(), 0);
    assert_eq!(supervisor.sandbox().batch_cap().sessions_per_call(), 16);
}

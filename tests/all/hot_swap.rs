//! Replacing the running policy without a restart: validated swaps under
//! traffic, rejected candidates, rollback, shadow mode, admin access.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    admin_address, admin_config, http, metric, metric_or_zero, session_count, sessions_become,
    start_host, upload, wait_until, WsClient, ADMIN_TOKEN,
};
use vigil::policy::SessionColumns;
use vigil_tests::{generated_facts, test_plugins, DEFAULT_POLICY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_traffic_lose_no_session_and_no_message() {
    // This test is about swaps, not deadlines: a generous call deadline
    // keeps a busy machine's pause in a dry run from rejecting a swap.
    let mut config = admin_config();
    config.policy.limits.call_deadline = Duration::from_millis(500);
    let server = start_host(config, test_plugins::NOOP, r#"{"stamp": 11}"#).await;
    let address = server.address;
    let admin = admin_address(&server);

    // Sessions that count what they receive and check its order.
    const SESSIONS: usize = 500;
    let received = Arc::new(AtomicU64::new(0));
    let disorder = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..SESSIONS {
        let (socket, _) = match tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await
        {
            Ok(connected) => connected,
            Err(error) => panic!("cannot connect: {error}"),
        };
        let received = Arc::clone(&received);
        let disorder = Arc::clone(&disorder);
        readers.push(tokio::spawn(async move {
            let mut socket = socket;
            let mut expected = 1u64;
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    if text.as_str() == "end" {
                        return expected - 1;
                    }
                    if text.as_str().parse::<u64>().ok() != Some(expected) {
                        disorder.store(true, Ordering::Relaxed);
                    }
                    expected += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            expected - 1
        }));
    }
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, SESSIONS as u64, Duration::from_secs(10)).await,
        "{SESSIONS} sessions registered"
    );

    // Continuous publishing while the policy changes under it.
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let publishing = Arc::clone(&publishing);
        tokio::spawn(async move {
            let mut sequence = 0u64;
            while publishing.load(Ordering::Relaxed) {
                sequence += 1;
                let body = format!(r#"{{"to": "all", "data": "{sequence}"}}"#);
                let report = http(address, "POST", "/publish", Some(&body), None)
                    .await
                    .json;
                assert_eq!(report["delivered"], SESSIONS as u64, "{report}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sequence
        })
    };

    // Batches assessed while swapping: each must carry one stamp only.
    let checking = Arc::new(AtomicBool::new(true));
    let checker = {
        let policy = server.host.policy().clone();
        let checking = Arc::clone(&checking);
        tokio::spawn(async move {
            let mut stamps_seen = std::collections::BTreeSet::new();
            let mut batches = 0u64;
            while checking.load(Ordering::Relaxed) {
                let outcome = match policy
                    .assess(
                        1_000,
                        SessionColumns::from(&generated_facts(64, batches + 1)[..]),
                    )
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(error) => panic!("{error}"),
                };
                let stamps: std::collections::BTreeSet<u8> =
                    outcome.verdicts.rows().map(|v| v.health).collect();
                assert_eq!(
                    stamps.len(),
                    1,
                    "a batch was assessed by more than one policy: {stamps:?}"
                );
                stamps_seen.extend(stamps);
                batches += 1;
            }
            (stamps_seen, batches)
        })
    };

    let mut swap_times = Vec::new();
    for round in 0..100 {
        let stamp = if round % 2 == 0 { 22 } else { 11 };
        let started = Instant::now();
        let response = upload(
            admin,
            "/admin/policy",
            test_plugins::NOOP,
            &format!(r#"{{"stamp": {stamp}}}"#),
        )
        .await;
        swap_times.push(started.elapsed());
        assert_eq!(response.status, 200, "swap {round}: {}", response.text);
    }
    publishing.store(false, Ordering::Relaxed);
    checking.store(false, Ordering::Relaxed);
    let published = match publisher.await {
        Ok(published) => published,
        Err(error) => panic!("publisher failed: {error}"),
    };
    let (stamps, batches) = match checker.await {
        Ok(result) => result,
        Err(error) => panic!("checker failed: {error}"),
    };
    assert!(
        stamps.contains(&11) && stamps.contains(&22),
        "both policies assessed batches: {stamps:?} over {batches}"
    );

    // Before the readers hang up: every session is still there, none evicted.
    assert_eq!(
        session_count(address).await,
        SESSIONS as u64,
        "sessions were lost in the swaps"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert!(
        !metrics.contains("vigil_evictions_total{"),
        "sessions were evicted:\n{metrics}"
    );
    let _ = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "end"}"#),
        None,
    )
    .await;
    for reader in readers {
        let got = match tokio::time::timeout(Duration::from_secs(10), reader).await {
            Ok(Ok(got)) => got,
            other => panic!("a reader did not finish: {other:?}"),
        };
        assert_eq!(got, published, "a session lost messages");
    }
    assert!(
        !disorder.load(Ordering::Relaxed),
        "messages arrived out of order or twice"
    );
    assert_eq!(
        received.load(Ordering::Relaxed),
        published * SESSIONS as u64
    );
    assert_eq!(
        metric(&metrics, r#"vigil_policy_swaps_total{result="ok"}"#),
        100.0,
        "{metrics}"
    );
    let overview = http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
        .await
        .json;
    assert_eq!(overview["active"]["source"], "admin-api", "{overview}");
    swap_times.sort();
    eprintln!(
        "swap latency over 100 swaps with {SESSIONS} sessions: p50 {:?}, max {:?}",
        swap_times[50], swap_times[99]
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_to_the_strict_policy_evicts_a_frozen_client_the_noop_kept() {
    let server = start_host(admin_config(), test_plugins::NOOP, "{}").await;
    let address = server.address;
    let frozen = WsClient::connect(address, "", &[]);
    frozen.signal("STOP");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        session_count(address).await,
        1,
        "the no-op policy should keep it"
    );

    let response = upload(
        admin_address(&server),
        "/admin/policy",
        test_plugins::STRICT,
        "{}",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert!(
        sessions_become(address, 0, Duration::from_secs(2)).await,
        "the strict policy's decision did not take effect"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_candidates_leave_the_active_policy_untouched() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let admin = admin_address(&server);
    let _client = WsClient::connect(server.address, "", &[]);
    let before = http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
        .await
        .json;

    for (plugin, config, expected) in [
        (&b"garbage, not wasm"[..], "{}", "is not a WebAssembly file"),
        (test_plugins::WRONG_WORLD, "{}", "is not a Vigil policy"),
        (
            test_plugins::MISBEHAVING,
            r#"{"fault": "reject-config", "in": "configure"}"#,
            "rejected its configuration",
        ),
        (test_plugins::MISBEHAVING, r#"{"fault": "loop"}"#, "dry run"),
        (
            test_plugins::MISBEHAVING,
            r#"{"fault": "missing-verdict"}"#,
            "broke the contract in its dry run",
        ),
        (DEFAULT_POLICY, "{not json", "`config` must be JSON"),
    ] {
        let response = upload(admin, "/admin/policy", plugin, config).await;
        assert!(
            (400..500).contains(&response.status),
            "{config}: {} {}",
            response.status,
            response.text
        );
        let error = response.json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{config}: expected {expected:?} in {error:?}"
        );
    }
    let after = http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
        .await
        .json;
    assert_eq!(before["active"]["sha256"], after["active"]["sha256"]);
    assert_eq!(
        after["previous"],
        serde_json::Value::Null,
        "a rejected candidate became previous"
    );
    let metrics = http(server.address, "GET", "/metrics", None, None)
        .await
        .text;
    assert_eq!(
        metric(&metrics, r#"vigil_policy_swaps_total{result="rejected"}"#),
        6.0,
        "{metrics}"
    );
    assert_eq!(session_count(server.address).await, 1);
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_policy_and_its_behaviour() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let admin = admin_address(&server);
    let conflict = http(
        admin,
        "POST",
        "/admin/policy/rollback",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(conflict.status, 409, "nothing to roll back to yet");

    let swapped = upload(admin, "/admin/policy", test_plugins::NOOP, "{}").await;
    assert_eq!(swapped.status, 200, "{}", swapped.text);
    let back = http(
        admin,
        "POST",
        "/admin/policy/rollback",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.json["name"], "plugin-under-test");
    let overview = http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
        .await
        .json;
    assert_eq!(overview["previous"]["name"], "uploaded.wasm", "{overview}");

    // The default policy's behaviour is back: a frozen client goes.
    let frozen = WsClient::connect(address, "", &[]);
    frozen.signal("STOP");
    assert!(
        sessions_become(address, 0, Duration::from_secs(3)).await,
        "the rolled-back default policy did not evict a frozen client"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_strict_policy_records_disagreements_without_acting_until_promoted() {
    // The active default policy tolerates up to four unanswered pings here.
    let server = start_host(
        admin_config(),
        DEFAULT_POLICY,
        r#"{"overdue_pings_to_evict": 4}"#,
    )
    .await;
    let address = server.address;
    let admin = admin_address(&server);
    let started = upload(admin, "/admin/policy/shadow", test_plugins::STRICT, "{}").await;
    assert_eq!(started.status, 200, "{}", started.text);

    let frozen = WsClient::connect(address, "", &[]);
    frozen.signal("STOP");
    let disagreed = wait_until(Duration::from_secs(4), || async {
        let report = http(
            admin,
            "GET",
            "/admin/policy/shadow/report",
            None,
            Some(ADMIN_TOKEN),
        )
        .await
        .json;
        report["samples"].as_array().is_some_and(|samples| {
            samples
                .iter()
                .any(|s| s["shadow"]["action"]["evict"].is_object())
        })
    })
    .await;
    assert!(disagreed.is_some(), "no disagreement recorded");
    assert_eq!(
        session_count(address).await,
        1,
        "the shadow's verdict was carried out"
    );
    let report = http(
        admin,
        "GET",
        "/admin/policy/shadow/report",
        None,
        Some(ADMIN_TOKEN),
    )
    .await
    .json;
    let samples = report["samples"].as_array().cloned().unwrap_or_default();
    let Some(sample) = samples
        .iter()
        .find(|s| s["shadow"]["action"]["evict"].is_object())
    else {
        panic!("no eviction among the disagreements: {report}");
    };
    assert_eq!(sample["active"]["action"], "keep", "{report}");
    assert!(
        sample["facts"]["outstanding_pings"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );

    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert!(
        metric(&metrics, "vigil_policy_shadow_disagreements_total") >= 1.0,
        "{metrics}"
    );
    let promoted = http(
        admin,
        "POST",
        "/admin/policy/shadow/promote",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert!(
        sessions_become(address, 0, Duration::from_secs(2)).await,
        "the promoted strict policy did not act"
    );
    let overview = http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
        .await
        .json;
    assert_eq!(overview["shadow"], serde_json::Value::Null, "{overview}");
    assert_eq!(
        http(
            admin,
            "GET",
            "/admin/policy/shadow/report",
            None,
            Some(ADMIN_TOKEN)
        )
        .await
        .status,
        404
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token_and_is_not_on_the_public_listener() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let admin = admin_address(&server);
    assert_eq!(
        http(admin, "GET", "/admin/policy", None, None).await.status,
        401
    );
    assert_eq!(
        http(admin, "GET", "/admin/policy", None, Some("wrong"))
            .await
            .status,
        403
    );
    assert_eq!(
        http(admin, "GET", "/admin/policy", None, Some(ADMIN_TOKEN))
            .await
            .status,
        200
    );
    assert_eq!(
        http(
            server.address,
            "GET",
            "/admin/policy",
            None,
            Some(ADMIN_TOKEN)
        )
        .await
        .status,
        404
    );
    crate::support::shut_down(server).await;

    // Without a token configured the admin API is not served at all.
    let plain = start_host(crate::support::fast_config(), DEFAULT_POLICY, "{}").await;
    assert!(plain.admin_address.is_none());
    crate::support::shut_down(plain).await;
}

/// Replaces `path` the way deploy tools do: write beside it, then rename.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let staging = path.with_extension("tmp");
    if let Err(error) =
        std::fs::write(&staging, bytes).and_then(|()| std::fs::rename(&staging, path))
    {
        panic!("cannot replace {}: {error}", path.display());
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    vigil::policy::PluginSource::from_bytes("x", "test", bytes.to_vec()).sha256()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_policy_file_is_swapped_when_it_changes_and_rejected_when_bad() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let path = dir.path().join("policy.wasm");
    replace_file(&path, DEFAULT_POLICY);
    let mut config = admin_config();
    config.policy.path = Some(path.clone());
    config.policy.watch = true;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _client = WsClient::connect(address, "", &[]);

    let wait_for_active = |sha: String| {
        let policy = server.host.policy().clone();
        async move {
            // The first rounds compile each plugin (cached after), which on
            // a loaded 2-core machine has taken over 5 s.
            wait_until(Duration::from_secs(30), || {
                let policy = policy.clone();
                let sha = sha.clone();
                async move { policy.info().sha256 == sha }
            })
            .await
        }
    };
    for round in 0..10 {
        let plugin = if round % 2 == 0 {
            test_plugins::NOOP
        } else {
            test_plugins::STRICT
        };
        replace_file(&path, plugin);
        assert!(
            wait_for_active(sha256_of(plugin)).await.is_some(),
            "round {round}: the changed file was not swapped in"
        );
    }
    let active = server.host.policy().info().sha256;
    replace_file(&path, b"not a plugin any more");
    let rejected = wait_until(Duration::from_secs(5), || async {
        let metrics = http(address, "GET", "/metrics", None, None).await.text;
        metric_or_zero(&metrics, r#"vigil_policy_swaps_total{result="rejected"}"#) == 1.0
    })
    .await;
    assert!(
        rejected.is_some(),
        "the bad file was not reported as rejected"
    );
    assert_eq!(
        server.host.policy().info().sha256,
        active,
        "a bad file replaced the policy"
    );
    assert_eq!(
        session_count(address).await,
        1,
        "a session was lost to the swaps"
    );
    crate::support::shut_down(server).await;
}

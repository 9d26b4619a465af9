//! Dead clients are found and removed on time, in every tier: real clients
//! as child processes, killed with SIGKILL or frozen with SIGSTOP.

use std::time::Duration;

use crate::support::{
    fast_config, http, metric, metric_or_zero, session_count, sessions_become, start_host,
    wait_until, WsClient,
};
use vigil_tests::{test_plugins, DEFAULT_POLICY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_client_is_evicted_within_one_second() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut client = WsClient::connect(address, "", &[]);
    let _bystander = WsClient::connect(address, "", &[]);
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, 2, Duration::from_secs(10)).await,
        "2 sessions registered"
    );

    client.kill9();
    assert!(
        sessions_become(address, 1, Duration::from_secs(1)).await,
        "the killed client's session outlived one second"
    );

    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="transport",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "vigil_sessions_active"), 1.0);
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_client_is_evicted_after_ping_and_pong_timeout_and_stays_gone() {
    let config = fast_config();
    // Ping interval + pong timeout + one tick, plus scheduling slack.
    let limit = Duration::from_millis(
        config.tiers.fast.ping_interval_ms
            + config.tiers.fast.pong_timeout_ms
            + config.sessions.tick_ms
            + 400,
    );
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let client = WsClient::connect(address, "", &[]);
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, 1, Duration::from_secs(10)).await,
        "1 sessions registered"
    );

    client.signal("STOP");
    assert!(
        sessions_become(address, 0, limit).await,
        "a frozen client was not evicted within {limit:?}"
    );

    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="pong-timeout",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );

    // Thawed, it does not come back: its connection is gone.
    client.signal("CONT");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(session_count(address).await, 0);
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_client_answers_pings_and_stays() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _client = WsClient::connect(address, "", &["--send-every-ms", "200"]);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(session_count(address).await, 1, "a live client was evicted");
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert!(
        sessions["sessions"][0]["rtt_ms"].is_u64(),
        "pongs were timed: {sessions}"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert!(
        metric(&metrics, "vigil_pongs_received_total") >= 2.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_a_plugin_that_never_evicts_keeps_a_frozen_client() {
    // The no-op policy never evicts on heartbeat; transport failures are the
    // host's own business and still remove a killed client.
    let server = start_host(fast_config(), test_plugins::NOOP, "{}").await;
    let address = server.address;
    let frozen = WsClient::connect(address, "", &[]);
    let mut killed = WsClient::connect(address, "", &[]);
    frozen.signal("STOP");
    killed.kill9();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert_eq!(sessions["count"], 1, "{sessions}");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_same_identity_supersedes_the_dead_session() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let old = WsClient::connect(address, "?client_id=bot-1", &[]);
    old.signal("STOP"); // dead but still connected, as after a crash
    let _new = WsClient::connect(address, "?client_id=bot-1", &[]);
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert_eq!(
        sessions["count"], 1,
        "the dead twin was left behind: {sessions}"
    );
    assert_eq!(sessions["sessions"][0]["identity"], "bot-1");
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="superseded",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_killed_client_removes_it_and_never_retries() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut client = WsClient::connect(address, "?client_id=doomed", &[]);
    client.kill9();
    let publish = r#"{"to": {"identity": "doomed"}, "data": "are you there?"}"#;
    let _ = http(address, "POST", "/publish", Some(publish), None).await;
    assert!(
        sessions_become(address, 0, Duration::from_secs(1)).await,
        "the killed client was kept"
    );
    let again = http(address, "POST", "/publish", Some(publish), None)
        .await
        .json;
    assert_eq!(again["delivered"], 0, "{again}");
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    let removed = metric_or_zero(
        &metrics,
        r#"vigil_evictions_total{reason="transport",tier="fast"}"#,
    ) + metric_or_zero(
        &metrics,
        r#"vigil_evictions_total{reason="send-failed",tier="fast"}"#,
    );
    assert_eq!(removed, 1.0, "{metrics}");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_but_says_nothing_moves_to_keep_alive_and_is_evicted_as_idle() {
    // Short limits so the keep-alive tier shows within seconds.
    let policy = r#"{"new_session_ms": 0, "keep_alive_after_ms": 600, "idle_evict_ms": 1800,
                     "reassess_fast_ms": 100, "reassess_regular_ms": 100, "reassess_keep_alive_ms": 100}"#;
    let server = start_host(fast_config(), DEFAULT_POLICY, policy).await;
    let address = server.address;
    let mut silent = WsClient::connect(address, "?client_id=silent", &[]);
    let _chatty = WsClient::connect(address, "?client_id=chatty", &["--send-every-ms", "100"]);

    let in_keep_alive = wait_until(Duration::from_secs(2), || async {
        http(address, "GET", "/sessions?tier=keep-alive", None, None)
            .await
            .json["count"]
            == 1
    })
    .await;
    assert!(
        in_keep_alive.is_some(),
        "the silent client never reached keep-alive"
    );
    assert_eq!(
        silent
            .wait_for_line("closed", Duration::from_secs(3))
            .as_deref(),
        Some("closed 4003 idle")
    );
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert_eq!(sessions["count"], 1, "{sessions}");
    assert_eq!(sessions["sessions"][0]["identity"], "chatty");
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="idle",tier="keep-alive"}"#
        ),
        1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_tcp_facts_are_read_for_each_session() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _client = WsClient::connect(address, "", &[]);
    // TCP_INFO is read when the first ping goes out (after one second).
    let read = wait_until(Duration::from_secs(3), || async {
        http(address, "GET", "/sessions", None, None).await.json["sessions"][0]["tcp"]["rtt_us"]
            .is_u64()
    })
    .await;
    assert!(read.is_some(), "no TCP facts for the session");
    crate::support::shut_down(server).await;
}

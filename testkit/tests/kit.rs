//! The test kit's own tests, written the way a policy author would use it:
//! a frozen client, a slow reader, a swap under traffic, a plugin that
//! traps, and a wait that gives up.

use std::time::Duration;

use vigil_plugin_artifacts::test_plugins::MISBEHAVING;
use vigil_testkit::{plugins, Ending, KitError, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_is_evicted_for_its_silence_and_a_live_one_stays() -> Result<(), KitError> {
    let host = TestHost::start(plugins::DEFAULT_POLICY, "{}").await?;
    let frozen = host.connect().await?;
    let live = host.connect().await?;
    host.until_sessions(2).await?;
    frozen.freeze()?;
    let reason = host.until_evicted(frozen.session_id()).await?;
    assert_eq!(reason, "pong-timeout");
    assert!(host.session(live.session_id()).is_some());
    assert!(live.pings() >= 1, "the live client was pinged and answered");
    let metrics = host.metrics();
    assert_eq!(
        metrics.sum("vigil_evictions_total", "reason", "pong-timeout"),
        1.0,
        "{:?}",
        metrics.series().collect::<Vec<_>>()
    );
    host.until_sessions(1).await?;
    host.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_but_never_answers_pings_is_closed_with_the_policys_code(
) -> Result<(), KitError> {
    let host = TestHost::start(plugins::DEFAULT_POLICY, "{}").await?;
    let client = host.connect().await?;
    client.answer_pings(false)?;
    assert_eq!(
        host.until_evicted(client.session_id()).await?,
        "pong-timeout"
    );
    // It still reads, so it sees the close frame the policy asked for.
    match client.until_closed().await? {
        Ending::Closed { code, reason } => {
            assert_eq!((code, reason.as_str()), (4000, "pong-timeout"));
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(client.pings() >= 1);
    host.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_backs_up_and_is_evicted_while_a_fast_one_gets_everything(
) -> Result<(), KitError> {
    let host = TestHost::builder()
        .configure(|config| {
            config.sessions.queue_max_bytes = 4 << 20;
            config.sessions.queue_soft_bytes = 256 << 10;
        })
        .start()
        .await?;
    let slow = host.connect().await?;
    let fast = host.connect().await?;
    slow.stop_reading()?;
    let chunk = "x".repeat(32 * 1024);
    let mut published = 0usize;
    let evicted = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            host.publish(None, &chunk);
            published += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            if host.session(slow.session_id()).is_none() {
                return;
            }
        }
    })
    .await;
    assert!(evicted.is_ok(), "the slow reader was never evicted");
    let reason = host.until_evicted(slow.session_id()).await?;
    // The host's own queue cap, or the policy's backlog rule, whichever
    // comes first on this machine.
    assert!(
        reason == "backlog-overflow" || reason == "backlog",
        "evicted for {reason}"
    );
    let received = fast.until_received(published).await?;
    assert!(received.iter().all(|text| text.len() == chunk.len()));
    host.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_and_a_rollback_under_traffic_lose_no_session() -> Result<(), KitError> {
    let host = TestHost::start(plugins::DEFAULT_POLICY, "{}").await?;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let client = host.connect().await?;
        client.send_every(Some(Duration::from_millis(20)), "ping from the bot")?;
        clients.push(client);
    }
    host.until_sessions(20).await?;
    for round in 0..5 {
        host.publish(None, &format!("before swap {round}"));
        let report = host.swap(plugins::LENIENT, "{}").await?;
        assert_eq!(report.dry_run_sessions, 20);
        host.publish(None, &format!("after swap {round}"));
        host.rollback().await?;
    }
    // A rollback with nothing to go back to twice in a row is refused
    // only when there is no previous policy; here there always is one.
    assert_eq!(host.sessions().len(), 20);
    for client in &clients {
        let received = client.until_received(10).await?;
        assert_eq!(received[0], "before swap 0");
        assert_eq!(received[9], "after swap 4");
        assert!(client.sent() > 0);
    }
    // Starting a shadow brings no session forward: it sees the batches the
    // schedule makes next (new sessions are re-assessed every second), so
    // wait for one rather than for a fixed time a loaded machine may miss.
    host.shadow(plugins::STRICT, "{}").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let shadow_report = loop {
        let report = host.shadow_report().await?;
        if report["batches"].as_u64().unwrap_or(0) > 0 || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        shadow_report["batches"].as_u64().unwrap_or(0) > 0,
        "the shadow compared no batch within 5 s: {shadow_report}"
    );
    host.promote().await?;
    assert_eq!(host.sessions().len(), 20);
    host.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_traps_is_refused_or_falls_back_and_the_host_keeps_serving(
) -> Result<(), KitError> {
    // Every session is of class `poison`, the class the plugin traps on.
    let host = TestHost::builder()
        .configure(|config| config.sessions.default_class = "poison".to_owned())
        .start()
        .await?;
    // Always trapping: its dry run fails and the running policy stays.
    let rejected = host
        .swap(MISBEHAVING, r#"{"fault": "panic", "in": "assess"}"#)
        .await;
    assert!(
        matches!(rejected, Err(KitError::Rejected(_))),
        "{rejected:?}"
    );
    // Trapping only on `poison` sessions: it passes the dry run on an
    // empty host, then traps on the first batch with a client in it.
    host.swap(
        MISBEHAVING,
        r#"{"fault": "panic", "trigger_class": "poison"}"#,
    )
    .await?;
    let client = host.connect().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = host.metrics();
    let faults = metrics.get("vigil_policy_faults_total").unwrap_or(0.0);
    assert!(faults >= 1.0, "{:?}", metrics.series().collect::<Vec<_>>());
    // The fallback's verdicts kept the healthy client; it is still served.
    assert!(host.session(client.session_id()).is_some());
    host.publish(Some(client.session_id()), "still here");
    assert_eq!(client.until_received(1).await?, vec!["still here"]);
    host.rollback().await?;
    host.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_cannot_succeed_gives_up_with_what_it_waited_for() -> Result<(), KitError> {
    let host = TestHost::builder()
        .timeout(Duration::from_millis(300))
        .start()
        .await?;
    let client = host.connect().await?;
    match host.until_evicted(client.session_id()).await {
        Err(KitError::Timeout { what, after }) => {
            assert!(what.contains("removed"), "{what}");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    client.drop_connection()?;
    let reason = host.until_evicted(client.session_id()).await?;
    assert!(!reason.is_empty());
    assert!(matches!(client.ending(), Some(Ending::DroppedByTest)));
    host.shutdown().await?;
    Ok(())
}

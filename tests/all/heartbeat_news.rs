//! A heartbeat's answer is news for the policy: a live host assesses a
//! session when its pong comes back, so the default policy waits for the
//! heartbeat instead of polling a steady session between pings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{fast_config, metric, metrics_text, sessions_become, start_host, WsClient};
use vigil_tests::DEFAULT_POLICY;

/// Sessions assessed and pongs received, as counted by the host so far.
async fn assessed_and_pongs(address: SocketAddr) -> (f64, f64) {
    let metrics = metrics_text(address).await;
    (
        metric(&metrics, "vigil_policy_batch_sessions_sum"),
        metric(&metrics, "vigil_pongs_received_total"),
    )
}

/// One client answering pings every second for `window`, under the default
/// policy with `policy_config`: (sessions assessed, pongs) over the window.
async fn one_client_for(policy_config: &str, window: Duration) -> (f64, f64) {
    // Pings every second (the kit's timings), ticks every 50 ms.
    let server = start_host(fast_config(), DEFAULT_POLICY, policy_config).await;
    let address = server.address;
    let _client = WsClient::connect(address, "", &[]);
    // The 101 can reach a client a moment before the host registers it.
    assert!(
        sessions_become(address, 1, Duration::from_secs(10)).await,
        "1 sessions registered"
    );
    // Past the first assessment and the first heartbeat.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (assessed_before, pongs_before) = assessed_and_pongs(address).await;
    tokio::time::sleep(window).await;
    let (assessed_after, pongs_after) = assessed_and_pongs(address).await;
    crate::support::shut_down(server).await;
    (assessed_after - assessed_before, pongs_after - pongs_before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_session_is_assessed_once_per_heartbeat_not_polled() {
    // Regular from the start, polled every 100 ms unless steady.
    let policy = r#"{"new_session_ms": 0, "reassess_regular_ms": 100}"#;
    let window = Duration::from_secs(4);

    let (assessed, pongs) = one_client_for(policy, window).await;
    assert!(
        pongs >= 3.0,
        "the client answered {pongs} pings in {window:?}"
    );
    assert!(
        (pongs - 1.0..=pongs + 1.0).contains(&assessed),
        "a steady session should be assessed at each heartbeat's answer: \
         {assessed} assessments for {pongs} pongs"
    );

    // The same session, polled: the policy's own interval, every tick or two.
    let polled = r#"{"new_session_ms": 0, "reassess_regular_ms": 100, "reassess_steady_ms": 0}"#;
    let (assessed, pongs) = one_client_for(polled, window).await;
    assert!(
        assessed >= 5.0 * pongs.max(1.0),
        "polled every 100 ms, the session should be assessed far more often \
         than it answers pings: {assessed} assessments for {pongs} pongs"
    );
}

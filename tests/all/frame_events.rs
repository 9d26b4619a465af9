//! `sessions.frame_events` reports every frame to the policy, both ways:
//! `frame-received` for what clients send and `frame-sent` for what the host
//! writes. The frame-counter plugin shows the data frames it heard of as the
//! session's health (`10 × sent + received`), read back through the API.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use vigil_tests::test_plugins;

use crate::support::{fast_config, http, sessions_become, shut_down, start_host, wait_until};

/// Connects, sends two text frames, receives three published messages;
/// returns the health the policy last gave the session once it settles.
async fn health_after_two_in_three_out(frame_events: bool) -> u64 {
    let mut config = fast_config();
    config.sessions.frame_events = frame_events;
    let server = start_host(config, test_plugins::FRAME_COUNTER, "{}").await;
    let address = server.address;
    let (mut socket, _) = match tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await
    {
        Ok(connected) => connected,
        Err(error) => panic!("cannot connect: {error}"),
    };
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    for text in ["one", "two"] {
        if let Err(error) = socket.send(Message::Text(text.into())).await {
            panic!("cannot send: {error}");
        }
    }
    for n in 0..3 {
        let body = format!(r#"{{"to": "all", "data": "published {n}"}}"#);
        let published = http(address, "POST", "/publish", Some(&body), None).await;
        assert_eq!(published.json["delivered"], 1, "{}", published.text);
    }
    let mut received = 0;
    while received < 3 {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the published messages did not arrive: {other:?}"),
        }
    }
    let health = || async {
        http(address, "GET", "/sessions", None, None).await.json["sessions"][0]["health"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    // Assessed every 100 ms: wait for the counts, or give the events time
    // to (not) arrive.
    let _ = wait_until(Duration::from_secs(3), || async { health().await == 32 }).await;
    let settled = health().await;
    shut_down(server).await;
    settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_frame_events_the_policy_hears_of_frames_both_ways() {
    assert_eq!(
        health_after_two_in_three_out(true).await,
        32,
        "3 frame-sent and 2 frame-received events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_frame_events_the_policy_hears_of_no_frames() {
    assert_eq!(health_after_two_in_three_out(false).await, 0);
}

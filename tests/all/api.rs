//! The JSON API: tokens, publishing, listing, paging, removing; metrics.

use std::time::Duration;

use crate::support::{
    fast_config, http, metric, raw_status, session_count, sessions_become, start_host, wait_until,
    WsClient,
};
use vigil_tests::DEFAULT_POLICY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_is_required_before_the_upgrade() {
    let mut config = fast_config();
    config.server.access_token = Some("s3cret".to_owned());
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;

    let upgrade_headers = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (extra, path, expected) in [
        ("", "/ws", 401),
        ("Authorization: Bearer wrong\r\n", "/ws", 403),
        ("", "/ws?access_token=wrong", 403),
        ("Authorization: Bearer s3cret\r\n", "/ws", 101),
        ("", "/ws?access_token=s3cret", 101),
    ] {
        let request = upgrade_headers.replace("/ws", path) + extra + "\r\n";
        let status = raw_status(address, &request).await;
        assert_eq!(status, expected, "{path} {extra:?}");
    }
    // The client token opens /ws only; the control routes take API keys
    // (tests/all/security.rs checks every route with every credential).
    assert_eq!(
        http(address, "GET", "/sessions", None, Some("s3cret"))
            .await
            .status,
        200,
        "with no [api] key, a loopback client may list"
    );
    assert_eq!(
        http(address, "GET", "/healthz", None, None).await.status,
        200
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_the_targeted_sessions() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut alice = WsClient::connect(address, "?client_id=alice", &[]);
    let mut bob = WsClient::connect(address, "?client_id=bob", &[]);

    let all = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "hello everyone"}"#),
        None,
    )
    .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json["delivered"], 2, "{}", all.json);
    assert_eq!(all.json["dropped"], 0);
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client
                .wait_for_line("message", Duration::from_secs(2))
                .as_deref(),
            Some("message hello everyone")
        );
    }

    let json = r#"{"to": {"identity": "bob"}, "data": {"kind": "note", "n": 1}}"#;
    let one = http(address, "POST", "/publish", Some(json), None).await;
    assert_eq!(one.json["delivered"], 1, "{}", one.json);
    assert_eq!(
        bob.wait_for_line("message", Duration::from_secs(2))
            .as_deref(),
        Some(r#"message {"kind":"note","n":1}"#)
    );
    assert_eq!(
        alice.wait_for_line("message", Duration::from_millis(300)),
        None,
        "alice got bob's message"
    );

    let by_class = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": {"class": "default"}, "data": "c"}"#),
        None,
    )
    .await;
    assert_eq!(by_class.json["delivered"], 2);
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    let first = sessions["sessions"][0]["id"].as_u64().unwrap_or_default();
    let by_id = http(
        address,
        "POST",
        "/publish",
        Some(&format!(r#"{{"to": [{first}], "data": "d"}}"#)),
        None,
    )
    .await;
    assert_eq!(by_id.json["delivered"], 1);

    for bad in [
        r#"{"to": "everyone", "data": 1}"#,
        r#"{"data": 1}"#,
        "not json",
        r#"{"to": [-1], "data": 1}"#,
    ] {
        let response = http(address, "POST", "/publish", Some(bad), None).await;
        assert_eq!(response.status, 400, "{bad}");
        assert!(
            response.json["error"].is_string(),
            "{bad}: {}",
            response.text
        );
    }
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_paged_filtered_and_removed() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _clients: Vec<WsClient> = (0..5)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();

    let page = http(address, "GET", "/sessions?limit=2", None, None)
        .await
        .json;
    assert_eq!(page["count"], 5);
    let ids: Vec<u64> = page["sessions"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), 2);
    let next = http(
        address,
        "GET",
        &format!("/sessions?limit=10&after={}", ids[1]),
        None,
        None,
    )
    .await
    .json;
    assert_eq!(next["sessions"].as_array().map(Vec::len), Some(3));
    let session = &next["sessions"][0];
    for field in [
        "id",
        "peer",
        "identity",
        "class",
        "connected_at",
        "tier",
        "health",
        "rtt_ms",
        "queued_bytes",
        "last_seen_ms",
    ] {
        assert!(session.get(field).is_some(), "missing {field}: {session}");
    }
    assert_eq!(
        http(address, "GET", "/sessions?class=nope", None, None)
            .await
            .json["count"],
        0
    );
    assert_eq!(
        http(address, "GET", "/sessions?tier=fast", None, None)
            .await
            .json["count"],
        5
    );

    let one = http(address, "GET", &format!("/sessions/{}", ids[0]), None, None).await;
    assert_eq!(one.json["id"], ids[0]);
    assert_eq!(
        http(address, "GET", "/sessions/999999", None, None)
            .await
            .status,
        404
    );

    let removed = http(
        address,
        "DELETE",
        &format!("/sessions/{}", ids[0]),
        None,
        None,
    )
    .await;
    assert_eq!(removed.status, 200);
    assert_eq!(session_count(address).await, 4);
    assert_eq!(
        http(
            address,
            "DELETE",
            &format!("/sessions/{}", ids[0]),
            None,
            None
        )
        .await
        .status,
        404
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="admin",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    for name in [
        "vigil_sessions_active",
        "vigil_sessions_opened_total",
        "vigil_send_failures_total",
        "vigil_messages_dropped_total",
        "vigil_policy_calls_total",
        "vigil_policy_faults_total",
        "vigil_policy_call_seconds_bucket",
        "vigil_pings_sent_total",
        "vigil_pongs_received_total",
        "vigil_rtt_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_silent_sessions_raise_the_alarm() {
    let mut config = fast_config();
    config.monitor.window_ms = 600;
    config.monitor.growth_threshold = 3;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _clients: Vec<WsClient> = (0..4)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();
    let raised = wait_until(Duration::from_secs(3), || async {
        let metrics = http(address, "GET", "/metrics", None, None).await.text;
        metric(&metrics, "vigil_suspect_session_growth") == 1.0
    })
    .await;
    assert!(
        raised.is_some(),
        "four silent new sessions did not raise the alarm"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_are_answered_at_once_and_identity_can_come_in_a_header() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut request = match format!("ws://{address}/ws").into_client_request() {
        Ok(request) => request,
        Err(error) => panic!("{error}"),
    };
    request
        .headers_mut()
        .insert("x-client-id", axum_header("header-bot"));
    let (mut socket, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(error) => panic!("cannot connect: {error}"),
    };
    // The handshake is done; the host admits the session a moment later.
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert_eq!(
        sessions["sessions"][0]["identity"], "header-bot",
        "{sessions}"
    );

    for round in 0..5u8 {
        let sent = std::time::Instant::now();
        if let Err(error) = socket.send(Message::Ping(vec![round].into())).await {
            panic!("cannot ping: {error}");
        }
        let pong = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Pong(payload) = message {
                    return Some(payload);
                }
            }
            None
        })
        .await;
        assert!(
            matches!(pong, Ok(Some(ref p)) if p.as_ref() == [round]),
            "no pong for ping {round}: {pong:?}"
        );
        // At once: a pong held back until the host's next write would wait
        // for the next ping, a second away in this config.
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "pong took {:?}",
            sent.elapsed()
        );
    }
    crate::support::shut_down(server).await;
}

fn axum_header(value: &str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    match tokio_tungstenite::tungstenite::http::HeaderValue::from_str(value) {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

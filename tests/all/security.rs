//! Safe to expose: the control plane apart from clients, authenticated
//! identities, token expiry, bounded handshakes and floods, trusted proxies.
//! `tls.rs` covers `wss://`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use vigil::config::VigilConfig;
use vigil_tests::DEFAULT_POLICY;

use crate::support::{
    evictions, fast_config, http, metric, metric_or_zero, metrics_text, raw_status,
    sessions_become, shut_down, start_host, upgrade_head, wait_until,
};

/// Live sessions, asked with the API key.
async fn sessions_with_key(address: SocketAddr) -> Value {
    http(address, "GET", "/sessions", None, Some(API_KEY))
        .await
        .json
}

/// Whether the host comes to hold `expected` sessions within `limit`,
/// asked with the API key.
async fn sessions_become_with_key(address: SocketAddr, expected: u64, limit: Duration) -> bool {
    wait_until(limit, || async {
        sessions_with_key(address).await["count"].as_u64() == Some(expected)
    })
    .await
    .is_some()
}

pub(crate) const CLIENT_TOKEN: &str = "client-t0ken";
const API_KEY: &str = "api-key-0123456789abcdef";
pub(crate) const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn unix_now() -> u64 {
    vigil::policy::clock::unix_ms_now() / 1_000
}

/// A client JWT signed with `secret`.
fn jwt(claims: Value, secret: &str) -> String {
    match encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    ) {
        Ok(token) => token,
        Err(error) => panic!("cannot sign a test token: {error}"),
    }
}

/// A valid token for `sub`, an hour long.
pub(crate) fn token_for(sub: &str) -> String {
    jwt(json!({"sub": sub, "exp": unix_now() + 3_600}), JWT_SECRET)
}

fn secured_config() -> VigilConfig {
    let mut config = fast_config();
    config.server.access_token = Some(CLIENT_TOKEN.to_owned());
    config.api.keys = vec![API_KEY.to_owned()];
    config.auth.jwt_secret = Some(JWT_SECRET.to_owned());
    config.auth.class_claim = Some("class".to_owned());
    config
}

/// Opens a WebSocket with optional bearer token and query; the session's
/// socket, or the HTTP status it was refused with.
pub(crate) async fn ws_connect(
    address: SocketAddr,
    query: &str,
    bearer: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, u16> {
    let mut request = match format!("ws://{address}/ws{query}").into_client_request() {
        Ok(request) => request,
        Err(error) => panic!("bad request: {error}"),
    };
    if let Some(token) = bearer {
        match format!("Bearer {token}").parse() {
            Ok(value) => {
                request.headers_mut().insert("authorization", value);
            }
            Err(error) => panic!("bad header: {error}"),
        }
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("connect failed without an HTTP answer: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_open_with_an_api_key_and_never_with_a_client_credential() {
    let server = start_host(secured_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let client_jwt = token_for("bot-1");
    let publish = r#"{"to": "all", "data": "hi"}"#;
    let routes: [(&str, &str, Option<&str>); 5] = [
        ("GET", "/sessions", None),
        ("GET", "/sessions/1", None),
        ("DELETE", "/sessions/999", None),
        ("POST", "/publish", Some(publish)),
        ("GET", "/metrics", None),
    ];
    for (method, path, body) in routes {
        for (credential, token, expected) in [
            ("none", None, 401),
            ("a wrong key", Some("wrong-wrong-wrong-wrong"), 403),
            ("the client token", Some(CLIENT_TOKEN), 403),
            ("a client JWT", Some(client_jwt.as_str()), 403),
        ] {
            let status = http(address, method, path, body, token).await.status;
            assert_eq!(status, expected, "{method} {path} with {credential}");
        }
        let with_key = http(address, method, path, body, Some(API_KEY))
            .await
            .status;
        assert!(
            ![401, 403].contains(&with_key),
            "{method} {path} with the API key: {with_key}"
        );
        // A key in the URL is not taken: URLs end up in logs.
        let in_url = http(
            address,
            method,
            &format!("{path}?access_token={API_KEY}"),
            body,
            None,
        )
        .await
        .status;
        assert_eq!(in_url, 401, "{method} {path} with the key in the URL");
    }
    assert_eq!(
        http(address, "GET", "/healthz", None, None).await.status,
        200
    );
    // And the other way round: the API key is not a client credential
    // (taken for a malformed JWT: 401).
    let refused = ws_connect(address, "", Some(API_KEY)).await.err();
    assert!(matches!(refused, Some(401 | 403)), "{refused:?}");
    assert!(ws_connect(address, "", Some(CLIENT_TOKEN)).await.is_ok());
    assert!(ws_connect(address, "", Some(&client_jwt)).await.is_ok());
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_key_the_control_routes_answer_loopback_clients_only() {
    let mut config = fast_config();
    // The test's own connections come from 127.0.0.1, here a trusted proxy
    // that says which client it forwards.
    config.server.trusted_proxies = vec![match "127.0.0.1/32".parse() {
        Ok(net) => net,
        Err(error) => panic!("{error}"),
    }];
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let forwarded = |client: &str| {
        format!("GET /sessions HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(raw_status(address, &forwarded("203.0.113.5")).await, 403);
    assert_eq!(raw_status(address, &forwarded("127.0.0.1")).await, 200);
    assert_eq!(
        http(address, "GET", "/sessions", None, None).await.status,
        200
    );

    // A session through the proxy has the client's address and no TCP
    // facts (they would be the proxy's).
    let mut request = match format!("ws://{address}/ws").into_client_request() {
        Ok(request) => request,
        Err(error) => panic!("{error}"),
    };
    request.headers_mut().insert(
        "x-forwarded-for",
        axum::http::HeaderValue::from_static("198.51.100.7"),
    );
    let (_socket, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(connected) => connected,
        Err(error) => panic!("cannot connect: {error}"),
    };
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    // Pinged at once in the fast tier: its TCP facts would be read by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert_eq!(
        sessions["sessions"][0]["peer"], "198.51.100.7:0",
        "{sessions}"
    );
    assert_eq!(sessions["sessions"][0]["tcp"], Value::Null, "{sessions}");
    shut_down(server).await;
}

#[test]
fn a_public_listener_without_an_api_key_must_be_chosen() {
    let mut config = VigilConfig::default();
    config.server.listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let refused = config.validate().err().map(|error| format!("{error:#}"));
    assert!(
        refused.as_deref().is_some_and(|why| why.contains("[api]")),
        "{refused:?}"
    );
    config.api.allow_public_without_key = true;
    assert!(config.validate().is_ok());
    config.api.allow_public_without_key = false;
    config.api.keys = vec![API_KEY.to_owned()];
    assert!(config.validate().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_sets_identity_and_class_and_bad_tokens_are_refused_before_the_upgrade() {
    let server = start_host(secured_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let expired = jwt(json!({"sub": "bot-1", "exp": unix_now() - 60}), JWT_SECRET);
    let forged = jwt(
        json!({"sub": "bot-1", "exp": unix_now() + 3_600}),
        "not-the-secret-but-also-32-bytes-long",
    );
    let no_sub = jwt(json!({"exp": unix_now() + 3_600}), JWT_SECRET);
    for (what, token) in [
        ("expired", expired.as_str()),
        ("forged", forged.as_str()),
        ("without sub", no_sub.as_str()),
        ("malformed", "eyJhbGciOiJIUzI1NiJ9.bm9wZQ.c2ln"),
    ] {
        let request = upgrade_head(&format!("/ws?access_token={token}")) + "\r\n";
        assert_eq!(raw_status(address, &request).await, 401, "{what} token");
    }
    let token = jwt(
        json!({"sub": "bot-1", "exp": unix_now() + 3_600, "class": "bots"}),
        JWT_SECRET,
    );
    let _socket = match ws_connect(address, "", Some(&token)).await {
        Ok(socket) => socket,
        Err(status) => panic!("a valid token was refused with {status}"),
    };
    assert!(sessions_become_with_key(address, 1, Duration::from_secs(5)).await);
    let sessions = http(address, "GET", "/sessions", None, Some(API_KEY))
        .await
        .json;
    assert_eq!(sessions["sessions"][0]["identity"], "bot-1", "{sessions}");
    assert_eq!(sessions["sessions"][0]["class"], "bots", "{sessions}");
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_take_over_an_identity_it_did_not_prove() {
    let mut config = secured_config();
    // The attacker's best case: claimed identities are allowed at all.
    config.auth.allow_anonymous_identity = Some(true);
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut victim = match ws_connect(address, "", Some(&token_for("alice"))).await {
        Ok(socket) => socket,
        Err(status) => panic!("the victim was refused with {status}"),
    };
    assert!(sessions_become_with_key(address, 1, Duration::from_secs(5)).await);
    let before = http(address, "GET", "/sessions", None, Some(API_KEY))
        .await
        .json;
    let victim_id = before["sessions"][0]["id"].clone();

    let forged = jwt(
        json!({"sub": "alice", "exp": unix_now() + 3_600}),
        "the-attackers-own-32-byte-long-secret",
    );
    let attempts: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "a claimed client_id",
            "?client_id=alice".to_owned(),
            Some(CLIENT_TOKEN.to_owned()),
            409,
        ),
        (
            "a claimed client_id without any token",
            "?client_id=alice".to_owned(),
            None,
            401,
        ),
        (
            "its own token and alice's client_id",
            "?client_id=alice".to_owned(),
            Some(token_for("mallory")),
            403,
        ),
        ("a forged token for alice", String::new(), Some(forged), 401),
    ];
    for _round in 0..3 {
        for (what, query, bearer, expected) in &attempts {
            let refused = ws_connect(address, query, bearer.as_deref()).await.err();
            assert_eq!(refused, Some(*expected), "the attacker tried {what}");
        }
    }
    let after = http(address, "GET", "/sessions", None, Some(API_KEY))
        .await
        .json;
    assert_eq!(after["count"], 1, "{after}");
    assert_eq!(
        after["sessions"][0]["id"], victim_id,
        "the victim's session is the same"
    );
    // The victim's connection still works.
    if let Err(error) = victim.send(Message::Text("still here".into())).await {
        panic!("the victim was cut off: {error}");
    }
    let published = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": {"identity": "alice"}, "data": "for alice"}"#),
        Some(API_KEY),
    )
    .await;
    assert_eq!(published.json["delivered"], 1, "{}", published.text);
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = victim.next().await {
            if let Message::Text(text) = message {
                return Some(text.to_string());
            }
        }
        None
    })
    .await;
    assert_eq!(heard.ok().flatten().as_deref(), Some("for alice"));
    // The real alice, reconnecting with her token, does supersede.
    assert!(ws_connect(address, "", Some(&token_for("alice")))
        .await
        .is_ok());
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_a_claimed_identity_is_refused_by_default() {
    let server = start_host(secured_config(), DEFAULT_POLICY, "{}").await;
    let refused = ws_connect(server.address, "?client_id=anyone", Some(CLIENT_TOKEN))
        .await
        .err();
    assert_eq!(refused, Some(403));
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_with_4401_when_its_token_expires() {
    let server = start_host(secured_config(), DEFAULT_POLICY, "{}").await;
    let token = jwt(
        json!({"sub": "short-lived", "exp": unix_now() + 2}),
        JWT_SECRET,
    );
    let mut socket = match ws_connect(server.address, "", Some(&token)).await {
        Ok(socket) => socket,
        Err(status) => panic!("refused with {status}"),
    };
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
            }
        }
        None
    })
    .await;
    assert_eq!(
        closed.ok().flatten(),
        Some((4401, "token-expired".to_owned()))
    );
    let metrics = http(server.address, "GET", "/metrics", None, Some(API_KEY))
        .await
        .text;
    assert_eq!(evictions(&metrics, "token-expired"), 1.0, "{metrics}");
    shut_down(server).await;
}

/// Raises this process's open-file limit to what the machine allows (the
/// test holds both ends of many connections).
fn raise_open_file_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(20_000) {
        panic!("cannot raise the open-file limit: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_after_the_timeout_while_clients_connect() {
    raise_open_file_limit();
    let mut config = fast_config();
    config.server.handshake_timeout_ms = 3_000;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    // 1 000 connections that send half an upgrade request and stall.
    let mut stalled = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(error) => panic!("cannot open a stalled connection: {error}"),
        };
        if let Err(error) = stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
            .await
        {
            panic!("cannot write: {error}");
        }
        stalled.push(stream);
    }
    let opened = Instant::now();
    // A normal client connects, within a second, while they stall.
    for _ in 0..3 {
        let started = Instant::now();
        let connected =
            tokio::time::timeout(Duration::from_secs(1), ws_connect(address, "", None)).await;
        assert!(
            matches!(connected, Ok(Ok(_))),
            "a normal client could not connect within 1 s beside 1 000 stalled handshakes"
        );
        eprintln!(
            "a client connected in {:?} beside the stalled handshakes",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every stalled one is closed once the timeout has passed.
    let mut closed = 0;
    for stream in &mut stalled {
        let mut buffer = [0u8; 256];
        let left = Duration::from_secs(8).saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // an error answer, then the close
            Err(_) => {}
        }
    }
    let took = opened.elapsed();
    assert_eq!(
        closed, 1_000,
        "stalled handshakes still open after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(2_500),
        "closed before the timeout: {took:?}"
    );
    // Read in-process: a request for /metrics would be a handshake itself.
    let metrics = server.host.metrics_text();
    assert!(
        metric(
            &metrics,
            r#"vigil_connections_refused_total{reason="handshake-timeout"}"#
        ) >= 1_000.0,
        "{metrics}"
    );
    // The client sees its socket closed a moment before the host's task
    // gives the handshake slot back; the gauge must settle at 0 soon after.
    let settled = wait_until(Duration::from_secs(2), || {
        let text = server.host.metrics_text();
        async move { metric(&text, "vigil_handshakes_active") == 0.0 }
    })
    .await;
    assert!(
        settled.is_some(),
        "handshakes still counted as active 2 s after every stalled one closed: {}",
        server.host.metrics_text()
    );
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_handshake_cap_get_503() {
    let mut config = fast_config();
    config.server.max_handshakes = 5;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        match TcpStream::connect(address).await {
            Ok(mut stream) => {
                let _ = stream.write_all(b"GET /ws HTTP/1.1\r\n").await;
                stalled.push(stream);
            }
            Err(error) => panic!("{error}"),
        }
    }
    // Accepted in order: by the time a sixth is answered, the five hold
    // every place.
    let status = raw_status(address, &(upgrade_head("/ws") + "\r\n")).await;
    assert_eq!(status, 503);
    drop(stalled);
    // Their places come back as they close; then the refusal is on record.
    let counted = wait_until(Duration::from_secs(5), || async {
        let metrics = http(address, "GET", "/metrics", None, None).await;
        metrics.status == 200
            && metric_or_zero(
                &metrics.text,
                r#"vigil_connections_refused_total{reason="handshake-cap"}"#,
            ) >= 1.0
    })
    .await;
    assert!(counted.is_some(), "the refusal was not counted");
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_limited_in_connections_held_and_opened() {
    let mut config = fast_config();
    config.server.per_ip_max_connections = 3;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut held = Vec::new();
    for _ in 0..3 {
        match ws_connect(address, "", None).await {
            Ok(socket) => held.push(socket),
            Err(status) => panic!("refused with {status} under the limit"),
        }
    }
    assert_eq!(ws_connect(address, "", None).await.err(), Some(429));
    held.pop();
    let back = wait_until(Duration::from_secs(3), || async {
        ws_connect(address, "", None).await.is_ok()
    })
    .await;
    assert!(
        back.is_some(),
        "a closed connection's place was not given back"
    );
    // Read in-process: the address may still be at its limit.
    let metrics = server.host.metrics_text();
    assert!(
        metric(
            &metrics,
            r#"vigil_connections_refused_total{reason="per-ip-connections"}"#
        ) >= 1.0
    );
    shut_down(server).await;

    let mut config = fast_config();
    config.server.per_ip_connections_per_sec = 5;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let mut refused = 0;
    for _ in 0..15 {
        if ws_connect(server.address, "", None).await.err() == Some(429) {
            refused += 1;
        }
    }
    assert!(
        refused >= 5,
        "only {refused} of 15 quick connections were refused at 5/s"
    );
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_inbound_budget_the_biggest_holders_are_closed_and_others_carry_on() {
    let mut config = fast_config();
    config.server.inbound_budget_bytes = 4 << 20;
    config.server.max_message_bytes = 1 << 20;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    // Twelve clients each send 900 KB of a 1 MB binary frame and stall.
    let mut hoarders = Vec::new();
    for _ in 0..12 {
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(error) => panic!("{error}"),
        };
        let request = upgrade_head("/ws") + "\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            panic!("cannot send the upgrade");
        }
        let mut response = vec![0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response)).await;
        // A masked binary frame header announcing 1 MiB.
        let mut frame = vec![0x82u8, 0xFF];
        frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(0u8, 900_000));
        // Paused readers stop taking bytes: write what the socket takes.
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&frame)).await;
        hoarders.push(stream);
    }
    let fits = wait_until(Duration::from_secs(10), || async {
        let metrics = metrics_text(address).await;
        metric(&metrics, "vigil_inbound_held_bytes") <= f64::from(4u32 << 20)
            && evictions(&metrics, "inbound-budget") >= 8.0
    })
    .await;
    let metrics = metrics_text(address).await;
    assert!(fits.is_some(), "the budget was not enforced: {metrics}");
    // Those closed got 1009 (read until their close frame arrives).
    let mut told = 0;
    for stream in &mut hoarders {
        let mut buffer = vec![0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await
        {
            if buffer[..n].windows(2).any(|w| w == [0x03, 0xF1]) {
                told += 1;
            }
        }
    }
    assert!(told >= 8, "only {told} hoarders were told 1009");
    // A normal client carries on.
    let mut normal = match ws_connect(address, "", None).await {
        Ok(socket) => socket,
        Err(status) => panic!("a normal client was refused with {status}"),
    };
    if normal.send(Message::Text("hello".into())).await.is_err() {
        panic!("a normal client could not send");
    }
    let published = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "still serving"}"#),
        None,
    )
    .await;
    assert!(
        published.json["delivered"].as_u64().is_some_and(|n| n >= 1),
        "{}",
        published.text
    );
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_a_handshake_period() {
    let mut config = fast_config();
    config.server.handshake_timeout_ms = 1_000;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let mut stream = match TcpStream::connect(server.address).await {
        Ok(stream) => stream,
        Err(error) => panic!("{error}"),
    };
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buffer = vec![0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
    assert!(matches!(answered, Ok(Ok(n)) if n > 0));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(
        closed.ok(),
        Some(true),
        "the idle keep-alive connection stayed open"
    );
    shut_down(server).await;
}

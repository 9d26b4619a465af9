//! The OneBot v11 profile on the wire, with an in-process client: what each
//! endpoint sends, how actions are answered, tokens, heartbeats, forwarding
//! to an upstream, and liveness with server Pings switched off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vigil::config::VigilConfig;
use vigil_tests::{test_plugins, DEFAULT_POLICY};

use crate::support::{
    evictions, fast_config, http, metric, metrics_text, sessions_become, start_host, wait_until,
    WsClient,
};

pub(crate) const SELF_ID: i64 = 3_651_396_264;
pub(crate) const TOKEN: &str = "onebot-t0ken";

/// [`fast_config`] with the OneBot profile on: 200 ms heartbeats, a token,
/// and the default tiers' ping timings, since the in-process clients only
/// answer pings while a test reads them.
fn onebot_config() -> VigilConfig {
    let mut config = fast_config();
    config.tiers = vigil::config::TiersConfig::default();
    config.onebot.enabled = true;
    config.onebot.self_id = Some(SELF_ID);
    config.onebot.nickname = "vigil-bot".to_owned();
    config.onebot.heartbeat_interval_ms = 200;
    config.onebot.access_token = Some(TOKEN.to_owned());
    config
}

/// A OneBot client inside the test.
pub(crate) struct Bot {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

async fn try_connect(address: SocketAddr, path: &str, token: Option<&str>) -> Result<Bot, WsError> {
    let mut request = format!("ws://{address}{path}").into_client_request()?;
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            WsError::Url(tokio_tungstenite::tungstenite::error::UrlError::EmptyHostName)
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Bot { socket })
}

pub(crate) async fn connect(address: SocketAddr, path: &str) -> Bot {
    match try_connect(address, path, Some(TOKEN)).await {
        Ok(bot) => bot,
        Err(error) => panic!("cannot connect to {path}: {error}"),
    }
}

impl Bot {
    /// The next JSON text frame within `limit`.
    pub(crate) async fn next_json(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                    Ok(value) => return Some(value),
                    Err(error) => {
                        panic!("the host sent a frame that is not JSON ({error}): {text}")
                    }
                },
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next frame that is not an event (no `post_type`): an answer.
    async fn next_answer(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = self.next_json(left).await?;
            if frame.get("post_type").is_none() {
                return Some(frame);
            }
        }
    }

    async fn send(&mut self, text: &str) {
        if let Err(error) = self.socket.send(Message::Text(text.into())).await {
            panic!("cannot send {text}: {error}");
        }
    }

    /// Sends a request and returns its answer.
    async fn call(&mut self, request: &str) -> Value {
        self.send(request).await;
        match self.next_answer(Duration::from_secs(5)).await {
            Some(answer) => answer,
            None => panic!("no answer to {request}"),
        }
    }

    /// Events (frames with `post_type`) of `kind` seen within `limit`.
    pub(crate) async fn events_within(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_json(left).await {
                Some(frame) if frame.get("post_type").is_some() => events.push(frame),
                Some(_) => {}
                None => break,
            }
        }
        events
    }
}

async fn start_onebot(config: VigilConfig) -> vigil::RunningServer {
    start_host(config, DEFAULT_POLICY, "{}").await
}

#[tokio::test]
async fn the_first_frame_is_the_lifecycle_event_and_heartbeats_follow_under_30_s() {
    let server = start_onebot(onebot_config()).await;
    let mut bot = connect(server.address, "/").await;
    let first = bot.next_json(Duration::from_secs(2)).await;
    let Some(first) = first else {
        panic!("no lifecycle event")
    };
    assert_eq!(first["post_type"], "meta_event");
    assert_eq!(first["meta_event_type"], "lifecycle");
    assert_eq!(first["sub_type"], "connect");
    assert_eq!(first["self_id"], SELF_ID);
    assert!(first["time"].is_i64(), "time is integer seconds: {first}");

    let started = Instant::now();
    let events = bot.events_within(Duration::from_millis(1_100)).await;
    let beats: Vec<&Value> = events
        .iter()
        .filter(|event| event["meta_event_type"] == "heartbeat")
        .collect();
    assert!(
        beats.len() >= 3,
        "a 200 ms interval gives several heartbeats in 1.1 s, got {} in {:?}",
        beats.len(),
        started.elapsed()
    );
    for beat in beats {
        assert_eq!(beat["interval"], 200);
        assert_eq!(beat["self_id"], SELF_ID);
        assert_eq!(beat["status"], json!({"online": true, "good": true}));
    }
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_event_comes_first_even_while_events_are_published() {
    let server = start_onebot(onebot_config()).await;
    let address = server.address;
    let publishing = tokio::spawn(async move {
        for n in 0..300 {
            let body = format!(
                r#"{{"to": {{"class": "onebot"}}, "data": {{"post_type": "notice", "notice_type": "race", "n": {n}}}}}"#
            );
            http(address, "POST", "/publish", Some(&body), None).await;
        }
    });
    for _ in 0..20 {
        let mut bot = connect(server.address, "/event").await;
        let Some(first) = bot.next_json(Duration::from_secs(2)).await else {
            panic!("no first frame");
        };
        assert_eq!(
            first["meta_event_type"], "lifecycle",
            "a published event overtook the lifecycle event: {first}"
        );
    }
    publishing.abort();
    crate::support::shut_down(server).await;
}

#[tokio::test]
async fn heartbeat_status_tells_when_the_policy_plugin_is_disabled() {
    let mut config = onebot_config();
    config.policy.faults.max_faults = 2;
    let server = start_host(
        config,
        test_plugins::MISBEHAVING,
        // Passes the start-up check (class `default`), panics on bots.
        r#"{"fault": "panic", "in": "assess", "trigger_class": "onebot"}"#,
    )
    .await;
    let mut bot = connect(server.address, "/event").await;
    // Every assessment of the session faults; after two the plugin is
    // disabled and only the fallback decides: serving, but not good.
    let mut saw_not_good = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !saw_not_good {
        if let Some(event) = bot.next_json(Duration::from_secs(1)).await {
            if event["meta_event_type"] == "heartbeat" {
                assert_eq!(event["status"]["online"], true);
                saw_not_good = event["status"]["good"] == false;
            }
        }
    }
    assert!(
        saw_not_good,
        "heartbeats kept saying good with the plugin disabled"
    );
    let status = bot_call_on_api(server.address, r#"{"action":"get_status","echo":1}"#).await;
    assert_eq!(status["data"]["good"], false);
    assert_eq!(status["data"]["online"], true);
    crate::support::shut_down(server).await;
}

async fn bot_call_on_api(address: SocketAddr, request: &str) -> Value {
    let mut api = connect(address, "/api").await;
    api.call(request).await
}

#[tokio::test]
async fn built_in_actions_are_answered_and_echo_keeps_its_json_type() {
    let server = start_onebot(onebot_config()).await;
    let mut bot = connect(server.address, "/").await;

    let login = bot
        .call(r#"{"action":"get_login_info","params":{},"echo":"17"}"#)
        .await;
    assert_eq!(
        login,
        json!({"status": "ok", "retcode": 0, "data": {"user_id": SELF_ID, "nickname": "vigil-bot"}, "echo": "17"})
    );

    for echo in [
        r#""17""#,
        "42",
        "4.5",
        r#"{"seq": 1, "id": [1, "a"]}"#,
        "null",
    ] {
        let answer = bot
            .call(&format!(r#"{{"action":"get_version_info","echo":{echo}}}"#))
            .await;
        let sent: Value = match serde_json::from_str(echo) {
            Ok(value) => value,
            Err(error) => panic!("bad test echo {echo}: {error}"),
        };
        assert_eq!(
            answer["echo"], sent,
            "echo {echo} came back as {}",
            answer["echo"]
        );
        assert!(
            answer.get("echo").is_some(),
            "a null echo is still returned"
        );
        assert_eq!(answer["data"]["protocol_version"], "v11");
    }
    let no_echo = bot.call(r#"{"action":"get_status"}"#).await;
    assert!(no_echo.get("echo").is_none());
    assert_eq!(no_echo["data"]["online"], true);
    assert_eq!(no_echo["data"]["good"], true);

    let image = bot.call(r#"{"action":"can_send_image","echo":1}"#).await;
    assert_eq!(image["data"], json!({"yes": false}));
    let record = bot.call(r#"{"action":"can_send_record","echo":2}"#).await;
    assert_eq!(record["data"], json!({"yes": false}));
    let later = bot.call(r#"{"action":"get_status_async","echo":3}"#).await;
    assert_eq!(
        later,
        json!({"status": "async", "retcode": 1, "data": null, "echo": 3})
    );

    let unknown = bot
        .call(r#"{"action":"get_guild_service_profile","params":{},"echo":7}"#)
        .await;
    assert_eq!(unknown["status"], "failed");
    assert_eq!(unknown["retcode"], 1404);
    assert_eq!(unknown["data"], Value::Null);
    assert_eq!(unknown["echo"], 7);

    let malformed = bot.call("{this is not json").await;
    assert_eq!(malformed["status"], "failed");
    assert_eq!(malformed["retcode"], 1400);
    assert!(malformed.get("data").is_some(), "data is always present");
    let no_action = bot.call(r#"{"params":{},"echo":"x"}"#).await;
    assert_eq!(
        (no_action["retcode"].clone(), no_action["echo"].clone()),
        (json!(1400), json!("x"))
    );

    for answer in [&login, &unknown, &malformed] {
        assert!(
            answer.get("post_type").is_none(),
            "an answer is not an event"
        );
    }
    // The session survived every bad request.
    let still = bot.call(r#"{"action":"get_login_info","echo":"9"}"#).await;
    assert_eq!(still["echo"], "9");
    let metrics = metrics_text(server.address).await;
    assert!(
        metric(
            &metrics,
            r#"vigil_onebot_actions_total{action="other",status="failed"}"#
        ) >= 1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test]
async fn events_go_to_universal_and_event_sessions_never_to_api() {
    let server = start_onebot(onebot_config()).await;
    let mut universal = connect(server.address, "/?foo=bar").await;
    let mut events_only = connect(server.address, "/event/").await;
    let mut api = connect(server.address, "/api/?x=1").await;
    assert!(sessions_become(server.address, 3, Duration::from_secs(2)).await);

    let published = http(
        server.address,
        "POST",
        "/publish",
        Some(
            r#"{"to": {"class": "onebot"}, "data": {"post_type": "message", "message_type": "private", "sub_type": "friend", "message_id": 1, "user_id": 10001, "message": "hi", "raw_message": "hi", "font": 0, "sender": {"user_id": 10001}}}"#,
        ),
        None,
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.text);
    assert_eq!(published.json["delivered"], 2, "{}", published.text);

    for (name, bot) in [("/", &mut universal), ("/event/", &mut events_only)] {
        let events = bot.events_within(Duration::from_millis(600)).await;
        assert_eq!(events[0]["meta_event_type"], "lifecycle", "{name}");
        let Some(message) = events.iter().find(|e| e["post_type"] == "message") else {
            panic!("{name} did not get the published message: {events:?}");
        };
        assert_eq!(message["self_id"], SELF_ID, "self_id filled in");
        assert!(message["time"].is_i64(), "time filled in");
        assert!(
            events.iter().any(|e| e["meta_event_type"] == "heartbeat"),
            "{name} gets heartbeats"
        );
    }

    // /api: no lifecycle, no heartbeats, no events; but it answers.
    assert!(
        api.events_within(Duration::from_millis(600))
            .await
            .is_empty(),
        "/api got events"
    );
    let answer = api.call(r#"{"action":"get_login_info","echo":"a"}"#).await;
    assert_eq!(answer["data"]["user_id"], SELF_ID);

    // /event: actions are not answered (and do not end the session).
    events_only
        .send(r#"{"action":"get_login_info","echo":"b"}"#)
        .await;
    assert!(
        events_only
            .next_answer(Duration::from_millis(600))
            .await
            .is_none(),
        "/event answered an action"
    );
    assert!(sessions_become(server.address, 3, Duration::from_secs(1)).await);
    crate::support::shut_down(server).await;
}

#[tokio::test]
async fn the_token_is_checked_before_the_upgrade() {
    let server = start_onebot(onebot_config()).await;
    for path in ["/", "/event", "/api/"] {
        match try_connect(server.address, path, None).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401, "{path}"),
            Err(other) => panic!("{path} without a token: {other}"),
            Ok(_) => panic!("{path} accepted a client without a token"),
        }
        match try_connect(server.address, path, Some("wrong")).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 403, "{path}"),
            Err(other) => panic!("{path} with a wrong token: {other}"),
            Ok(_) => panic!("{path} accepted a wrong token"),
        }
    }
    let by_query = try_connect(server.address, &format!("/?access_token={TOKEN}"), None).await;
    assert!(by_query.is_ok(), "the query token is the fallback");
    assert!(
        sessions_become(server.address, 1, Duration::from_secs(2)).await,
        "rejected clients never became sessions"
    );
    let elsewhere = try_connect(server.address, "/elsewhere", Some(TOKEN)).await;
    assert!(
        matches!(&elsewhere, Err(WsError::Http(response)) if response.status() == 404),
        "other paths are not OneBot endpoints"
    );
    crate::support::shut_down(server).await;
}

/// What the test upstream was asked: (action, params), in order.
pub(crate) type UpstreamCalls = Arc<Mutex<Vec<(String, Value)>>>;

/// A OneBot HTTP API backend: answers `send_msg`, records what it got.
pub(crate) async fn start_upstream(calls: UpstreamCalls) -> SocketAddr {
    use axum::extract::{Path, State};
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/{action}",
            post(
                |State(calls): State<UpstreamCalls>,
                 Path(action): Path<String>,
                 axum::Json(params): axum::Json<Value>| async move {
                    calls
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((action.clone(), params));
                    axum::Json(match action.as_str() {
                        "send_msg" => {
                            json!({"status": "ok", "retcode": 0, "data": {"message_id": 99}})
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            json!({"status": "ok", "retcode": 0, "data": null})
                        }
                        _ => {
                            json!({"status": "failed", "retcode": 1404, "data": null, "message": "no such action"})
                        }
                    })
                },
            ),
        )
        .with_state(calls);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind the upstream: {error}"),
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => panic!("no upstream address: {error}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    address
}

#[tokio::test]
async fn unknown_actions_are_forwarded_to_the_upstream_and_answered_when_it_fails() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let upstream = start_upstream(Arc::clone(&calls)).await;
    let mut config = onebot_config();
    config.onebot.action_upstream = Some(format!("http://{upstream}"));
    config.onebot.action_timeout_ms = 500;
    let server = start_onebot(config).await;
    let mut bot = connect(server.address, "/api").await;

    let sent = bot
        .call(r#"{"action":"send_msg","params":{"message_type":"private","user_id":1,"message":"pong"},"echo":"12"}"#)
        .await;
    assert_eq!(
        sent,
        json!({"status": "ok", "retcode": 0, "data": {"message_id": 99}, "echo": "12"})
    );
    let recorded = calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(
        recorded,
        vec![(
            "send_msg".to_owned(),
            json!({"message_type": "private", "user_id": 1, "message": "pong"})
        )]
    );
    let unsupported = bot.call(r#"{"action":"nope","echo":5}"#).await;
    assert_eq!(
        (unsupported["retcode"].clone(), unsupported["echo"].clone()),
        (json!(1404), json!(5))
    );

    let started = Instant::now();
    let slow = bot.call(r#"{"action":"slow","echo":6}"#).await;
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["retcode"], 1400);
    assert!(
        slow["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{slow}"
    );
    // The 500 ms action timeout, with room for a loaded machine; the slow
    // upstream itself takes far longer.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the timeout"
    );
    // Vigil's own actions never wait for the upstream.
    assert_eq!(
        bot.call(r#"{"action":"get_login_info","echo":1}"#).await["retcode"],
        0
    );
    crate::support::shut_down(server).await;

    // An upstream that is not there: a clear failure, not a hang.
    let closed = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener.local_addr().map(|a| a.port()).unwrap_or(9),
        Err(error) => panic!("cannot find a free port: {error}"),
    };
    let mut config = onebot_config();
    config.onebot.action_upstream = Some(format!("http://127.0.0.1:{closed}"));
    let server = start_onebot(config).await;
    let mut bot = connect(server.address, "/").await;
    let unreachable = bot
        .call(r#"{"action":"send_msg","params":{},"echo":"u"}"#)
        .await;
    assert_eq!(unreachable["status"], "failed");
    assert_eq!(unreachable["retcode"], 1400);
    assert_eq!(unreachable["echo"], "u");
    assert!(
        unreachable["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{unreachable}"
    );
    crate::support::shut_down(server).await;
}

/// Pings off: no Ping reaches the client, and liveness still works.
fn pingless_config(policy_silence_ms: u64) -> (VigilConfig, String) {
    let mut config = onebot_config();
    config.tiers = fast_config().tiers;
    config.onebot.access_token = None;
    config.onebot.ws_ping = false;
    config.onebot.heartbeat_interval_ms = 5_000;
    config.sessions.queue_soft_bytes = 16 << 10;
    config.sessions.queue_max_bytes = 64 << 20;
    let policy = format!(
        r#"{{"classes": {{"onebot": {{"silent_evict_ms": {policy_silence_ms}, "backlog_evict_ms": 1000, "dropped_frames_to_evict": 0}}}}}}"#
    );
    (config, policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pings_off_no_ping_is_sent_yet_dead_clients_are_found() {
    let (config, policy) = pingless_config(1_500);
    let server = start_host(config, DEFAULT_POLICY, &policy).await;
    let url = format!("ws://{}/", server.address);

    // A client that pings the server itself, every 200 ms (as NoneBot's
    // websockets driver does every 20 s), hears no Ping in 2.5 s while the
    // tiers would have pinged it twice.
    let mut pinging = WsClient::connect_url(&url, &["--ping-every-ms", "200"]);
    assert!(pinging
        .wait_for_line("ping", Duration::from_millis(2_500))
        .is_none());
    assert!(sessions_become(server.address, 1, Duration::from_secs(1)).await);
    let metrics = metrics_text(server.address).await;
    assert_eq!(metric(&metrics, "vigil_pings_sent_total"), 0.0);
    // The tick's probe still refreshed the kernel's view of the socket.
    let sessions = http(server.address, "GET", "/sessions", None, None)
        .await
        .json;
    assert!(
        sessions["sessions"][0]["tcp"].is_object(),
        "TCP_INFO is read without pings: {sessions}"
    );

    // Frozen: its own pings stop, and inbound silence evicts it.
    pinging.signal("STOP");
    let frozen_at = Instant::now();
    assert!(sessions_become(server.address, 0, Duration::from_secs(5)).await);
    let took = frozen_at.elapsed();
    // The client's last ping can be up to 200 ms before the freeze.
    assert!(
        took >= Duration::from_millis(1_200),
        "evicted before the silence limit: {took:?}"
    );
    let metrics = metrics_text(server.address).await;
    assert!(evictions(&metrics, "silent") >= 1.0, "{metrics}");

    // kill -9: the transport tier, at once.
    let mut killed = WsClient::connect_url(&url, &["--ping-every-ms", "200"]);
    assert!(sessions_become(server.address, 1, Duration::from_secs(2)).await);
    killed.kill9();
    let killed_at = Instant::now();
    assert!(sessions_become(server.address, 0, Duration::from_secs(1)).await);
    assert!(killed_at.elapsed() < Duration::from_secs(1));

    // A client that stops reading while events are published: the backlog
    // gives it away.
    let _stalled = WsClient::connect_url(&url, &["--no-read", "--ping-every-ms", "200"]);
    assert!(sessions_become(server.address, 1, Duration::from_secs(2)).await);
    let payload = "x".repeat(256 << 10);
    let body = json!({"to": {"class": "onebot"}, "data": {"post_type": "notice", "notice_type": "filler", "payload": payload}}).to_string();
    let evicted = wait_until(Duration::from_secs(15), || {
        let body = body.clone();
        async move {
            http(server.address, "POST", "/publish", Some(&body), None).await;
            crate::support::session_count(server.address).await == 0
        }
    })
    .await;
    assert!(evicted.is_some(), "the stalled client was never evicted");
    let metrics = metrics_text(server.address).await;
    assert!(evictions(&metrics, "backlog") >= 1.0, "{metrics}");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pings_on_onebot_clients_are_pinged() {
    let mut config = onebot_config();
    config.onebot.access_token = None;
    config.tiers = fast_config().tiers;
    let server = start_onebot(config).await;
    let mut client = WsClient::connect_url(&format!("ws://{}/", server.address), &[]);
    assert!(
        client
            .wait_for_line("ping", Duration::from_millis(2_500))
            .is_some(),
        "ws_ping = true (the default) pings OneBot clients like any other"
    );
    crate::support::shut_down(server).await;
}

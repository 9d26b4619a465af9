//! Vigil as a gateway in front of a OneBot implementation: the test
//! implementation (`onebot-impl`, a real process speaking each upstream
//! mode by the spec) holds the accounts; real NoneBot2 and Koishi connect
//! downstream; tests `kill -9` either side.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use vigil::config::{UpstreamConfig, UpstreamMode, VigilConfig};
use vigil::RunningServer;
use vigil_tests::DEFAULT_POLICY;

use crate::real_clients::Bot;
use crate::support::{
    fast_config, free_port, http, metric_or_zero, metrics_text, read_lines, start_host, WsClient,
};

/// The framework-side token.
const TOKEN: &str = "gateway-t0ken";
/// What the implementation presents on reverse WS (and accepts on forward WS).
const IMPL_TOKEN: &str = "impl-t0ken";
const SECRET: &str = "report-s3cret";
const ACCOUNT_A: i64 = 100_001;
const ACCOUNT_B: i64 = 100_002;

/// How long a framework or the implementation may take to show a step.
const STEP: Duration = Duration::from_secs(20);

/// An `onebot-impl` process: its stdin for commands, its stdout lines.
struct Implementation {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    args: Vec<String>,
}

impl Implementation {
    fn start(args: &[String]) -> Implementation {
        let mut child = match Command::new(env!("CARGO_BIN_EXE_onebot-impl"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!("cannot start onebot-impl: {error}"),
        };
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            panic!("no pipes to onebot-impl");
        };
        let mut implementation = Implementation {
            child,
            stdin,
            lines: read_lines(stdout),
            args: args.to_vec(),
        };
        implementation.expect("ready");
        implementation
    }

    /// Its next stdout line starting with `prefix`, within [`STEP`].
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!("onebot-impl never said `{prefix}`");
    }

    /// Sends a private message event from the account.
    fn message(&mut self, text: &str) {
        if let Err(error) = writeln!(self.stdin, "message {text}") {
            panic!("cannot command onebot-impl: {error}");
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -9`, then the same implementation again.
    fn restart(&mut self) -> Implementation {
        self.kill9();
        Implementation::start(&self.args)
    }
}

impl Drop for Implementation {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| (*part).to_owned()).collect()
}

fn upstream(self_id: i64, mode: UpstreamMode) -> UpstreamConfig {
    UpstreamConfig {
        self_id,
        mode,
        url: None,
        access_token: None,
        secret: None,
        framework_token: None,
    }
}

fn config(upstreams: Vec<UpstreamConfig>) -> VigilConfig {
    let mut config = fast_config();
    config.tiers = vigil::config::TiersConfig::default();
    config.onebot.enabled = true;
    config.onebot.self_id = Some(ACCOUNT_A);
    config.onebot.access_token = Some(TOKEN.to_owned());
    config.onebot.heartbeat_interval_ms = 500;
    config.onebot.action_timeout_ms = 3_000;
    config.onebot.upstreams = upstreams;
    config
}

fn reverse_upstream(self_id: i64) -> UpstreamConfig {
    UpstreamConfig {
        access_token: Some(IMPL_TOKEN.to_owned()),
        ..upstream(self_id, UpstreamMode::ReverseWs)
    }
}

fn reverse_impl(vigil: SocketAddr, self_id: i64) -> Implementation {
    let mut implementation = Implementation::start(&args(&[
        "--self-id",
        &self_id.to_string(),
        "--token",
        IMPL_TOKEN,
        "--reverse",
        &format!("ws://{vigil}/onebot/v11/ws"),
    ]));
    implementation.expect("connected");
    implementation
}

async fn start(config: VigilConfig) -> RunningServer {
    start_host(config, DEFAULT_POLICY, "{}").await
}

async fn upstream_connected(vigil: SocketAddr, self_id: i64) -> f64 {
    metric_or_zero(
        &metrics_text(vigil).await,
        &format!("vigil_onebot_upstream_connected{{self_id=\"{self_id}\"}}"),
    )
}

/// The checks every mode shares, with NoneBot2 downstream: its login comes
/// from the implementation, an event reaches it, its reply reaches the
/// implementation and the answer comes back; the implementation's death
/// turns its heartbeats to `good=False`, and its return back; NoneBot2's
/// death removes its session while the upstream stays.
async fn nonebot_through_the_gateway(
    vigil: SocketAddr,
    path: &str,
    self_id: i64,
    mut implementation: Implementation,
) {
    let mut bot = Bot::nonebot_as(&format!("ws://{vigil}{path}"), self_id, TOKEN);
    let connected = bot.expect("connected", STEP);
    assert!(
        connected.contains(&format!("\"nickname\": \"impl-{self_id}\"")),
        "get_login_info must be answered by the implementation: {connected}"
    );
    implementation.expect("action get_login_info");
    bot.expect("heartbeat interval=500 good=True", STEP);

    implementation.message("vigil-ping");
    let reply = implementation.expect("action send_msg");
    assert!(reply.contains("vigil-pong"), "{reply}");
    bot.expect("replied", STEP);

    implementation.kill9();
    bot.expect("heartbeat interval=500 good=False", STEP);
    let _restarted = implementation.restart();
    bot.expect("heartbeat interval=500 good=True", STEP);

    bot.kill9();
    let deadline = Instant::now() + STEP;
    loop {
        let sessions = http(vigil, "GET", "/sessions?class=onebot", None, None).await;
        if sessions.json["count"] == json!(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed bot's session stayed: {}",
            sessions.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        upstream_connected(vigil, self_id).await,
        1.0,
        "the upstream must stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_ws_nonebot2_talks_to_the_implementation_and_each_side_dies_alone() {
    let server = start(config(vec![reverse_upstream(ACCOUNT_A)])).await;
    let vigil = server.address;
    let implementation = reverse_impl(vigil, ACCOUNT_A);
    nonebot_through_the_gateway(vigil, "/", ACCOUNT_A, implementation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_post_nonebot2_talks_to_the_implementation_and_a_bad_signature_is_refused() {
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = start(config(vec![UpstreamConfig {
        url: Some(format!("http://{api}")),
        secret: Some(SECRET.to_owned()),
        ..upstream(ACCOUNT_B, UpstreamMode::Http)
    }]))
    .await;
    let vigil = server.address;

    // A forged report: refused with 401, and never delivered.
    let mut listener = WsClient::connect_url(
        &format!("ws://{vigil}/{ACCOUNT_B}/?access_token={TOKEN}"),
        &[],
    );
    let forged = json!({"time": 1, "self_id": ACCOUNT_B, "post_type": "message",
        "message_type": "private", "sub_type": "friend", "message_id": 1, "user_id": 1,
        "message": "forged", "raw_message": "forged", "font": 0, "sender": {}})
    .to_string();
    let refused = post_report(vigil, ACCOUNT_B, &forged, "sha1=0000").await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let unsigned = post_report(vigil, ACCOUNT_B, &forged, "").await;
    assert_eq!(unsigned.status, 401, "{}", unsigned.text);
    let unknown = post_report(vigil, 999, &forged, &sign(&forged)).await;
    assert_eq!(unknown.status, 403, "{}", unknown.text);
    let malformed = post_report(vigil, ACCOUNT_B, "{not json", &sign("{not json")).await;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    // A report over the size limit is refused from its Content-Length.
    let oversized = format!(
        "POST /onebot/v11/http HTTP/1.1\r\nHost: {vigil}\r\nX-Self-ID: {ACCOUNT_B}\r\n\
         X-Signature: sha1=00\r\nContent-Length: {}\r\n\r\n{{\"a\":",
        64 << 20
    );
    assert_eq!(crate::support::raw_status(vigil, &oversized).await, 413);
    let signed = post_report(vigil, ACCOUNT_B, &forged, &sign(&forged)).await;
    assert_eq!(signed.status, 204, "{}", signed.text);
    let first = message_event(&mut listener);
    assert!(
        first
            .as_deref()
            .is_some_and(|line| line.contains("\"forged\"")),
        "only the signed report is delivered, as it came: {first:?}"
    );
    let text = metrics_text(vigil).await;
    assert_eq!(
        metric_or_zero(
            &text,
            "vigil_onebot_upstream_refused_total{reason=\"bad-signature\"}"
        ),
        2.0
    );
    drop(listener);

    let implementation = Implementation::start(&args(&[
        "--self-id",
        &ACCOUNT_B.to_string(),
        "--http-post",
        &format!("http://{vigil}/onebot/v11/http"),
        "--secret",
        SECRET,
        "--api-listen",
        &api.to_string(),
    ]));
    nonebot_through_the_gateway(vigil, &format!("/{ACCOUNT_B}/"), ACCOUNT_B, implementation).await;
}

/// The next message event (not a meta event) a `ws-client` prints.
fn message_event(client: &mut WsClient) -> Option<String> {
    let deadline = Instant::now() + STEP;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let line = client.wait_for_line("message {", left)?;
        if line.contains("\"post_type\":\"message\"") {
            return Some(line);
        }
    }
    None
}

fn sign(body: &str) -> String {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()) else {
        panic!("HMAC takes any key");
    };
    mac.update(body.as_bytes());
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_report(
    vigil: SocketAddr,
    self_id: i64,
    body: &str,
    signature: &str,
) -> crate::support::HttpResponse {
    let mut request = format!(
        "POST /onebot/v11/http HTTP/1.1\r\nHost: {vigil}\r\nContent-Type: application/json\r\n\
         X-Self-ID: {self_id}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !signature.is_empty() {
        request.push_str(&format!("X-Signature: {signature}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    crate::support::raw_http(vigil, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_ws_koishi_gets_its_calls_answered_by_the_implementation() {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut implementation = Implementation::start(&args(&[
        "--self-id",
        &ACCOUNT_B.to_string(),
        "--token",
        IMPL_TOKEN,
        "--forward-listen",
        &listen.to_string(),
    ]));
    let server = start(config(vec![UpstreamConfig {
        url: Some(format!("ws://{listen}/")),
        access_token: Some(IMPL_TOKEN.to_owned()),
        ..upstream(ACCOUNT_B, UpstreamMode::ForwardWs)
    }]))
    .await;
    let vigil = server.address;
    implementation.expect("connected");

    let mut bot = Bot::koishi_as(&format!("ws://{vigil}/{ACCOUNT_B}/"), ACCOUNT_B, TOKEN);
    bot.expect("online", STEP);
    implementation.expect("action get_login_info");
    bot.expect("heartbeat good=true", STEP);
    implementation.message("vigil-ping");
    bot.expect("message vigil-ping", STEP);
    // Koishi answers a private message with `send_private_msg`.
    let reply = implementation.expect("action send_");
    assert!(reply.contains("vigil-pong"), "{reply}");
    bot.expect("replied", STEP);

    // The implementation dies: Vigil says so; it returns: Vigil reconnects.
    implementation.kill9();
    bot.expect("heartbeat good=false", STEP);
    let mut implementation = implementation.restart();
    implementation.expect("connected");
    bot.expect("heartbeat good=true", STEP);

    bot.kill9();
    assert_eq!(upstream_connected(vigil, ACCOUNT_B).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_never_see_each_others_events() {
    const TOKEN_B: &str = "account-b-t0ken";
    let server = start(config(vec![
        reverse_upstream(ACCOUNT_A),
        UpstreamConfig {
            framework_token: Some(TOKEN_B.to_owned()),
            ..reverse_upstream(ACCOUNT_B)
        },
    ]))
    .await;
    let vigil = server.address;
    // Account B's frameworks have a token of their own: A's opens no B
    // endpoint, and B's opens no A endpoint.
    for (path, token, status) in [
        (format!("/{ACCOUNT_B}/"), TOKEN, 403),
        ("/".to_owned(), TOKEN_B, 403),
        (format!("/{ACCOUNT_B}/"), "", 401),
    ] {
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let request = format!("{}{auth}\r\n", crate::support::upgrade_head(&path));
        let got = crate::support::raw_status(vigil, &request).await;
        assert_eq!(got, status, "{path} with {token:?}");
    }
    let mut impl_a = reverse_impl(vigil, ACCOUNT_A);
    let mut impl_b = reverse_impl(vigil, ACCOUNT_B);
    let mut bot_a = WsClient::connect_url(&format!("ws://{vigil}/?access_token={TOKEN}"), &[]);
    let mut bot_b = WsClient::connect_url(
        &format!("ws://{vigil}/{ACCOUNT_B}/event?access_token={TOKEN_B}"),
        &[],
    );
    impl_a.message("for-a");
    impl_b.message("for-b");
    let mut heard_a = Vec::new();
    let mut heard_b = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(line) = bot_a.wait_for_line("message {", Duration::from_millis(50)) {
            heard_a.push(line);
        }
        if let Some(line) = bot_b.wait_for_line("message {", Duration::from_millis(50)) {
            heard_b.push(line);
        }
    }
    let texts = |heard: &[String], text: &str| heard.iter().filter(|l| l.contains(text)).count();
    assert_eq!(texts(&heard_a, "\"for-a\""), 1, "{heard_a:?}");
    assert_eq!(texts(&heard_a, "\"for-b\""), 0, "{heard_a:?}");
    assert_eq!(texts(&heard_b, "\"for-b\""), 1, "{heard_b:?}");
    assert_eq!(texts(&heard_b, "\"for-a\""), 0, "{heard_b:?}");
    // Each hears its own account's heartbeats only.
    let account = |heard: &[String], id: i64| {
        heard
            .iter()
            .filter(|l| l.contains("\"heartbeat\"") && !l.contains(&format!("\"self_id\":{id}")))
            .count()
    };
    assert_eq!(account(&heard_a, ACCOUNT_A), 0, "{heard_a:?}");
    assert_eq!(account(&heard_b, ACCOUNT_B), 0, "{heard_b:?}");
    // An account that is not configured is not an endpoint.
    let unknown = format!(
        "{}Authorization: Bearer {TOKEN}\r\n\r\n",
        crate::support::upgrade_head("/999/")
    );
    assert_eq!(crate::support::raw_status(vigil, &unknown).await, 404);
}

/// Reads frames from a downstream socket until one is an answer (has
/// `retcode`), within [`STEP`].
async fn answer_of<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no answer: {other:?}"),
        };
        let value: Value = serde_json::from_str(&frame).unwrap_or_default();
        if value.get("retcode").is_some() {
            return value;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_input_is_refused_or_dropped_and_a_dead_upstream_fails_actions() {
    let server = start(config(vec![reverse_upstream(ACCOUNT_A)])).await;
    let vigil = server.address;

    // The implementation's credentials are checked before the upgrade.
    let refuse = |self_id: &str, auth: &str| {
        format!(
            "{}X-Self-ID: {self_id}\r\nX-Client-Role: Universal\r\n{auth}\r\n",
            crate::support::upgrade_head("/onebot/v11/ws")
        )
    };
    let cases = [
        (refuse(&ACCOUNT_A.to_string(), ""), 401),
        (
            refuse(&ACCOUNT_A.to_string(), "Authorization: Token wrong\r\n"),
            403,
        ),
        (
            refuse("424242", &format!("Authorization: Token {IMPL_TOKEN}\r\n")),
            403,
        ),
        (
            refuse(
                "not-a-number",
                &format!("Authorization: Token {IMPL_TOKEN}\r\n"),
            ),
            400,
        ),
    ];
    for (request, status) in cases {
        let got = crate::support::raw_status(vigil, &request).await;
        assert_eq!(got, status, "{request}");
    }

    // A scripted implementation: malformed frames and stray answers are
    // dropped and counted; the link carries on.
    let mut request =
        match tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            format!("ws://{vigil}/onebot/v11/ws"),
        ) {
            Ok(request) => request,
            Err(error) => panic!("bad request: {error}"),
        };
    for (name, value) in [
        ("x-self-id", ACCOUNT_A.to_string()),
        ("x-client-role", "Universal".to_owned()),
        ("authorization", format!("Bearer {IMPL_TOKEN}")),
    ] {
        if let Ok(value) = value.parse() {
            request.headers_mut().insert(name, value);
        }
    }
    let Ok((mut upstream, _)) = tokio_tungstenite::connect_async(request).await else {
        panic!("the implementation could not connect");
    };
    for junk in [
        "{not json".to_owned(),
        json!({"status": "ok", "retcode": 0, "data": null, "echo": "vigil:999999"}).to_string(),
        json!({"post_type": "message", "self_id": ACCOUNT_B, "message": "not yours"}).to_string(),
    ] {
        if upstream.send(Message::Text(junk.into())).await.is_err() {
            panic!("the link dropped the implementation over junk");
        }
    }

    // A busy implementation is no client: a burst past the per-session
    // frame rate (200/s) does not close its link.
    let beat = json!({"time": 1, "self_id": ACCOUNT_A, "post_type": "meta_event",
        "meta_event_type": "heartbeat", "interval": 1000, "status": {"online": true, "good": true}})
    .to_string();
    for _ in 0..600 {
        if upstream
            .send(Message::Text(beat.clone().into()))
            .await
            .is_err()
        {
            panic!("the link dropped the implementation over a burst");
        }
    }

    // A framework's action goes up under Vigil's echo; the answer comes
    // back under the framework's own, byte for byte.
    let url = format!("ws://{vigil}/api?access_token={TOKEN}");
    let Ok((mut bot, _)) = tokio_tungstenite::connect_async(url).await else {
        panic!("the framework could not connect");
    };
    let echo = r#"{"n": 1, "s": "ü\u00e9"}"#;
    let action = format!(r#"{{"action":"send_msg","params":{{"message":"hi"}},"echo":{echo}}}"#);
    if bot.send(Message::Text(action.into())).await.is_err() {
        panic!("cannot send the action");
    }
    let up = loop {
        match tokio::time::timeout(STEP, upstream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                if value["action"] == "send_msg" {
                    break value;
                }
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("the action never went up: {other:?}"),
        }
    };
    let vigil_echo = up["echo"].clone();
    assert!(
        vigil_echo.as_str().is_some_and(|e| e.starts_with("vigil:")),
        "{up}"
    );
    assert_eq!(up["params"], json!({"message": "hi"}));
    let answer =
        json!({"status": "ok", "retcode": 0, "data": {"message_id": 7}, "echo": vigil_echo});
    if upstream
        .send(Message::Text(answer.to_string().into()))
        .await
        .is_err()
    {
        panic!("cannot answer");
    }
    let (_, mut bot_frames) = bot.split();
    let answered = answer_of(&mut bot_frames).await;
    assert_eq!(answered["data"], json!({"message_id": 7}));
    assert_eq!(
        answered["echo"],
        serde_json::from_str::<Value>(echo).unwrap_or_default()
    );

    let text = metrics_text(vigil).await;
    for (reason, count) in [
        ("malformed", 1.0),
        ("unmatched-echo", 1.0),
        ("wrong-self-id", 1.0),
        ("bad-token", 2.0),
    ] {
        assert_eq!(
            metric_or_zero(
                &text,
                &format!("vigil_onebot_upstream_refused_total{{reason=\"{reason}\"}}")
            ),
            count,
            "{reason}:\n{text}"
        );
    }

    // An action waiting when the implementation goes: failed/1400 at once.
    let url = format!("ws://{vigil}/api?access_token={TOKEN}");
    let Ok((mut second, _)) = tokio_tungstenite::connect_async(url).await else {
        panic!("the framework could not reconnect");
    };
    let pending = r#"{"action":"get_status","params":{},"echo":"waiting"}"#;
    if second.send(Message::Text(pending.into())).await.is_err() {
        panic!("cannot send the action");
    }
    // Seen going up; then the implementation vanishes without answering.
    loop {
        match tokio::time::timeout(STEP, upstream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("get_status") => break,
            Ok(Some(Ok(_))) => continue,
            other => panic!("the action never went up: {other:?}"),
        }
    }
    drop(upstream);
    let started = Instant::now();
    let (_, mut second_frames) = second.split();
    let failed = answer_of(&mut second_frames).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["retcode"], 1400, "{failed}");
    assert_eq!(failed["echo"], "waiting");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the pending action must fail when the upstream goes, not at its timeout"
    );
    assert_eq!(upstream_connected(vigil, ACCOUNT_A).await, 0.0);
}

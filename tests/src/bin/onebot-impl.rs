//! A OneBot v11 implementation for the gateway tests: it holds one bot
//! account and speaks one of the three upstream modes by the spec
//! (`communication/ws-reverse.md`, `ws.md`, `http-post.md`), as
//! Lagrange.OneBot, NapCat or go-cqhttp do, so tests can `kill -9` it.
//!
//! ```text
//! onebot-impl --self-id N [--nickname NAME] [--token T] MODE
//!   --reverse URL                 connect to Vigil (X-Self-ID, X-Client-Role: Universal)
//!   --forward-listen ADDR         serve forward WebSocket on ADDR
//!   --http-post URL --secret S --api-listen ADDR
//!                                 post signed events to URL; serve the HTTP API on ADDR
//! ```
//!
//! Reads commands on stdin: `message <text>` sends a private message event,
//! `raw <json>` sends a frame as it is. Prints `ready` once listening or
//! connected, `connected` / `disconnected` for WebSocket peers, and
//! `action <name> <params>` for every action it answers. It answers every
//! action `ok`, echoing the request's `echo`: `get_login_info` with its
//! account, `get_status` online and good, `send_msg` and the like with a
//! `message_id`.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn fail(why: &str) -> ! {
    eprintln!("onebot-impl: {why}");
    std::process::exit(2);
}

#[derive(Clone)]
struct Account {
    self_id: i64,
    nickname: String,
    token: Option<String>,
    /// Frames to send to Vigil (events), fanned out to every connection.
    events: broadcast::Sender<String>,
    message_ids: Arc<Mutex<i64>>,
}

impl Account {
    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn message_event(&self, text: &str) -> String {
        let message_id = {
            let mut ids = self.message_ids.lock().unwrap_or_else(|e| e.into_inner());
            *ids += 1;
            *ids
        };
        json!({
            "time": Self::now(), "self_id": self.self_id, "post_type": "message",
            "message_type": "private", "sub_type": "friend", "message_id": message_id,
            "user_id": 10_000, "message": text, "raw_message": text, "font": 0,
            "sender": {"user_id": 10_000, "nickname": "tester"},
        })
        .to_string()
    }

    fn heartbeat(&self) -> String {
        json!({
            "time": Self::now(), "self_id": self.self_id, "post_type": "meta_event",
            "meta_event_type": "heartbeat", "interval": 1000,
            "status": {"online": true, "good": true},
        })
        .to_string()
    }

    fn lifecycle(&self) -> String {
        json!({
            "time": Self::now(), "self_id": self.self_id, "post_type": "meta_event",
            "meta_event_type": "lifecycle", "sub_type": "connect",
        })
        .to_string()
    }

    /// The answer's `data` for `action`.
    fn data(&self, action: &str) -> Value {
        match action {
            "get_login_info" => json!({"user_id": self.self_id, "nickname": self.nickname}),
            "get_status" => json!({"online": true, "good": true}),
            "get_version_info" => {
                json!({"app_name": "onebot-impl", "app_version": "1", "protocol_version": "v11"})
            }
            "send_msg" | "send_private_msg" | "send_group_msg" => json!({"message_id": 4242}),
            _ => json!({}),
        }
    }

    /// Answers one action frame; `None` when it is not an action.
    fn answer(&self, frame: &str) -> Option<String> {
        let request: Value = serde_json::from_str(frame).ok()?;
        let action = request["action"].as_str()?;
        say(&format!("action {action} {}", request["params"]));
        let mut answer = json!({
            "status": "ok", "retcode": 0, "data": self.data(action),
        });
        if let Some(echo) = request.get("echo") {
            answer["echo"] = echo.clone();
        }
        Some(answer.to_string())
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("Token "))
            })
            == Some(expected.as_str())
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let self_id = arg(&args, "--self-id")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| fail("--self-id N is required"));
    let (events, _) = broadcast::channel(1024);
    let account = Account {
        self_id,
        nickname: arg(&args, "--nickname").unwrap_or_else(|| format!("impl-{self_id}")),
        token: arg(&args, "--token"),
        events,
        message_ids: Arc::new(Mutex::new(0)),
    };
    read_commands(account.clone());
    {
        let account = account.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let _ = account.events.send(account.heartbeat());
            }
        });
    }
    if let Some(url) = arg(&args, "--reverse") {
        reverse(account, &url).await;
    } else if let Some(listen) = arg(&args, "--forward-listen") {
        forward(account, &listen).await;
    } else if let (Some(url), Some(secret), Some(listen)) = (
        arg(&args, "--http-post"),
        arg(&args, "--secret"),
        arg(&args, "--api-listen"),
    ) {
        http(account, &url, &secret, &listen).await;
    } else {
        fail("one of --reverse URL, --forward-listen ADDR, or --http-post URL --secret S --api-listen ADDR");
    }
}

/// Stdin commands become events.
fn read_commands(account: Account) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            let frame = if let Some(text) = line.strip_prefix("message ") {
                account.message_event(text)
            } else if let Some(raw) = line.strip_prefix("raw ") {
                raw.to_owned()
            } else {
                continue;
            };
            let _ = account.events.send(frame);
        }
    });
}

/// Reverse WS: connects to Vigil, and reconnects when the link is lost.
async fn reverse(account: Account, url: &str) {
    let mut announced = false;
    loop {
        let mut request = match url.into_client_request() {
            Ok(request) => request,
            Err(error) => fail(&format!("bad URL {url}: {error}")),
        };
        let headers = request.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        };
        set("x-self-id", account.self_id.to_string());
        set("x-client-role", "Universal".to_owned());
        if let Some(token) = &account.token {
            set("authorization", format!("Bearer {token}"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => {
                if !announced {
                    say("ready");
                    announced = true;
                }
                say("connected");
                let (mut sink, mut stream) = socket.split();
                let _ = sink.send(Message::Text(account.lifecycle().into())).await;
                let mut events = account.events.subscribe();
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Ok(event) => if sink.send(Message::Text(event.into())).await.is_err() { break },
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        },
                        incoming = stream.next() => match incoming {
                            Some(Ok(Message::Text(text))) => {
                                if let Some(answer) = account.answer(&text) {
                                    if sink.send(Message::Text(answer.into())).await.is_err() { break }
                                }
                            }
                            Some(Ok(Message::Ping(payload))) => {
                                let _ = sink.send(Message::Pong(payload)).await;
                            }
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                            Some(Ok(_)) => {}
                        },
                    }
                }
                say("disconnected");
            }
            Err(error) => eprintln!("onebot-impl: cannot connect to {url}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Forward WS: serves `/` (universal) on `listen`.
async fn forward(account: Account, listen: &str) {
    let app = Router::new()
        .route("/", get(forward_upgrade))
        .with_state(account);
    serve(app, listen).await;
}

async fn forward_upgrade(
    State(account): State<Account>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    if !account.token_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    upgrade.on_upgrade(move |socket| forward_session(account, socket))
}

async fn forward_session(account: Account, socket: WebSocket) {
    say("connected");
    let (mut sink, mut stream) = socket.split();
    let _ = sink
        .send(AxumMessage::Text(account.lifecycle().into()))
        .await;
    let mut events = account.events.subscribe();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => if sink.send(AxumMessage::Text(event.into())).await.is_err() { break },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(AxumMessage::Text(text))) => {
                    if let Some(answer) = account.answer(&text) {
                        if sink.send(AxumMessage::Text(answer.into())).await.is_err() { break }
                    }
                }
                Some(Ok(AxumMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    say("disconnected");
}

/// HTTP: posts events to `url` signed with `secret`; serves the API.
async fn http(account: Account, url: &str, secret: &str, listen: &str) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|error| fail(&format!("no HTTP client: {error}")));
    {
        let account = account.clone();
        let url = url.to_owned();
        let secret = secret.to_owned();
        let mut events = account.events.subscribe();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
                    return;
                };
                mac.update(event.as_bytes());
                let signature = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
                let posted = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-self-id", account.self_id.to_string())
                    .header("x-signature", signature)
                    .body(event)
                    .send()
                    .await;
                if let Err(error) = posted {
                    eprintln!("onebot-impl: cannot post an event: {error}");
                }
            }
        });
    }
    let app = Router::new()
        .route("/{action}", post(http_action))
        .with_state(account);
    serve(app, listen).await;
}

async fn http_action(
    State(account): State<Account>,
    Path(action): Path<String>,
    headers: HeaderMap,
    params: Option<Json<Value>>,
) -> axum::response::Response {
    if !account.token_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let params = params.map_or(json!({}), |Json(params)| params);
    say(&format!("action {action} {params}"));
    Json(json!({"status": "ok", "retcode": 0, "data": account.data(&action)})).into_response()
}

async fn serve(app: Router, listen: &str) {
    let address: SocketAddr = listen
        .parse()
        .unwrap_or_else(|_| fail(&format!("bad address {listen}")));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .unwrap_or_else(|error| fail(&format!("cannot listen on {listen}: {error}")));
    say("ready");
    if let Err(error) = axum::serve(listener, app).await {
        fail(&format!("server failed: {error}"));
    }
}

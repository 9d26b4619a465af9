//! The implementation-facing side of the OneBot gateway: the three ways a
//! OneBot implementation and Vigil reach each other (v11
//! `communication/ws-reverse.md`, `ws.md`, `http-post.md`).
//!
//! - Reverse WS: the implementation connects to `/onebot/v11/ws` (or the
//!   split `…/ws/event` and `…/ws/api`) with `X-Self-ID`, `X-Client-Role`
//!   and its token. Its connection is a session of the core, class
//!   `onebot-upstream`, so every liveness layer watches it too.
//! - Forward WS: Vigil connects to the implementation's server and
//!   reconnects with backoff; a ping each heartbeat interval, and three
//!   intervals of silence count as dead.
//! - HTTP: the implementation posts events to `/onebot/v11/http`, signed
//!   (`X-Signature: sha1=<hmac>`); Vigil posts actions to its HTTP API and
//!   probes it with `get_status` each heartbeat interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use vigil_policy_runtime::SessionId;

use super::config::UpstreamMode;
use super::link::{group_of, GatewayMetrics, Link};
use crate::core::tcp::ConnInfo;
use crate::core::{DataHandler, Endpoint, EndpointSpec, SessionHost};
use crate::http::AppError;

/// The profile name of implementations' own sessions: never a target of
/// the frameworks' events or heartbeats.
pub const UPSTREAM_PROFILE: &str = "onebot-upstream";

/// The client class of implementations' sessions, as policies see them.
pub const UPSTREAM_CLASS: &str = "onebot-upstream";

/// Longest wait between two forward-WS connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the implementation-facing routes share.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) host: SessionHost,
    pub(crate) links: Arc<HashMap<i64, Arc<Link>>>,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) ws_ping: bool,
    pub(crate) max_report_bytes: usize,
}

/// Which connection of a reverse-WS implementation this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientRole {
    Universal,
    Event,
    Api,
}

impl ClientRole {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "universal" => Some(ClientRole::Universal),
            "event" => Some(ClientRole::Event),
            "api" => Some(ClientRole::Api),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ClientRole::Universal => "universal",
            ClientRole::Event => "event",
            ClientRole::Api => "api",
        }
    }
}

/// The routes implementations use, on the public listener.
pub(crate) fn routes(gateway: Gateway) -> Router {
    Router::new()
        .route("/onebot/v11/ws", reverse_route(None))
        .route("/onebot/v11/ws/", reverse_route(None))
        .route(
            "/onebot/v11/ws/event",
            reverse_route(Some(ClientRole::Event)),
        )
        .route("/onebot/v11/ws/api", reverse_route(Some(ClientRole::Api)))
        .route("/onebot/v11/http", post(http_report))
        .route("/onebot/v11/http/", post(http_report))
        .with_state(gateway)
}

/// A reverse-WS route; `role` when the path fixes it (the split form).
fn reverse_route(role: Option<ClientRole>) -> axum::routing::MethodRouter<Gateway> {
    get(
        move |state: State<Gateway>,
              conn: ConnectInfo<ConnInfo>,
              query: RawQuery,
              headers: HeaderMap,
              upgrade: WebSocketUpgrade| async move {
            reverse(state, conn, query, headers, upgrade, role).await
        },
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The token an implementation presents: `Authorization: Bearer …` or
/// `Token …`, or `?access_token=`.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = header(headers, "authorization") {
        let value = value.trim();
        for scheme in ["Bearer ", "Token ", "bearer ", "token "] {
            if let Some(token) = value.strip_prefix(scheme) {
                return Some(token.trim().to_owned());
            }
        }
        return Some(value.to_owned());
    }
    query.and_then(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == "access_token")
            .map(|(_, token)| token)
    })
}

/// The link `X-Self-ID` names, if it is an account reached in `mode`.
fn link_for(
    gateway: &Gateway,
    headers: &HeaderMap,
    mode: UpstreamMode,
) -> Result<Arc<Link>, AppError> {
    let Some(self_id) = header(headers, "x-self-id").and_then(|id| id.trim().parse::<i64>().ok())
    else {
        return Err(AppError::bad_request(
            "X-Self-ID must be the bot account's id",
        ));
    };
    match gateway.links.get(&self_id) {
        Some(link) if link.mode == mode => Ok(Arc::clone(link)),
        _ => {
            gateway.metrics.refuse("unknown-self-id");
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!("account {self_id} is not configured for this connection mode"),
            ))
        }
    }
}

/// Checks the token the implementation presented against its link's.
fn check_token(link: &Link, presented: Option<String>) -> Result<(), AppError> {
    use subtle::ConstantTimeEq;
    let Some(expected) = link.access_token.as_deref() else {
        return Ok(());
    };
    match presented {
        None => {
            link.metrics().refuse("bad-token");
            Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "missing access token",
            ))
        }
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => {
            link.metrics().refuse("bad-token");
            Err(AppError::new(StatusCode::FORBIDDEN, "wrong access token"))
        }
    }
}

async fn reverse(
    State(gateway): State<Gateway>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
    path_role: Option<ClientRole>,
) -> Result<Response, AppError> {
    let link = link_for(&gateway, &headers, UpstreamMode::ReverseWs)?;
    check_token(&link, presented_token(&headers, query.as_deref()))?;
    let header_role = match header(&headers, "x-client-role") {
        Some(text) => Some(ClientRole::parse(text).ok_or_else(|| {
            AppError::bad_request("X-Client-Role must be Universal, Event or API")
        })?),
        None => None,
    };
    let role = match (path_role, header_role) {
        (Some(path), Some(said)) if path != said => {
            return Err(AppError::bad_request(format!(
                "X-Client-Role {} on the {} path",
                said.name(),
                path.name()
            )))
        }
        (Some(role), _) | (None, Some(role)) => role,
        (None, None) => ClientRole::Universal,
    };
    let spec = EndpointSpec {
        class: Arc::from(UPSTREAM_CLASS),
        // A reconnecting implementation supersedes its old connection.
        identity: Some(format!(
            "{UPSTREAM_PROFILE}/{}/{}",
            link.self_id,
            role.name()
        )),
        identity_proven: true,
        expires_at: None,
        endpoint: Endpoint {
            receives_published: false,
            pinged: gateway.ws_ping,
            profile: Some(UPSTREAM_PROFILE),
            group: group_of(link.self_id),
            operator_link: true,
        },
        greeting: None,
        on_data: Some(Arc::new(ReverseSession {
            link,
            carries_actions: role != ClientRole::Event,
        })),
    };
    Ok(gateway.host.accept(conn, upgrade, spec).await?)
}

/// A reverse-WS connection's frames go to its link; its opening and end
/// attach and detach it.
struct ReverseSession {
    link: Arc<Link>,
    carries_actions: bool,
}

impl DataHandler for ReverseSession {
    fn on_data(&self, host: &SessionHost, _session: SessionId, frame: &[u8]) {
        self.link.on_frame(host, frame);
    }

    fn on_open(&self, host: &SessionHost, session: SessionId) {
        self.link
            .attach_session(host, session, self.carries_actions);
    }

    fn on_close(&self, _host: &SessionHost, session: SessionId) {
        self.link.detach_session(session);
    }
}

/// `POST /onebot/v11/http`: one event report, signed.
async fn http_report(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let link = link_for(&gateway, &headers, UpstreamMode::Http)?;
    // A declared length over the limit is refused before a byte is read.
    let declared = header(&headers, "content-length").and_then(|length| length.parse::<u64>().ok());
    let body = match declared.filter(|length| *length > gateway.max_report_bytes as u64) {
        Some(_) => Err(()),
        None => axum::body::to_bytes(body, gateway.max_report_bytes)
            .await
            .map_err(|_| ()),
    };
    let body = match body {
        Ok(body) => body,
        Err(()) => {
            link.metrics().refuse("oversized");
            return Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "an event report may hold at most {} bytes",
                    gateway.max_report_bytes
                ),
            ));
        }
    };
    let secret = link.secret.as_deref().unwrap_or_default();
    if !signature_matches(secret, &body, header(&headers, "x-signature")) {
        link.metrics().refuse("bad-signature");
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "X-Signature does not match the report (sha1=<HMAC-SHA1 of the body with the secret>)",
        ));
    }
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        link.metrics().refuse("malformed");
        return Err(AppError::bad_request("the report is not JSON"));
    }
    link.set_http_online(true);
    link.on_frame(&gateway.host, &body);
    // The quick-operation reply: nothing to do.
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether `signature` is `sha1=<hex>` of HMAC-SHA1(`secret`, `body`),
/// compared in constant time.
pub fn signature_matches(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_digest) = signature.and_then(|value| value.trim().strip_prefix("sha1=")) else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// Keeps a forward-WS link connected until `stop`: connect, serve, and on
/// loss reconnect after a backoff that doubles up to 30 s.
pub(crate) async fn run_forward(
    host: SessionHost,
    link: Arc<Link>,
    interval: Duration,
    max_message_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let Some(url) = link.url.clone() else {
        return;
    };
    let mut backoff = Duration::from_millis(500);
    while !*stop.borrow() {
        match connect(&url, link.access_token.as_deref(), max_message_bytes).await {
            Ok(socket) => {
                tracing::info!(self_id = link.self_id, %url, "connected to the OneBot implementation");
                backoff = Duration::from_millis(500);
                serve_forward(&host, &link, socket, interval, &mut stop).await;
                link.detach_socket();
                tracing::warn!(self_id = link.self_id, %url, "lost the OneBot implementation");
            }
            Err(why) => {
                tracing::debug!(self_id = link.self_id, %url, %why, "cannot reach the OneBot implementation");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves once `stop` turns true (holding no borrow of it).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

type ForwardSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    url: &str,
    token: Option<&str>,
    max_message_bytes: usize,
) -> Result<ForwardSocket, String> {
    let mut request = url
        .into_client_request()
        .map_err(|error| error.to_string())?;
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the access token cannot be sent as a header".to_owned())?;
        request.headers_mut().insert("authorization", value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Serves one forward-WS connection until it fails, goes silent for three
/// intervals, or `stop`.
async fn serve_forward(
    host: &SessionHost,
    link: &Link,
    mut socket: ForwardSocket,
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
) {
    let (actions, mut outgoing) = mpsc::channel::<String>(256);
    link.attach_socket(actions);
    let mut pings = tokio::time::interval(interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = stopped(stop) => break,
            Some(frame) = outgoing.recv() => {
                if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    last_heard = Instant::now();
                    link.on_frame(host, text.as_bytes());
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    last_heard = Instant::now();
                    link.on_frame(host, &bytes);
                }
                Some(Ok(WsMessage::Close(_))) | None => return,
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(error)) => {
                    let oversized = matches!(
                        error,
                        tokio_tungstenite::tungstenite::Error::Capacity(_)
                    );
                    if oversized {
                        link.metrics().refuse("oversized");
                    }
                    tracing::debug!(self_id = link.self_id, %error, "forward-WS connection failed");
                    return;
                }
            },
            _ = pings.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    tracing::warn!(self_id = link.self_id, "the OneBot implementation went silent");
                    return;
                }
                if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = socket.close(None).await;
}

/// Probes an HTTP-mode link's API each `interval` until `stop`.
pub(crate) async fn run_http_probe(
    link: Arc<Link>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while crate::core::tick::next_tick(&mut every, &mut stop).await {
        link.probe_http().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_hmac_of_the_exact_body_is_accepted() {
        // HMAC-SHA1("secret", "{}"), as `openssl dgst -sha1 -hmac secret`.
        let body = b"{}";
        let mut mac = Hmac::<Sha1>::new_from_slice(b"secret").unwrap_or_else(|_| unreachable!());
        mac.update(body);
        let good = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_matches("secret", body, Some(&good)));
        assert!(
            !signature_matches("secret", b"{} ", Some(&good)),
            "another body"
        );
        assert!(
            !signature_matches("other", body, Some(&good)),
            "another secret"
        );
        assert!(!signature_matches("secret", body, None), "no signature");
        assert!(
            !signature_matches("secret", body, Some("sha1=zz")),
            "not hex"
        );
        assert!(
            !signature_matches("secret", body, Some(&good[5..])),
            "no sha1= prefix"
        );
    }

    #[test]
    fn tokens_are_read_from_either_scheme_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            presented_token(&headers, Some("access_token=q")),
            Some("q".to_owned())
        );
        headers.insert(
            "authorization",
            "Token abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented_token(&headers, None), Some("abc".to_owned()));
        headers.insert(
            "authorization",
            "Bearer xyz".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented_token(&headers, None), Some("xyz".to_owned()));
    }
}

//! The OneBot v11 forward-WebSocket profile: Vigil as the endpoint bot
//! frameworks (NoneBot2, Koishi) connect to, with all of Vigil's liveness
//! behaviour. The wire contract is `shared/ONEBOT11.md`; in short:
//!
//! - `/` (universal), `/event` (events only) and `/api` (actions only), with
//!   or without a trailing slash, query string ignored; any other path is
//!   not a OneBot endpoint (404). Sessions are of client class `onebot`.
//! - The token is checked before the upgrade: 401 missing, 403 wrong.
//! - `/` and `/event` get the lifecycle `connect` event first, then heartbeat
//!   meta events every `heartbeat_interval_ms`, then whatever the backend
//!   publishes (`POST /publish`).
//! - `/` and `/api` answer actions: a few Vigil knows, the rest forwarded to
//!   `action_upstream` or answered `failed`/1404.

pub mod protocol;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::sync::watch;

use crate::config::OneBotConfig;
use crate::hub::Hub;
use crate::server::{check_token, AppError};
use crate::session::{Endpoint, Session};
use crate::tcp::ConnInfo;
use protocol::{retcode, ActionRequest, ActionResponse, BotStatus};
use upstream::Upstream;

/// The client class of every OneBot session, so policies can treat bots
/// differently (the default policy has a preset for it).
pub const CLIENT_CLASS: &str = "onebot";

/// Which endpoint a OneBot session came in on; it decides what the session
/// receives and whether its frames are actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneBotRole {
    /// `/`: events out, actions in.
    Universal,
    /// `/event`: events only; the client's frames are not actions.
    Event,
    /// `/api`: actions only; no lifecycle event, heartbeats or events.
    Api,
}

impl OneBotRole {
    /// Whether events (lifecycle, heartbeats, published ones) go to it.
    pub fn receives_events(self) -> bool {
        matches!(self, OneBotRole::Universal | OneBotRole::Event)
    }

    /// Whether its text frames are action requests to answer.
    pub fn answers_actions(self) -> bool {
        matches!(self, OneBotRole::Universal | OneBotRole::Api)
    }
}

/// The profile in force, built once from `[onebot]`.
#[derive(Debug)]
pub struct OneBotProfile {
    self_id: i64,
    nickname: String,
    heartbeat_interval: Duration,
    ws_ping: bool,
    access_token: Option<String>,
    upstream: Option<Upstream>,
}

impl OneBotProfile {
    /// The profile `[onebot]` asks for; `None` when it is not enabled.
    /// `server_token` guards the endpoints when `[onebot]` sets no token.
    /// `answer_limit` caps a forwarded action's answer (the session's
    /// queue limit: a bigger one could never be delivered).
    pub fn from_config(
        config: &OneBotConfig,
        server_token: Option<&str>,
        answer_limit: usize,
    ) -> anyhow::Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        config.validate()?;
        if !config.ws_ping {
            tracing::warn!(
                "onebot.ws_ping = false: OneBot clients get no WebSocket Pings, so a frozen client \
                 is found only by write failures, backlog, TCP keepalive, or the policy's \
                 inbound-silence limit (the default policy's `silent_evict_ms` for class `onebot`)"
            );
        }
        let self_id = config
            .self_id
            .ok_or_else(|| anyhow::anyhow!("[onebot] self_id is required"))?;
        let upstream = config
            .action_upstream
            .as_deref()
            .map(|url| {
                Upstream::new(
                    url,
                    Duration::from_millis(config.action_timeout_ms),
                    answer_limit,
                )
            })
            .transpose()?;
        Ok(Some(OneBotProfile {
            self_id,
            nickname: config.nickname.clone(),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
            ws_ping: config.ws_ping,
            access_token: config
                .access_token
                .clone()
                .or_else(|| server_token.map(str::to_owned)),
            upstream,
        }))
    }

    /// The bot account id every event carries.
    pub fn self_id(&self) -> i64 {
        self.self_id
    }
}

/// The endpoints, each path with and without its trailing slash.
pub fn routes(hub: &Arc<Hub>) -> Router<Arc<Hub>> {
    Router::new()
        .route("/", get(universal))
        .route("/event", get(event))
        .route("/event/", get(event))
        .route("/api", get(api))
        .route("/api/", get(api))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(hub),
            require_onebot_token,
        ))
}

/// Checked before the upgrade, so a rejected client never gets a socket.
async fn require_onebot_token(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(expected) = hub
        .onebot
        .as_ref()
        .and_then(|profile| profile.access_token.as_deref())
    {
        check_token(expected, request.headers(), request.uri().query())?;
    }
    Ok(next.run(request).await)
}

async fn universal(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    accept(hub, conn, upgrade, OneBotRole::Universal).await
}

async fn event(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    accept(hub, conn, upgrade, OneBotRole::Event).await
}

async fn api(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    accept(hub, conn, upgrade, OneBotRole::Api).await
}

async fn accept(
    hub: Arc<Hub>,
    conn: ConnInfo,
    upgrade: WebSocketUpgrade,
    role: OneBotRole,
) -> Result<Response, AppError> {
    let Some(profile) = hub.onebot.as_ref() else {
        return Err(AppError::new(
            axum::http::StatusCode::NOT_FOUND,
            "the OneBot profile is not enabled",
        ));
    };
    let greeting = role.receives_events().then(|| {
        Message::Text(protocol::lifecycle_connect(profile.self_id, protocol::unix_seconds()).into())
    });
    let endpoint = Endpoint::OneBot {
        role,
        ws_ping: profile.ws_ping,
    };
    crate::server::accept_session(
        hub,
        conn,
        upgrade,
        None,
        Arc::from(CLIENT_CLASS),
        endpoint,
        greeting,
    )
    .await
}

/// The host's state as OneBot clients see it: online while serving, good
/// while serving with the policy plugin deciding (not disabled for faults).
pub fn status(hub: &Hub) -> BotStatus {
    let online = !hub.is_shutting_down();
    let plugin_decides =
        hub.policy.stats().state() == crate::policy::supervisor::PolicyState::Active;
    BotStatus {
        online,
        good: online && plugin_decides,
    }
}

/// Answers one frame from a `/` or `/api` client. Actions Vigil knows are
/// answered at once; others go to the upstream on a task of their own, so
/// a slow backend never holds up the session's reads.
pub(crate) fn on_action(hub: &Arc<Hub>, session: &Arc<Session>, frame: &[u8]) {
    let Some(profile) = hub.onebot.as_ref() else {
        return;
    };
    let request = match protocol::parse_request(frame) {
        Ok(request) => request,
        Err(malformed) => {
            tracing::debug!(session_id = session.id, why = %malformed.why, "malformed OneBot action");
            let response =
                ActionResponse::failed(retcode::BAD_REQUEST, malformed.why, malformed.echo);
            answer(hub, session, "(malformed)", &response);
            return;
        }
    };
    if let Some(response) = local_answer(hub, profile, &request) {
        answer(hub, session, &request.action, &response);
        return;
    }
    let Some(upstream) = profile.upstream.as_ref() else {
        let response = ActionResponse::failed(
            retcode::UNSUPPORTED,
            format!(
                "unsupported action `{}` (no action_upstream configured)",
                request.action
            ),
            request.echo,
        );
        answer(hub, session, &request.action, &response);
        return;
    };
    let Some(permit) = upstream.admit(session.id) else {
        let response = ActionResponse::failed(
            retcode::BAD_REQUEST,
            format!(
                "too many actions waiting for the upstream (at most {} per session, {} in all)",
                upstream::MAX_IN_FLIGHT_PER_SESSION,
                upstream::MAX_IN_FLIGHT
            ),
            request.echo,
        );
        answer(hub, session, &request.action, &response);
        return;
    };
    let upstream = upstream.clone();
    let hub = Arc::clone(hub);
    let session = Arc::clone(session);
    tokio::spawn(async move {
        let ActionRequest {
            action,
            params,
            echo,
        } = request;
        let response = upstream.call(&action, &params, echo).await;
        drop(permit);
        answer(&hub, &session, &action, &response);
    });
}

/// The answer to an action Vigil carries out itself; `None` for the rest.
fn local_answer(
    hub: &Hub,
    profile: &OneBotProfile,
    request: &ActionRequest,
) -> Option<ActionResponse> {
    let (name, is_async) = match request.action.strip_suffix("_async") {
        Some(name) => (name, true),
        None => (request.action.as_str(), false),
    };
    let data = match name {
        "get_login_info" => json!({ "user_id": profile.self_id, "nickname": profile.nickname }),
        "get_status" => {
            let mut value = status(hub).to_value();
            value["vigil"] = json!({
                "sessions": hub.registry.len(),
                "policy": hub.policy.stats().state().as_str(),
            });
            value
        }
        "get_version_info" => json!({
            "app_name": "vigil",
            "app_version": env!("CARGO_PKG_VERSION"),
            "protocol_version": "v11",
        }),
        "can_send_image" | "can_send_record" => json!({ "yes": false }),
        _ => return None,
    };
    let echo = request.echo.clone();
    Some(if is_async {
        ActionResponse::accepted(echo)
    } else {
        ActionResponse::ok(data, echo)
    })
}

/// Queues an answer. Answers are not subject to the queue's hard limit: a
/// client that asked must hear back even while published events fill its
/// queue (they are few — bounded by the in-flight limits — and an answer
/// from the upstream is capped at the queue limit).
fn answer(hub: &Hub, session: &Session, action: &str, response: &ActionResponse) {
    hub.metrics
        .onebot_action(action_label(action), response.retcode());
    hub.deliver_unbounded(session, Message::Text(response.to_json().into()));
}

/// Actions as the metric labels them: Vigil's own by name, the rest pooled,
/// so a client cannot grow the label set.
fn action_label(action: &str) -> &'static str {
    match action.strip_suffix("_async").unwrap_or(action) {
        "get_login_info" => "get_login_info",
        "get_status" => "get_status",
        "get_version_info" => "get_version_info",
        "can_send_image" => "can_send_image",
        "can_send_record" => "can_send_record",
        "(malformed)" => "malformed",
        _ => "other",
    }
}

/// Sends a heartbeat meta event to every `/` and `/event` session each
/// interval, until `stop` turns true. One timer for all sessions; each
/// session's first heartbeat comes within one interval of its lifecycle event.
pub async fn run_heartbeats(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let Some(profile) = hub.onebot.as_ref() else {
        return;
    };
    let interval_ms = profile.heartbeat_interval.as_millis() as u64;
    let mut interval = tokio::time::interval(profile.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate; lifecycle came first
    while crate::heartbeat::next_tick(&mut interval, &mut stop).await {
        let beat = protocol::heartbeat(
            profile.self_id,
            protocol::unix_seconds(),
            interval_ms,
            status(&hub),
        );
        hub.publish_onebot_meta(Message::Text(beat.into()));
    }
}

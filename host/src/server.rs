//! The HTTP side: `GET /ws` upgrades to a session; a JSON API publishes,
//! lists and removes sessions; `/metrics` and `/healthz` tell how it goes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::VigilConfig;
use crate::hub::{close_codes, Hub, Target};
use crate::policy::{FaultKind, PolicyEngine, PolicyHandle};
use crate::session::{self, Endpoint, Session};
use crate::tcp::{ConnInfo, VigilListener};

/// An API error: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    /// An error answer with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The routes, over a running hub.
pub fn router(hub: Arc<Hub>) -> Router {
    let protected = Router::new()
        .route("/ws", get(upgrade))
        .route("/publish", post(publish))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&hub),
            require_token,
        ));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .merge(protected);
    if hub.onebot.is_some() {
        app = app.merge(crate::onebot::routes(&hub));
    }
    app.with_state(hub)
}

/// The token from `Authorization: Bearer` or `?access_token=`.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_owned());
        }
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value)
}

/// 401 without a token, 403 with a wrong one; compared in constant time.
pub fn check_token(
    expected: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), AppError> {
    match presented_token(headers, query) {
        None => Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "missing access token",
        )),
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(AppError::new(StatusCode::FORBIDDEN, "wrong access token")),
    }
}

async fn require_token(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(expected) = &hub.config.server.access_token {
        check_token(expected, request.headers(), request.uri().query())?;
    }
    Ok(next.run(request).await)
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let identity = query
        .get("client_id")
        .cloned()
        .or_else(|| {
            headers
                .get("x-client-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|identity| !identity.is_empty());
    let class: Arc<str> = Arc::from(hub.config.sessions.default_class.as_str());
    accept_session(hub, conn, upgrade, identity, class, Endpoint::Plain, None).await
}

/// Accepts a WebSocket upgrade as a session of `class` on `endpoint`:
/// refuses during shutdown, makes room under the session limit, and queues
/// `greeting` (OneBot's lifecycle event) before anything can be published
/// to the session.
pub(crate) async fn accept_session(
    hub: Arc<Hub>,
    conn: ConnInfo,
    upgrade: WebSocketUpgrade,
    identity: Option<String>,
    class: Arc<str>,
    endpoint: Endpoint,
    greeting: Option<Message>,
) -> Result<Response, AppError> {
    if hub.is_shutting_down() {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        ));
    }
    make_room(&hub).await?;
    let server = &hub.config.server;
    let upgrade = upgrade
        .read_buffer_size(server.read_buffer_bytes)
        .write_buffer_size(server.write_buffer_bytes)
        .max_message_size(server.max_message_bytes)
        .max_frame_size(server.max_message_bytes);
    let first_ping = Duration::from_millis(hub.config.tiers.fast.ping_interval_ms);
    let hub_for_session = Arc::clone(&hub);
    Ok(upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            let hub = hub_for_session;
            let session = Arc::new(Session::new(
                hub.registry.next_id(),
                conn.peer,
                identity,
                class,
                endpoint,
                first_ping,
            ));
            if let Some(greeting) = greeting {
                hub.deliver(&session, greeting);
            }
            hub.admit(Arc::clone(&session));
            if hub.is_shutting_down() {
                // Upgraded after shutdown took its list of sessions to close.
                hub.evict(session.id, "shutdown", close_codes::SHUTDOWN);
            }
            session::start(hub, session, socket, conn.fd);
        }))
}

/// At the session limit, asks the policy whom to drop; 503 if it cannot say.
async fn make_room(hub: &Arc<Hub>) -> Result<(), AppError> {
    let Some(max) = hub.config.sessions.max_sessions else {
        return Ok(());
    };
    let active = hub.registry.len();
    if active < max {
        return Ok(());
    }
    let excess = (active + 1 - max) as u32;
    let (now_ms, facts) = hub.facts_snapshot();
    let chosen = hub
        .policy
        .select_evictions(now_ms, facts, excess)
        .await
        .ok()
        .flatten()
        .filter(|chosen| chosen.len() >= excess as usize);
    match chosen {
        Some(chosen) => {
            for id in chosen {
                hub.evict(id, "capacity", close_codes::CAPACITY);
            }
            Ok(())
        }
        None => {
            hub.metrics.capacity_refusals.inc();
            Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("session limit of {max} reached and the policy chose no session to drop"),
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
struct PublishRequest {
    to: Value,
    data: Value,
}

fn parse_target(to: Value) -> Result<Target, AppError> {
    let bad = || {
        AppError::new(
            StatusCode::BAD_REQUEST,
            r#"`to` must be "all", a list of session ids, {"identity": "..."} or {"class": "..."}"#,
        )
    };
    match to {
        Value::String(all) if all == "all" => Ok(Target::All),
        Value::Array(ids) => ids
            .into_iter()
            .map(|id| id.as_u64().ok_or_else(bad))
            .collect::<Result<_, _>>()
            .map(Target::Ids),
        Value::Object(object) => match (object.get("identity"), object.get("class")) {
            (Some(Value::String(identity)), None) => Ok(Target::Identity(identity.clone())),
            (None, Some(Value::String(class))) => Ok(Target::Class(class.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

async fn publish(
    State(hub): State<Arc<Hub>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    let request: PublishRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid publish request: {e}"),
        )
    })?;
    let target = parse_target(request.to)?;
    let mut data = request.data;
    if let Some(profile) = &hub.onebot {
        // A OneBot event (an object with `post_type`) from a backend that
        // left out `time` or `self_id` gets them, as clients require both.
        crate::onebot::protocol::complete_event(
            &mut data,
            profile.self_id(),
            crate::onebot::protocol::unix_seconds(),
        );
    }
    // Strings go out as they are; anything else as its JSON text.
    let text = match data {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let report = hub.publish(&target, Message::Text(text.into()));
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after: Option<u64>,
    class: Option<String>,
    tier: Option<String>,
}

fn session_json(session: &Session) -> Value {
    let snapshot = session.snapshot();
    json!({
        "id": session.id,
        "peer": session.peer.to_string(),
        "identity": session.identity,
        "class": &*session.class,
        "connected_at": session.connected_unix_ms,
        "tier": snapshot.tier.as_str(),
        "health": snapshot.health,
        "rtt_ms": snapshot.rtt_ms,
        "queued_bytes": snapshot.queued_bytes,
        "last_seen_ms": snapshot.last_seen_ms,
        "tcp": snapshot.tcp.map(|tcp| json!({
            "rtt_us": tcp.rtt_us,
            "rttvar_us": tcp.rttvar_us,
            "total_retransmits": tcp.total_retransmits,
            "unacked": tcp.unacked,
            "last_data_recv_ms": tcp.last_data_recv_ms,
        })),
    })
}

async fn list_sessions(State(hub): State<Arc<Hub>>, Query(query): Query<ListQuery>) -> Json<Value> {
    let mut sessions: Vec<Arc<Session>> = hub
        .registry
        .snapshot()
        .into_iter()
        .filter(|s| {
            query
                .class
                .as_deref()
                .is_none_or(|class| &*s.class == class)
        })
        .filter(|s| {
            query
                .tier
                .as_deref()
                .is_none_or(|tier| s.snapshot().tier.as_str() == tier)
        })
        .collect();
    let count = sessions.len();
    sessions.sort_unstable_by_key(|s| s.id);
    let after = query.after.unwrap_or(0);
    let page: Vec<Value> = sessions
        .iter()
        .filter(|s| s.id > after)
        .take(query.limit.unwrap_or(1_000))
        .map(|s| session_json(s))
        .collect();
    Json(json!({ "count": count, "sessions": page }))
}

async fn get_session(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AppError> {
    let session = hub
        .registry
        .get(id)
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, format!("no session {id}")))?;
    Ok(Json(session_json(&session)))
}

async fn delete_session(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AppError> {
    if hub.evict(id, "admin", close_codes::NORMAL) {
        Ok(Json(json!({ "evicted": id })))
    } else {
        Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no session {id}"),
        ))
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics.render(&hub.policy),
    )
}

async fn healthz(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let policy = &hub.policy;
    let stats = policy.stats();
    let faults: serde_json::Map<String, Value> = FaultKind::ALL
        .iter()
        .map(|kind| (kind.as_str().to_owned(), json!(stats.faults(*kind))))
        .collect();
    Json(json!({
        "status": if hub.is_shutting_down() { "shutting-down" } else { "ok" },
        "sessions": hub.registry.len(),
        "policy": {
            "name": &*policy.info().name,
            "sha256": policy.info().sha256,
            "state": stats.state().as_str(),
            "calls": stats.calls(),
            "fallback_batches": stats.fallback_batches(),
            "faults": faults,
        }
    }))
}

/// A running server: its address and how to stop it.
pub struct RunningServer {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// Where the admin API listens, when it is served.
    pub admin_address: Option<std::net::SocketAddr>,
    /// The hub, for tests and embedding.
    pub hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<(u64, usize)>>,
    policy_watch: Option<crate::watch::PolicyWatch>,
}

impl RunningServer {
    /// Shuts down gracefully (1001 to every session, drain) and returns
    /// (clean closes, sessions at shutdown).
    pub async fn shutdown(mut self) -> anyhow::Result<(u64, usize)> {
        self.policy_watch = None;
        let _ = self.stop.send(true);
        self.task.await.context("server task failed")?
    }
}

/// Starts serving on `listener`: the HTTP server, the shared tick, and the
/// admin API on its own listener when an admin token is configured.
pub async fn start(
    listener: TcpListener,
    config: VigilConfig,
    engine: PolicyEngine,
    policy: PolicyHandle,
) -> anyhow::Result<RunningServer> {
    let address = listener.local_addr().context("reading the bound address")?;
    let onebot = crate::onebot::OneBotProfile::from_config(
        &config.onebot,
        config.server.access_token.as_deref(),
        config.sessions.queue_max_bytes,
    )?;
    let hub = Hub::new(config, engine, policy, onebot);
    let (stop, stopped) = watch::channel(false);
    let admin_address = match &hub.config.admin.token {
        Some(_) => {
            // The admin API gets a runtime (and OS thread) of its own: under
            // heavy session traffic a swap must not wait in the same run queue
            // as thousands of session tasks.
            let admin_listener = std::net::TcpListener::bind(hub.config.admin.listen)
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the admin API",
                        hub.config.admin.listen
                    )
                })?;
            admin_listener
                .set_nonblocking(true)
                .context("configuring the admin listener")?;
            let admin_address = admin_listener
                .local_addr()
                .context("reading the admin address")?;
            let app = crate::admin::router(Arc::clone(&hub));
            let mut admin_stopped = stopped.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the admin runtime")?;
            std::thread::Builder::new()
                .name("vigil-admin".to_owned())
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match TcpListener::from_std(admin_listener) {
                            Ok(listener) => listener,
                            Err(error) => {
                                tracing::error!(%error, "cannot serve the admin API");
                                return;
                            }
                        };
                        let served = axum::serve(listener, app)
                            .with_graceful_shutdown(async move {
                                let _ = admin_stopped.wait_for(|stop| *stop).await;
                            })
                            .await;
                        if let Err(error) = served {
                            tracing::error!(%error, "admin API stopped");
                        }
                    });
                })
                .context("starting the admin thread")?;
            Some(admin_address)
        }
        None => {
            tracing::info!("no admin token configured: the admin API is not served");
            None
        }
    };
    let tick = tokio::spawn(crate::heartbeat::run(Arc::clone(&hub), stopped.clone()));
    let onebot_heartbeats = tokio::spawn(crate::onebot::run_heartbeats(
        Arc::clone(&hub),
        stopped.clone(),
    ));
    let app = router(Arc::clone(&hub)).into_make_service_with_connect_info::<ConnInfo>();
    let listener = VigilListener::new(listener, hub.config.tcp.clone());
    let task_hub = Arc::clone(&hub);
    let task = tokio::spawn(async move {
        let mut http_stopped = stopped.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = http_stopped.wait_for(|stop| *stop).await;
        });
        let mut shutdown_requested = stopped;
        let closing = async {
            let _ = shutdown_requested.wait_for(|stop| *stop).await;
            let (clean, total) = task_hub.shutdown().await;
            tracing::info!(
                closed_cleanly = clean,
                sessions = total,
                "sessions closed for shutdown"
            );
            (clean, total)
        };
        let (served, closed) = tokio::join!(server, closing);
        served.context("serving HTTP")?;
        let _ = tick.await;
        let _ = onebot_heartbeats.await;
        Ok(closed)
    });
    let policy_watch = match (&hub.config.policy.path, hub.config.policy.watch) {
        (Some(path), true) => {
            let config_json = hub.config.policy.plugin_config_json()?;
            Some(crate::watch::watch(Arc::clone(&hub), path, config_json)?)
        }
        (None, true) => anyhow::bail!("--watch needs a policy file (--policy FILE.wasm)"),
        _ => None,
    };
    Ok(RunningServer {
        address,
        admin_address,
        policy_watch,
        hub,
        stop,
        task,
    })
}

/// Serves until `signal` completes, then shuts down gracefully.
pub async fn run(
    listener: TcpListener,
    config: VigilConfig,
    engine: PolicyEngine,
    policy: PolicyHandle,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = start(listener, config, engine, policy).await?;
    tracing::info!(address = %server.address, "vigil listening");
    if let Some(admin) = server.admin_address {
        tracing::info!(address = %admin, "admin API listening");
    }
    signal.await;
    tracing::info!("shutting down");
    server.shutdown().await?;
    tracing::info!("vigil stopped");
    Ok(())
}

/// Binds the configured address and serves until SIGTERM or Ctrl-C.
pub async fn run_until_signal(
    config: VigilConfig,
    engine: PolicyEngine,
    policy: PolicyHandle,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    run(listener, config, engine, policy, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

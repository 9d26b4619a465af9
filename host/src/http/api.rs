//! The public API: `GET /ws` upgrades to a session; a JSON API publishes,
//! lists and removes sessions; `/metrics` and `/healthz` tell how it goes.
//! Profiles' routes are merged beside these.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vigil_policy_runtime::FaultKind;

use crate::core::tcp::ConnInfo;
use crate::core::{close_codes, EndpointSpec, SessionHost, SessionQuery, Target};
use crate::http::auth::{require_token, TokenCheck};
use crate::http::error::AppError;
use crate::profile::Profile;

/// What the public routes share.
#[derive(Clone)]
struct ApiState {
    host: SessionHost,
    profiles: Arc<[Arc<dyn Profile>]>,
}

/// The public routes over a running host, with each profile's merged in.
pub fn router(host: SessionHost, profiles: &[Arc<dyn Profile>]) -> Router {
    let token = TokenCheck::header_or_query(host.config().server.access_token.as_deref());
    let state = ApiState {
        host: host.clone(),
        profiles: profiles.iter().cloned().collect(),
    };
    let protected = Router::new()
        .route("/ws", get(upgrade))
        .route("/publish", post(publish))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(token, require_token));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .with_state(state);
    for profile in profiles {
        app = app.merge(profile.routes(&host));
    }
    app
}

async fn upgrade(
    State(state): State<ApiState>,
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
    let class = state.host.config().sessions.default_class.as_str();
    let spec = EndpointSpec::plain(class, identity);
    Ok(state.host.accept(conn, upgrade, spec).await?)
}

#[derive(Debug, Deserialize)]
struct PublishRequest {
    to: Value,
    data: Value,
}

fn parse_target(to: Value) -> Result<Target, AppError> {
    let bad = || {
        AppError::bad_request(
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
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    let request: PublishRequest = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request(format!("invalid publish request: {e}")))?;
    let target = parse_target(request.to)?;
    let mut data = request.data;
    for profile in state.profiles.iter() {
        profile.on_publish(&mut data);
    }
    // Strings go out as they are; anything else as its JSON text.
    let text = match data {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let report = state.host.publish(&target, Message::Text(text.into()));
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after: Option<u64>,
    class: Option<String>,
    tier: Option<String>,
}

async fn list_sessions(
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> Json<Value> {
    let page = state.host.sessions(&SessionQuery {
        class: query.class,
        tier: query.tier,
        after: query.after,
        limit: query.limit,
    });
    Json(json!(page))
}

async fn get_session(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AppError> {
    let session = state
        .host
        .session(id)
        .ok_or_else(|| AppError::not_found(format!("no session {id}")))?;
    Ok(Json(json!(session)))
}

async fn delete_session(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, AppError> {
    if state.host.evict(id, "admin", close_codes::NORMAL) {
        Ok(Json(json!({ "evicted": id })))
    } else {
        Err(AppError::not_found(format!("no session {id}")))
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.host.metrics_text(),
    )
}

async fn healthz(State(state): State<ApiState>) -> Json<Value> {
    let policy = state.host.policy();
    let stats = policy.stats();
    let faults: serde_json::Map<String, Value> = FaultKind::ALL
        .iter()
        .map(|kind| (kind.as_str().to_owned(), json!(stats.faults(*kind))))
        .collect();
    let info = policy.info();
    Json(json!({
        "status": if state.host.is_shutting_down() { "shutting-down" } else { "ok" },
        "sessions": state.host.session_count(),
        "policy": {
            "name": &*info.name,
            "sha256": info.sha256,
            "state": policy.state().as_str(),
            "calls": stats.calls(),
            "fallback_batches": stats.fallback_batches(),
            "faults": faults,
        }
    }))
}

//! The admin API, on its own listener and behind its own token: replace the
//! running policy without a restart, roll back, or try a candidate in shadow
//! first.
//!
//! - `PUT /admin/policy` (body: the `.wasm`; `?config=` JSON, `?name=`):
//!   validate, then swap.
//! - `GET /admin/policy`: active, previous, shadow.
//! - `POST /admin/policy/rollback`: back to the previous policy.
//! - `PUT` / `DELETE /admin/policy/shadow`: start or stop a shadow candidate.
//! - `GET /admin/policy/shadow/report`: disagreements, with samples.
//! - `POST /admin/policy/shadow/promote`: make the shadow active.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::hub::Hub;
use crate::policy::{ChangeError, PluginSource, RejectedCandidate, Shadow, Supervisor};
use crate::server::{check_token, AppError};

/// Largest plugin accepted over the API.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// The admin routes over a running hub.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/admin/policy", put(swap).get(overview))
        .route("/admin/policy/rollback", post(rollback))
        .route(
            "/admin/policy/shadow",
            put(start_shadow).delete(stop_shadow),
        )
        .route("/admin/policy/shadow/report", get(shadow_report))
        .route("/admin/policy/shadow/promote", post(promote))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&hub),
            require_admin_token,
        ))
        .with_state(hub)
}

async fn require_admin_token(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let Some(expected) = &hub.config.admin.token else {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "the admin API has no token configured",
        ));
    };
    // Only the header: a token in a URL ends up in logs.
    check_token(expected, request.headers(), None)?;
    Ok(next.run(request).await)
}

fn gone(error: impl std::fmt::Display) -> AppError {
    AppError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// The uploaded plugin and its config, checked for shape.
fn upload(
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<(PluginSource, String), AppError> {
    if body.is_empty() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be the plugin's .wasm bytes",
        ));
    }
    let config_json = query
        .get("config")
        .cloned()
        .unwrap_or_else(|| "{}".to_owned());
    if serde_json::from_str::<Value>(&config_json).is_err() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "`config` must be JSON",
        ));
    }
    let name = query
        .get("name")
        .cloned()
        .unwrap_or_else(|| "uploaded.wasm".to_owned());
    Ok((
        PluginSource::from_bytes(&name, "admin-api", body.to_vec()),
        config_json,
    ))
}

fn rejected(error: RejectedCandidate) -> AppError {
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
}

async fn swap(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let (source, config_json) = match upload(&query, body) {
        Ok(upload) => upload,
        Err(error) => {
            hub.metrics.swap(false);
            return Err(error);
        }
    };
    let report = hub
        .swap_policy(source, config_json)
        .await
        .map_err(rejected)?;
    Ok(Json(json!({
        "name": report.plugin.name,
        "sha256": report.plugin.sha256,
        "load_ms": report.load_time.as_secs_f64() * 1e3,
        "swap_ms": report.swap_time.as_secs_f64() * 1e3,
        "dry_run_sessions": report.dry_run_sessions,
    })))
}

async fn overview(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, AppError> {
    let overview = hub.policy.overview().await.map_err(gone)?;
    Ok(Json(json!(overview)))
}

fn change_error(error: ChangeError) -> AppError {
    match error {
        ChangeError::NoPrevious | ChangeError::NoShadow => {
            AppError::new(StatusCode::CONFLICT, error.to_string())
        }
        ChangeError::Gone(_) => gone(error),
    }
}

async fn rollback(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let report = hub.policy.rollback().await.map_err(change_error)?;
    hub.reassess_all();
    hub.metrics.swap(true);
    hub.metrics
        .swap_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(plugin = %report.name, "policy rolled back");
    Ok(Json(json!(report)))
}

async fn start_shadow(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let (source, config_json) = upload(&query, body)?;
    let validated = hub
        .validate_candidate(source, config_json)
        .await
        .map_err(rejected)?;
    let name = validated.sandbox.name().to_string();
    let sha256 = validated.sandbox.sha256().to_owned();
    let supervisor = Supervisor::new(validated.sandbox, hub.config.policy.faults.clone());
    let shadow = Shadow::new(supervisor, hub.config.admin.shadow_health_threshold);
    hub.policy.set_shadow(Some(shadow)).await.map_err(gone)?;
    tracing::info!(plugin = %name, "shadow policy started");
    Ok(Json(json!({ "name": name, "sha256": sha256 })))
}

async fn stop_shadow(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, AppError> {
    hub.policy.set_shadow(None).await.map_err(gone)?;
    Ok(Json(json!({ "shadow": null })))
}

async fn shadow_report(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, AppError> {
    match hub.policy.shadow_report().await.map_err(gone)? {
        Some(report) => Ok(Json(report)),
        None => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "no shadow policy is running",
        )),
    }
}

async fn promote(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, AppError> {
    let started = Instant::now();
    let report = hub.policy.promote().await.map_err(change_error)?;
    hub.reassess_all();
    hub.metrics.swap(true);
    hub.metrics
        .swap_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(plugin = %report.name, "shadow policy promoted");
    Ok(Json(json!(report)))
}

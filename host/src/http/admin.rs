//! The admin API, on its own listener and behind its own token: replace the
//! running policy without a restart, roll back, or try a candidate in shadow
//! first.
//!
//! - `PUT /admin/policy` (body: the `.wasm`; `?config=` JSON, `?name=`,
//!   `?limits=` JSON: this plugin's own `[policy.limits]`, over the
//!   configured ones): validate, then swap.
//! - `GET /admin/policy`: active, previous, shadow.
//! - `POST /admin/policy/rollback`: back to the previous policy.
//! - `PUT` / `DELETE /admin/policy/shadow`: start or stop a shadow candidate.
//! - `GET /admin/policy/shadow/report`: disagreements, with samples.
//! - `POST /admin/policy/shadow/promote`: make the shadow active.
//! - `POST /admin/policy/recording` (`?max_seconds=`, `?max_bytes=`):
//!   record the active policy's calls; `GET` its state, `DELETE` to stop.
//! - `GET /admin/policy/recording/trace`: the finished trace
//!   (gzip-compressed JSON lines), for `vigil policy replay`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use vigil_policy_runtime::recorder::RecordingCaps;
use vigil_policy_runtime::{ChangeError, PluginSource, RejectedCandidate, SandboxLimits};

use crate::core::SessionHost;
use crate::http::auth::{require_token, TokenCheck};
use crate::http::error::AppError;

/// Largest plugin accepted over the API.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// The admin routes over a running host, behind `token` (header only: a
/// token in a URL ends up in logs).
pub fn router(host: SessionHost, token: &str) -> Router {
    Router::new()
        .route("/admin/policy", put(swap).get(overview))
        .route("/admin/policy/rollback", post(rollback))
        .route(
            "/admin/policy/shadow",
            put(start_shadow).delete(stop_shadow),
        )
        .route("/admin/policy/shadow/report", get(shadow_report))
        .route("/admin/policy/shadow/promote", post(promote))
        .route(
            "/admin/policy/recording",
            post(start_recording)
                .get(recording_status)
                .delete(stop_recording),
        )
        .route("/admin/policy/recording/trace", get(recorded_trace))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))
        .route_layer(middleware::from_fn_with_state(
            TokenCheck::header_only(token),
            require_token,
        ))
        .with_state(host)
}

/// An uploaded candidate: the plugin, its config, and its own limits.
struct Upload {
    source: PluginSource,
    config_json: String,
    limits: Option<SandboxLimits>,
}

/// The uploaded plugin, its config and its limits, checked for shape.
fn upload(
    configured: &SandboxLimits,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Upload, AppError> {
    if body.is_empty() {
        return Err(AppError::bad_request(
            "the request body must be the plugin's .wasm bytes",
        ));
    }
    let config_json = query
        .get("config")
        .cloned()
        .unwrap_or_else(|| "{}".to_owned());
    if serde_json::from_str::<Value>(&config_json).is_err() {
        return Err(AppError::bad_request("`config` must be JSON"));
    }
    let name = query
        .get("name")
        .cloned()
        .unwrap_or_else(|| "uploaded.wasm".to_owned());
    let limits = match query.get("limits") {
        Some(overrides) => Some(
            configured
                .with_overrides(overrides)
                .map_err(AppError::bad_request)?,
        ),
        None => None,
    };
    Ok(Upload {
        source: PluginSource::from_bytes(&name, "admin-api", body.to_vec()),
        config_json,
        limits,
    })
}

fn rejected(error: RejectedCandidate) -> AppError {
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
}

fn change_error(error: ChangeError) -> AppError {
    match error {
        ChangeError::NoPrevious | ChangeError::NoShadow => {
            AppError::new(StatusCode::CONFLICT, error.to_string())
        }
        ChangeError::Gone(_) => AppError::internal(error),
    }
}

async fn swap(
    State(host): State<SessionHost>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let candidate = match upload(&host.config().policy.limits, &query, body) {
        Ok(upload) => upload,
        Err(error) => {
            host.swap_rejected(&"malformed upload");
            return Err(error);
        }
    };
    let report = host
        .swap_policy(candidate.source, candidate.config_json, candidate.limits)
        .await
        .map_err(rejected)?;
    Ok(Json(json!({
        "name": report.plugin.name,
        "sha256": report.plugin.sha256,
        "contract": report.plugin.contract,
        "load_ms": report.load_time.as_secs_f64() * 1e3,
        "swap_ms": report.swap_time.as_secs_f64() * 1e3,
        "dry_run_sessions": report.dry_run_sessions,
        "limits": report.plugin.limits,
        "sessions_per_call": report.plugin.sessions_per_call,
        "cost_us_per_session": report.plugin.cost_us_per_session,
    })))
}

async fn overview(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    let overview = host.policy().overview().await.map_err(AppError::internal)?;
    Ok(Json(json!(overview)))
}

async fn rollback(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    let report = host.rollback_policy().await.map_err(change_error)?;
    Ok(Json(json!(report)))
}

async fn start_shadow(
    State(host): State<SessionHost>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let candidate = upload(&host.config().policy.limits, &query, body)?;
    let (name, sha256) = host
        .start_shadow(candidate.source, candidate.config_json, candidate.limits)
        .await
        .map_err(rejected)?;
    Ok(Json(json!({ "name": name, "sha256": sha256 })))
}

async fn stop_shadow(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    host.policy()
        .set_shadow(None)
        .await
        .map_err(AppError::internal)?;
    Ok(Json(json!({ "shadow": null })))
}

async fn shadow_report(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    match host
        .policy()
        .shadow_report()
        .await
        .map_err(AppError::internal)?
    {
        Some(report) => Ok(Json(report)),
        None => Err(AppError::not_found("no shadow policy is running")),
    }
}

async fn promote(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    let report = host.promote_shadow().await.map_err(change_error)?;
    Ok(Json(json!(report)))
}

/// Recording caps from `?max_seconds=` and `?max_bytes=`, over the defaults.
fn recording_caps(query: &HashMap<String, String>) -> Result<RecordingCaps, AppError> {
    let mut caps = RecordingCaps::default();
    let number = |name: &str| -> Result<Option<u64>, AppError> {
        query
            .get(name)
            .map(|value| {
                value
                    .parse::<u64>()
                    .map_err(|_| AppError::bad_request(format!("`{name}` must be a whole number")))
            })
            .transpose()
    };
    if let Some(seconds) = number("max_seconds")? {
        caps.max_duration = std::time::Duration::from_secs(seconds);
    }
    if let Some(bytes) = number("max_bytes")? {
        caps.max_bytes = bytes;
    }
    Ok(caps)
}

async fn start_recording(
    State(host): State<SessionHost>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AppError> {
    let caps = recording_caps(&query)?;
    Ok(Json(host.start_recording(caps).await?))
}

async fn recording_status(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    Ok(Json(host.recording_status().await?))
}

async fn stop_recording(State(host): State<SessionHost>) -> Result<Json<Value>, AppError> {
    Ok(Json(host.stop_recording().await?))
}

async fn recorded_trace(State(host): State<SessionHost>) -> Result<impl IntoResponse, AppError> {
    let trace = host.recorded_trace().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"vigil-trace.jsonl.gz\"",
            ),
        ],
        trace,
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_upload_is_taken_or_refused_with_a_reason(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            config in proptest::option::of(".{0,64}"),
            name in proptest::option::of(".{0,32}"),
            limits in proptest::option::of(prop_oneof![
                ".{0,48}".boxed(),
                Just(r#"{"call_deadline_ms": 50}"#.to_owned()).boxed(),
                Just(r#"{"call_deadline_ms": 0}"#.to_owned()).boxed(),
            ]),
        ) {
            let mut query = HashMap::new();
            if let Some(config) = &config {
                query.insert("config".to_owned(), config.clone());
            }
            if let Some(name) = &name {
                query.insert("name".to_owned(), name.clone());
            }
            if let Some(limits) = &limits {
                query.insert("limits".to_owned(), limits.clone());
            }
            let limits_ok = limits
                .as_deref()
                .is_none_or(|limits| SandboxLimits::default().with_overrides(limits).is_ok());
            let config_is_json = config
                .as_deref()
                .is_none_or(|config| serde_json::from_str::<Value>(config).is_ok());
            let taken = upload(&SandboxLimits::default(), &query, Bytes::from(body.clone())).is_ok();
            prop_assert_eq!(taken, !body.is_empty() && config_is_json && limits_ok);
        }
    }
}

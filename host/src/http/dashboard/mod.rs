//! The operator dashboard, on the admin listener only: a page at `/` and
//! `/dashboard` (HTML, script and style embedded in the binary; it loads
//! nothing from anywhere else), and the data it reads, behind the admin
//! token like the rest of the admin API:
//!
//! - `GET /admin/dashboard/stream`: server-sent events — the last hour's
//!   samples, then one frame a second (see [`live`]).
//! - `GET /admin/dashboard/sessions?search=&tier=&class=&after=&limit=`: a
//!   page of the session table, filtered and paged on the server.
//! - `GET` / `DELETE /admin/sessions/{id}`: one session's full facts, or
//!   its eviction (reason `admin`).
//!
//! The page itself is public (it holds no data): its login form keeps the
//! token in the tab's session storage and sends it as a header, never in a
//! URL.

/// One sample a second of the last hour.
pub mod history;
/// The sampler, the frames, and each page's stream.
pub mod live;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::{close_codes, SessionQuery};
use crate::http::auth::{require_token, TokenCheck};
use crate::http::error::AppError;

pub use live::Dashboard;

/// Rows a session-table page holds at most.
pub const MAX_PAGE_ROWS: usize = 200;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only this origin's own script, style and connections; no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The page and its data routes over `dashboard`, the data behind `token`.
pub fn router(dashboard: Arc<Dashboard>, token: &str) -> Router {
    let data = Router::new()
        .route("/admin/dashboard/stream", get(stream))
        .route("/admin/dashboard/sessions", get(sessions))
        .route("/admin/sessions/{id}", get(session).delete(evict))
        .route_layer(middleware::from_fn_with_state(
            TokenCheck::header_only(token),
            require_token,
        ));
    Router::new()
        .route("/", get(page))
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .merge(data)
        .with_state(dashboard)
}

async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn stream(State(dashboard): State<Arc<Dashboard>>) -> impl IntoResponse {
    dashboard.stream()
}

#[derive(Debug, Deserialize)]
struct TableQuery {
    search: Option<String>,
    tier: Option<String>,
    class: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn sessions(
    State(dashboard): State<Arc<Dashboard>>,
    Query(query): Query<TableQuery>,
) -> Json<Value> {
    let page = dashboard.host().sessions(&SessionQuery {
        class: query.class.filter(|class| !class.is_empty()),
        tier: query.tier.filter(|tier| !tier.is_empty()),
        after: query.after,
        limit: Some(query.limit.unwrap_or(50).clamp(1, MAX_PAGE_ROWS)),
        search: query.search,
    });
    Json(json!(page))
}

fn session_id(id: &str) -> Result<u64, AppError> {
    id.parse()
        .map_err(|_| AppError::not_found(format!("no session {id}")))
}

async fn session(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let local = session_id(&id)?;
    dashboard
        .host()
        .session(local)
        .map(|view| Json(json!(view)))
        .ok_or_else(|| AppError::not_found(format!("no session {id}")))
}

async fn evict(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let local = session_id(&id)?;
    if dashboard.host().evict(local, "admin", close_codes::NORMAL) {
        Ok(Json(json!({ "evicted": local })))
    } else {
        Err(AppError::not_found(format!("no session {id}")))
    }
}

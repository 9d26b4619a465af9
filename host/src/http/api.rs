//! The public API: `GET /ws` upgrades to a session; a JSON API publishes,
//! lists and removes sessions; `/metrics` and `/healthz` tell how it goes.
//! Profiles' routes are merged beside these.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vigil_policy_runtime::FaultKind;

use crate::cluster::node::parse_cluster_id;
use crate::cluster::{ClusterNode, ClusterTarget};
use crate::core::tcp::ConnInfo;
use crate::core::{close_codes, AcceptError, EndpointSpec, SessionHost, SessionQuery, Target};
use crate::http::auth::{require_control, ClientAuth, ControlAccess};
use crate::http::error::AppError;
use crate::profile::Profile;

/// What the public routes share.
#[derive(Clone)]
struct ApiState {
    host: SessionHost,
    profiles: Arc<[Arc<dyn Profile>]>,
    clients: ClientAuth,
    cluster: Option<ClusterNode>,
}

/// The public routes over a running host, with each profile's merged in:
/// `/ws` for clients (their credential checked by `clients`), the control
/// routes behind `control`, `/healthz` open.
pub fn router(
    host: SessionHost,
    profiles: &[Arc<dyn Profile>],
    control: ControlAccess,
    clients: ClientAuth,
    cluster: Option<ClusterNode>,
) -> Router {
    let state = ApiState {
        host: host.clone(),
        profiles: profiles.iter().cloned().collect(),
        clients,
        cluster,
    };
    let control_routes = Router::new()
        .route("/publish", post(publish))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(control, require_control));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/ws", get(upgrade))
        .merge(control_routes)
        .with_state(state);
    for profile in profiles {
        app = app.merge(profile.routes(&host));
    }
    app
}

/// `GET /ws`: the client's credential is checked, and its identity
/// settled, before the upgrade.
async fn upgrade(
    State(state): State<ApiState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let claimed = query
        .get("client_id")
        .cloned()
        .or_else(|| {
            headers
                .get("x-client-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|identity| !identity.is_empty());
    // Credentials first: a client without one learns nothing, not even
    // whether its upgrade request was well formed.
    let client = state
        .clients
        .authenticate(&headers, raw_query.as_deref(), claimed)?;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let class = client
        .class
        .unwrap_or_else(|| state.host.config().sessions.default_class.clone());
    if let (Some(cluster), Some(identity), false) =
        (&state.cluster, &client.identity, client.proven)
    {
        if cluster.refuses_unproven(identity).await {
            return Err(AcceptError::IdentityTaken(identity.clone()).into());
        }
    }
    let mut spec = EndpointSpec::plain(class, client.identity);
    spec.identity_proven = client.proven;
    spec.expires_at = client.expires_at;
    Ok(state.host.accept(conn, upgrade, spec).await?)
}

#[derive(Debug, Deserialize)]
struct PublishRequest {
    to: Value,
    data: Value,
}

/// A publish target across the cluster: ids may be `"<node>:<n>"` or a
/// bare number (this node's).
fn parse_cluster_target(to: Value, this_node: &str) -> Result<ClusterTarget, AppError> {
    if let Value::Array(ids) = &to {
        return ids
            .iter()
            .map(|id| {
                let parsed = match id {
                    Value::String(text) => parse_cluster_id(text, this_node),
                    Value::Number(n) => n.as_u64().map(|n| (this_node, n)),
                    _ => None,
                };
                parsed
                    .map(|(node, id)| (node.to_owned(), id))
                    .ok_or_else(|| {
                        AppError::bad_request(
                            r#"ids must be "<node>:<n>" strings (or numbers, for this node's sessions)"#,
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(ClusterTarget::Ids);
    }
    Ok(match parse_target(to)? {
        Target::All => ClusterTarget::All,
        Target::Identity(identity) => ClusterTarget::Identity(identity),
        Target::Class(class) => ClusterTarget::Class(class),
        Target::Ids(ids) => ClusterTarget::Ids(
            ids.into_iter()
                .map(|id| (this_node.to_owned(), id))
                .collect(),
        ),
        // A profile's own target is never a publish body's.
        Target::Profile(_) | Target::ProfileGroup(..) => {
            return Err(AppError::bad_request("no such target"))
        }
    })
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
) -> Result<Response, AppError> {
    let request: PublishRequest = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request(format!("invalid publish request: {e}")))?;
    let to = request.to;
    let mut data = request.data;
    for profile in state.profiles.iter() {
        profile.on_publish(&mut data);
    }
    // Strings go out as they are; anything else as its JSON text.
    let text = match data {
        Value::String(text) => text,
        other => other.to_string(),
    };
    if let Some(cluster) = &state.cluster {
        let target = parse_cluster_target(to, cluster.node())?;
        let report = cluster.publish(&target, text).await;
        // Never a quiet 200: a node that could not be reached is named, and
        // the status says the delivery is partial.
        let status = if report.complete() {
            StatusCode::OK
        } else {
            StatusCode::BAD_GATEWAY
        };
        return Ok((status, Json(json!(report))).into_response());
    }
    let target = parse_target(to)?;
    let report = state.host.publish(&target, Message::Text(text.into()));
    Ok(Json(json!(report)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    /// The last id of the previous page: a number, or `<node>:<n>` in
    /// cluster mode.
    after: Option<String>,
    class: Option<String>,
    tier: Option<String>,
    /// Text that the id, identity, peer or class contains.
    search: Option<String>,
}

async fn list_sessions(
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    let mut session_query = SessionQuery {
        class: query.class,
        tier: query.tier,
        after: None,
        limit: query.limit,
        search: query.search,
    };
    if let Some(cluster) = &state.cluster {
        let page = cluster
            .sessions(&session_query, query.after.as_deref())
            .await;
        return Ok(Json(json!(page)));
    }
    session_query.after = query
        .after
        .map(|after| {
            after
                .parse()
                .map_err(|_| AppError::bad_request("`after` must be a session id"))
        })
        .transpose()?;
    Ok(Json(json!(state.host.sessions(&session_query))))
}

/// `<node>:<n>` (cluster mode) or `<n>`, as the node and the local id.
fn session_address(state: &ApiState, id: &str) -> Result<(String, u64), AppError> {
    let node = state.cluster.as_ref().map_or("", ClusterNode::node);
    match parse_cluster_id(id, node) {
        Some((owner, local)) if state.cluster.is_some() || owner == node => {
            Ok((owner.to_owned(), local))
        }
        _ => Err(AppError::not_found(format!("no session {id}"))),
    }
}

async fn get_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let (node, local) = session_address(&state, &id)?;
    let session = match &state.cluster {
        Some(cluster) => cluster
            .session(&node, local)
            .await
            .map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?,
        None => state.host.session(local).map(|view| json!(view)),
    };
    session
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no session {id}")))
}

async fn delete_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let (node, local) = session_address(&state, &id)?;
    let evicted = match &state.cluster {
        Some(cluster) => cluster
            .evict(&node, local, "admin")
            .await
            .map_err(|why| AppError::new(StatusCode::BAD_GATEWAY, why))?,
        None => state.host.evict(local, "admin", close_codes::NORMAL),
    };
    if evicted {
        let id: Value = if state.cluster.is_some() {
            json!(id)
        } else {
            json!(local)
        };
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
    let degraded = state
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.broker_up());
    let status = if state.host.is_shutting_down() {
        "shutting-down"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let cluster = state.cluster.as_ref().map(|cluster| {
        json!({
            "node": cluster.node(),
            "broker": if cluster.broker_up() { "up" } else { "down" },
            "nodes": cluster.nodes(),
        })
    });
    Json(json!({
        "status": status,
        "cluster": cluster,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A publish body as `POST /publish` parses it.
    fn parse_publish(body: &[u8]) -> Result<Target, AppError> {
        let request: PublishRequest = serde_json::from_slice(body)
            .map_err(|e| AppError::bad_request(format!("invalid publish request: {e}")))?;
        parse_target(request.to)
    }

    fn same_target(a: &Target, b: &Target) -> bool {
        match (a, b) {
            (Target::All, Target::All) => true,
            (Target::Ids(a), Target::Ids(b)) => a == b,
            (Target::Identity(a), Target::Identity(b)) | (Target::Class(a), Target::Class(b)) => {
                a == b
            }
            _ => false,
        }
    }

    fn target() -> impl Strategy<Value = (Value, Target)> {
        prop_oneof![
            Just((json!("all"), Target::All)),
            proptest::collection::vec(any::<u64>(), 0..20)
                .prop_map(|ids| (json!(ids), Target::Ids(ids))),
            ".{0,40}".prop_map(|id| (json!({"identity": id}), Target::Identity(id))),
            ".{0,40}".prop_map(|class| (json!({"class": class}), Target::Class(class))),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_as_a_publish_body_are_parsed_or_refused_never_a_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = parse_publish(&body);
        }

        #[test]
        fn every_valid_target_parses_to_itself((to, expected) in target(), data in ".{0,64}") {
            let body = json!({"to": to, "data": data}).to_string();
            let parsed = parse_publish(body.as_bytes());
            prop_assert!(parsed.as_ref().is_ok_and(|parsed| same_target(parsed, &expected)));
        }

        #[test]
        fn any_json_as_a_target_is_parsed_or_refused(to in any_json()) {
            let _ = parse_target(to);
        }

        #[test]
        fn any_session_list_query_is_parsed_or_refused(query in ".{0,200}") {
            let _ = serde_urlencoded::from_str::<ListQuery>(&query);
        }

        #[test]
        fn valid_session_list_queries_keep_their_values(
            limit in any::<usize>(), after in any::<u64>(), class in "[a-z]{1,12}",
        ) {
            let query = format!("limit={limit}&after={after}&class={class}&tier=fast");
            let parsed: ListQuery = serde_urlencoded::from_str(&query)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.limit, Some(limit));
            prop_assert_eq!(parsed.after, Some(after.to_string()));
            prop_assert_eq!(parsed.class, Some(class));
            prop_assert_eq!(parsed.tier.as_deref(), Some("fast"));
        }
    }

    /// Arbitrary JSON values, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,10}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }
}

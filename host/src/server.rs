//! The HTTP server. For now it serves the host's health and the policy's
//! state; the WebSocket session host is built on it.

use std::future::Future;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::VigilConfig;
use crate::policy::{FaultKind, PolicyHandle};

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The policy thread.
    pub policy: PolicyHandle,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let stats = state.policy.stats();
    let faults: serde_json::Map<String, Value> = FaultKind::ALL
        .iter()
        .map(|kind| (kind.as_str().to_owned(), json!(stats.faults(*kind))))
        .collect();
    Json(json!({
        "status": "ok",
        "policy": {
            "name": &*state.policy.info().name,
            "sha256": state.policy.info().sha256,
            "state": stats.state().as_str(),
            "calls": stats.calls(),
            "fallback_batches": stats.fallback_batches(),
            "faults": faults,
        }
    }))
}

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// Binds the configured address and serves until SIGTERM or Ctrl-C.
pub async fn run_until_signal(config: VigilConfig, policy: PolicyHandle) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, "vigil listening");
    run(listener, AppState { policy }, shutdown_signal()).await?;
    tracing::info!("vigil stopped");
    Ok(())
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

//! The profile seam: a feature that brings its own endpoints and behaviour
//! on top of the session host, written against [`SessionHost`] only. OneBot
//! v11 is one ([`crate::onebot`]); the core never names any.
//!
//! A profile is built from its config section before the host starts (so
//! its metrics join the host's registry), then, once the host runs, gives
//! its routes, may complete published events, and may run a background task
//! until shutdown. A profile that is not configured is not built: none of
//! its code runs.

use std::future::Future;
use std::pin::Pin;

use axum::Router;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::watch;

use crate::core::SessionHost;

/// A profile's background task, run until shutdown.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One profile: routes, endpoint descriptions, a publish hook, metrics and
/// an optional background task.
pub trait Profile: Send + Sync + 'static {
    /// Its name, for logs and `Target::Profile`.
    fn name(&self) -> &'static str;

    /// Adds its metrics to the host's registry (before the host starts).
    fn register_metrics(&self, _registry: &mut Registry) {}

    /// Its routes on the public listener, over the running host. They are
    /// merged beside the host's own; a route of the host's wins no conflict
    /// (axum panics on one at start-up, so a clash is found at once).
    fn routes(&self, host: &SessionHost) -> Router;

    /// Completes a message published with `POST /publish` before it goes
    /// out (OneBot fills in `time` and `self_id`).
    fn on_publish(&self, _data: &mut Value) {}

    /// A task to run beside the host until `stop` turns true.
    fn background(&self, _host: &SessionHost, _stop: watch::Receiver<bool>) -> Option<Background> {
        None
    }
}

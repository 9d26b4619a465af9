//! One bot account's link to the OneBot implementation that holds it
//! (Lagrange.OneBot, NapCat, go-cqhttp, …), whichever way it is reached:
//! its events fan out to that account's downstream sessions; the
//! downstream frameworks' actions go up to it, each under an `echo` of
//! Vigil's own, and come back under the framework's own `echo`, byte for
//! byte. Every frame from the implementation is untrusted: malformed ones,
//! another account's events and answers that match no action are dropped
//! and counted, and the link carries on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use vigil_policy_runtime::SessionId;

use super::config::UpstreamMode;
use super::protocol::{self, retcode, ActionRequest, ActionResponse};
use super::upstream::{self, Upstream, UpstreamAnswer as Answer};
use super::PROFILE;
use crate::core::{SessionHost, Target};

/// Checks that `text` is a `ws://` URL on a loopback address.
pub fn parse_loopback_ws_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if url.scheme() != "ws" {
        return Err(format!("must be ws://, not {}://", url.scheme()));
    }
    let mut as_http = url.clone();
    as_http
        .set_scheme("http")
        .map_err(|()| "cannot read its host".to_owned())?;
    upstream::parse_loopback_url(as_http.as_str())?;
    Ok(url)
}

/// Labels of the per-account metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The bot account.
    pub self_id: String,
}

/// Labels of `vigil_onebot_upstream_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `bad-signature`, `unknown-self-id`, `malformed`, `oversized`,
    /// `wrong-self-id`, `unmatched-echo`, `bad-token`.
    pub reason: String,
}

/// A histogram family with the action-time buckets.
type TimeFamily = Family<AccountLabels, Histogram, fn() -> Histogram>;

fn action_time_histogram() -> Histogram {
    Histogram::new([1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 30.0])
}

/// The gateway's metrics, shared by every account's link.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// 1 while the account's implementation is connected (or, over HTTP,
    /// answered its last probe).
    pub connected: Family<AccountLabels, Gauge>,
    /// Events from the implementation, fanned out.
    pub events: Family<AccountLabels, Counter>,
    /// Actions sent up to the implementation.
    pub actions: Family<AccountLabels, Counter>,
    /// Time from an action going up to its answer, seconds.
    pub action_seconds: TimeFamily,
    /// Frames and reports from implementations refused or dropped.
    pub refused: Family<RefusedLabels, Counter>,
}

impl GatewayMetrics {
    /// Empty families, the histogram with buckets for action round trips.
    pub fn new() -> Self {
        GatewayMetrics {
            connected: Family::default(),
            events: Family::default(),
            actions: Family::default(),
            action_seconds: Family::new_with_constructor(action_time_histogram),
            refused: Family::default(),
        }
    }

    /// Registers them beside the host's metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "vigil_onebot_upstream_connected",
            "1 while the account's OneBot implementation is connected",
            self.connected.clone(),
        );
        registry.register(
            "vigil_onebot_upstream_events",
            "Events from the account's OneBot implementation",
            self.events.clone(),
        );
        registry.register(
            "vigil_onebot_upstream_actions",
            "Actions sent up to the account's OneBot implementation",
            self.actions.clone(),
        );
        registry.register(
            "vigil_onebot_upstream_action_seconds",
            "Time from an action going up to its answer",
            self.action_seconds.clone(),
        );
        registry.register(
            "vigil_onebot_upstream_refused",
            "Frames and reports from OneBot implementations refused or dropped, by reason",
            self.refused.clone(),
        );
    }

    /// Counts one refused or dropped frame.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Where actions for a WebSocket-linked implementation are written.
#[derive(Debug, Clone)]
enum Outbound {
    /// Reverse WS: the implementation's session on the public listener.
    Session(SessionId),
    /// Forward WS: the socket task Vigil runs to the implementation.
    Socket(mpsc::Sender<String>),
}

/// What a frame from the implementation is.
#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    post_type: Option<String>,
    #[serde(default)]
    meta_event_type: Option<String>,
    #[serde(default)]
    self_id: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    echo: Option<Value>,
    #[serde(default)]
    retcode: Option<Value>,
}

/// The prefix of Vigil's own `echo` on actions it sends up.
const ECHO_PREFIX: &str = "vigil:";

/// One account's link to its implementation.
pub struct Link {
    /// The account.
    pub self_id: i64,
    /// How the implementation is reached.
    pub mode: UpstreamMode,
    /// `reverse-ws`: the token it must present; `forward-ws`, `http`: the
    /// one Vigil presents.
    pub access_token: Option<String>,
    /// `forward-ws`: its server; `http`: its API.
    pub url: Option<String>,
    /// `http`: the secret its reports are signed with.
    pub secret: Option<String>,
    /// The connection actions go up on (a reverse-WS `Universal` or `API`
    /// session, or the forward-WS socket); none while it is away. An
    /// `Event`-only connection carries no actions and is not kept.
    actions: Mutex<Option<Outbound>>,
    http: Option<Upstream>,
    http_online: AtomicBool,
    reported_good: AtomicBool,
    reported_online: AtomicBool,
    /// Actions waiting for their answers, by Vigil's echo number.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_echo: AtomicU64,
    timeout: Duration,
    metrics: GatewayMetrics,
    labels: AccountLabels,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("self_id", &self.self_id)
            .field("mode", &self.mode)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    /// A link for `[[onebot.upstreams]]` `config`, not yet connected.
    pub(crate) fn new(
        config: &super::config::UpstreamConfig,
        timeout: Duration,
        answer_limit: usize,
        metrics: GatewayMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let http = match (config.mode, &config.url) {
            (UpstreamMode::Http, Some(url)) => Some(
                Upstream::new(url, timeout, answer_limit)?
                    .with_access_token(config.access_token.clone()),
            ),
            _ => None,
        };
        let labels = AccountLabels {
            self_id: config.self_id.to_string(),
        };
        metrics.connected.get_or_create(&labels).set(0);
        Ok(Arc::new(Link {
            self_id: config.self_id,
            mode: config.mode,
            access_token: config.access_token.clone(),
            url: config.url.clone(),
            secret: config.secret.clone(),
            actions: Mutex::new(None),
            http,
            http_online: AtomicBool::new(false),
            reported_good: AtomicBool::new(true),
            reported_online: AtomicBool::new(true),
            pending: Mutex::new(HashMap::new()),
            next_echo: AtomicU64::new(1),
            timeout,
            metrics,
            labels,
        }))
    }

    /// The metrics this link counts in.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Whether the implementation is there: connected (WebSocket modes) or
    /// answering its HTTP API (HTTP mode).
    pub fn connected(&self) -> bool {
        match self.mode {
            UpstreamMode::Http => self.http_online.load(Ordering::Relaxed),
            // Without the connection actions go up on, the account cannot act.
            _ => self.lock_actions().is_some(),
        }
    }

    /// Whether the implementation's own last heartbeat (or status) said
    /// it was good.
    pub fn reported_good(&self) -> bool {
        self.reported_good.load(Ordering::Relaxed)
    }

    /// Whether the implementation's own last heartbeat (or status) said
    /// its account was online.
    pub fn reported_online(&self) -> bool {
        self.reported_online.load(Ordering::Relaxed)
    }

    fn record_status(&self, status: Option<&Value>) {
        let flag = |name: &str| {
            status
                .and_then(|status| status.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(true)
        };
        self.reported_good.store(flag("good"), Ordering::Relaxed);
        self.reported_online
            .store(flag("online"), Ordering::Relaxed);
    }

    fn lock_actions(&self) -> std::sync::MutexGuard<'_, Option<Outbound>> {
        self.actions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_gauge(&self) {
        let connected = self.connected();
        self.metrics
            .connected
            .get_or_create(&self.labels)
            .set(i64::from(connected));
    }

    /// A reverse-WS session of the implementation was admitted; `actions`
    /// when actions go up over it (`Universal`, `API`).
    pub(crate) fn attach_session(&self, host: &SessionHost, session: SessionId, actions: bool) {
        // Superseded already by a newer connection that opened first.
        if host.session(session).is_none() {
            return;
        }
        let replaced = actions
            && self
                .lock_actions()
                .replace(Outbound::Session(session))
                .is_some();
        // Actions written to the old connection will not be answered on
        // the new one: fail them now rather than at their timeout.
        if replaced {
            self.fail_pending();
        }
        tracing::info!(
            self_id = self.self_id,
            session_id = session,
            "OneBot implementation connected"
        );
        self.set_gauge();
    }

    /// A reverse-WS session of the implementation ended: if it was the
    /// current one, the actions waiting on it fail.
    pub(crate) fn detach_session(&self, session: SessionId) {
        let was_actions = {
            let mut actions = self.lock_actions();
            let was_actions = matches!(*actions, Some(Outbound::Session(id)) if id == session);
            if was_actions {
                *actions = None;
            }
            was_actions
        };
        if was_actions {
            self.fail_pending();
            tracing::warn!(
                self_id = self.self_id,
                session_id = session,
                "OneBot implementation went away"
            );
        }
        self.set_gauge();
    }

    /// The forward-WS socket task connected; actions go to `socket`.
    pub(crate) fn attach_socket(&self, socket: mpsc::Sender<String>) {
        *self.lock_actions() = Some(Outbound::Socket(socket));
        self.set_gauge();
    }

    /// The forward-WS socket closed.
    pub(crate) fn detach_socket(&self) {
        *self.lock_actions() = None;
        self.fail_pending();
        self.set_gauge();
    }

    /// HTTP mode: whether its API answered the last probe.
    pub(crate) fn set_http_online(&self, online: bool) {
        let was = self.http_online.swap(online, Ordering::Relaxed);
        if was != online {
            tracing::info!(
                self_id = self.self_id,
                online,
                "OneBot implementation's HTTP API"
            );
        }
        self.set_gauge();
    }

    /// HTTP mode: asks the implementation's API for `get_status`; online
    /// when it gives a OneBot answer, good as that answer says.
    pub(crate) async fn probe_http(&self) {
        let Some(http) = &self.http else {
            return;
        };
        let status = match http.try_call("get_status", &serde_json::Map::new()).await {
            Ok(answer) if answer.retcode == retcode::OK => Some(
                answer
                    .data
                    .and_then(|data| serde_json::from_str::<Value>(data.get()).ok())
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        if let Some(status) = &status {
            self.record_status(Some(status));
        }
        self.set_http_online(status.is_some());
    }

    /// Fails every waiting action: dropping their senders wakes each with
    /// "went away".
    fn fail_pending(&self) {
        let waiting =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        drop(waiting);
    }

    /// Sends `request` up and returns the answer for the framework: the
    /// implementation's, under the framework's own `echo`, or a `failed`
    /// one saying why (not connected, timed out, gone, too many waiting).
    pub async fn call(&self, host: &SessionHost, request: ActionRequest) -> ActionResponse {
        self.metrics.actions.get_or_create(&self.labels).inc();
        let started = Instant::now();
        let response = match &self.http {
            Some(http) => {
                http.call(&request.action, &request.params, request.echo)
                    .await
            }
            None => self.call_over_socket(host, request).await,
        };
        self.metrics
            .action_seconds
            .get_or_create(&self.labels)
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn call_over_socket(&self, host: &SessionHost, request: ActionRequest) -> ActionResponse {
        let ActionRequest {
            action,
            params,
            echo,
        } = request;
        let outbound = self.lock_actions().clone();
        let Some(outbound) = outbound else {
            return ActionResponse::failed(
                retcode::BAD_REQUEST,
                format!(
                    "the OneBot implementation of account {} is not connected",
                    self.self_id
                ),
                echo,
            );
        };
        let number = self.next_echo.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= upstream::MAX_IN_FLIGHT as usize {
                return ActionResponse::failed(
                    retcode::BAD_REQUEST,
                    format!(
                        "too many actions waiting for account {}'s implementation (at most {})",
                        self.self_id,
                        upstream::MAX_IN_FLIGHT
                    ),
                    echo,
                );
            }
            pending.insert(number, reply);
        }
        let frame = json!({
            "action": action,
            "params": params,
            "echo": format!("{ECHO_PREFIX}{number}"),
        })
        .to_string();
        let sent = match &outbound {
            Outbound::Socket(socket) => socket.try_send(frame).is_ok(),
            Outbound::Session(session) => {
                host.reply(*session, Message::Text(frame.into())).is_some()
            }
        };
        if !sent {
            self.forget(number);
            return ActionResponse::failed(
                retcode::BAD_REQUEST,
                format!("cannot write to account {}'s implementation", self.self_id),
                echo,
            );
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(answer)) => answer.into_response(echo),
            Ok(Err(_)) => ActionResponse::failed(
                retcode::BAD_REQUEST,
                format!(
                    "account {}'s implementation went away before answering `{action}`",
                    self.self_id
                ),
                echo,
            ),
            Err(_) => {
                self.forget(number);
                ActionResponse::failed(
                    retcode::BAD_REQUEST,
                    format!(
                        "account {}'s implementation did not answer `{action}` within {} ms",
                        self.self_id,
                        self.timeout.as_millis()
                    ),
                    echo,
                )
            }
        }
    }

    fn forget(&self, number: u64) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&number);
    }

    /// One frame from the implementation (a WebSocket message or an HTTP
    /// report): an event fans out, an answer goes to its action, anything
    /// else is dropped and counted.
    pub fn on_frame(&self, host: &SessionHost, frame: &[u8]) {
        let incoming: Incoming = match serde_json::from_slice(frame) {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::debug!(self_id = self.self_id, %error, "malformed frame from a OneBot implementation");
                self.metrics.refuse("malformed");
                return;
            }
        };
        if incoming.post_type.is_some() {
            self.on_event(host, frame, &incoming);
        } else if incoming.retcode.is_some() || incoming.echo.is_some() {
            self.on_answer(frame, incoming.echo.as_ref());
        } else {
            self.metrics.refuse("malformed");
        }
    }

    fn on_event(&self, host: &SessionHost, frame: &[u8], incoming: &Incoming) {
        match incoming.self_id.as_ref().map(id_of) {
            Some(Some(id)) if id == self.self_id => {}
            // An event must say whose it is; another account's is not
            // this link's to deliver.
            _ => {
                self.metrics.refuse("wrong-self-id");
                return;
            }
        }
        if incoming.post_type.as_deref() == Some("meta_event") {
            match incoming.meta_event_type.as_deref() {
                // Vigil tells its frameworks its own lifecycle and heartbeats.
                Some("heartbeat") => {
                    self.record_status(incoming.status.as_ref());
                    return;
                }
                Some("lifecycle") => return,
                _ => {}
            }
        }
        let Ok(text) = std::str::from_utf8(frame) else {
            self.metrics.refuse("malformed");
            return;
        };
        self.metrics.events.get_or_create(&self.labels).inc();
        host.publish(
            &Target::ProfileGroup(PROFILE, group_of(self.self_id)),
            Message::Text(text.to_owned().into()),
        );
    }

    fn on_answer(&self, frame: &[u8], echo: Option<&Value>) {
        let number = echo
            .and_then(Value::as_str)
            .and_then(|echo| echo.strip_prefix(ECHO_PREFIX))
            .and_then(|number| number.parse::<u64>().ok());
        let waiting = number.and_then(|number| {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&number)
        });
        let Some(waiting) = waiting else {
            self.metrics.refuse("unmatched-echo");
            return;
        };
        match serde_json::from_slice::<Answer>(frame) {
            Ok(answer) => {
                let _ = waiting.send(answer);
            }
            Err(_) => {
                self.metrics.refuse("malformed");
                let _ = waiting.send(Answer {
                    retcode: retcode::BAD_REQUEST,
                    data: None,
                    message: Some(
                        "the implementation's answer was not a OneBot response".to_owned(),
                    ),
                    wording: None,
                });
            }
        }
    }
}

/// An account id from JSON (a number, or a number in a string as some
/// implementations send it).
pub fn id_of(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

/// The session group of an account's downstream sessions.
pub fn group_of(self_id: i64) -> u64 {
    self_id as u64
}

/// The status a framework hears for one account: online while Vigil serves
/// and, with an implementation configured, while it is there; good while
/// also the policy plugin decides and the implementation says it is good.
pub fn account_status(host: &SessionHost, link: Option<&Link>) -> protocol::BotStatus {
    let host_status = super::status(host);
    match link {
        None => host_status,
        Some(link) => {
            let online = host_status.online && link.connected() && link.reported_online();
            protocol::BotStatus {
                online,
                good: online && host_status.good && link.reported_good(),
            }
        }
    }
}

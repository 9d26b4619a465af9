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
//!
//! As a gateway (`[[onebot.upstreams]]`), Vigil stands in front of the
//! OneBot implementations that hold the bot accounts: each account's
//! frameworks connect to `/{self_id}/` (`/event`, `/api`; the plain `/` is
//! the default account's), hear that account's events and only those, and
//! their actions go up to its implementation (see [`gateway`], [`link`]).

mod actions;
mod config;
pub mod gateway;
pub mod link;
pub mod protocol;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::watch;
use vigil_policy_runtime::PolicyState;

use crate::core::tcp::ConnInfo;
use crate::core::{Endpoint, EndpointSpec, SessionHost, Target};
use crate::http::auth::TokenCheck;
use crate::http::AppError;
use crate::profile::{Background, Profile};
use actions::ActionHandler;
pub use config::{OneBotConfig, UpstreamConfig, UpstreamMode};
use link::{GatewayMetrics, Link};
use protocol::BotStatus;
use upstream::Upstream;

/// The profile's name, and the `Target::Profile` of its sessions.
pub const PROFILE: &str = "onebot";

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

/// What the profile was configured with.
#[derive(Debug)]
pub(crate) struct Settings {
    self_id: i64,
    nickname: String,
    heartbeat_interval: Duration,
    ws_ping: bool,
    access_token: Option<String>,
    upstream: Option<Upstream>,
    /// Each gateway account's link to its implementation.
    links: Arc<HashMap<i64, Arc<Link>>>,
    /// Each gateway account's own framework token, where it has one.
    framework_tokens: HashMap<i64, String>,
    /// The largest frame or report taken from an implementation.
    max_upstream_bytes: usize,
}

/// The profile in force, built once from `[onebot]`.
pub struct OneBotProfile {
    settings: Arc<Settings>,
    /// Each account's action handler: the default one and the gateway's.
    accounts: Arc<HashMap<i64, Arc<ActionHandler>>>,
    answered: prometheus_client::metrics::family::Family<
        actions::ActionLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    gateway_metrics: GatewayMetrics,
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
        let gateway_metrics = GatewayMetrics::new();
        let timeout = Duration::from_millis(config.action_timeout_ms);
        let links = config
            .upstreams
            .iter()
            .map(|upstream| {
                Link::new(upstream, timeout, answer_limit, gateway_metrics.clone())
                    .map(|link| (upstream.self_id, link))
            })
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        let settings = Arc::new(Settings {
            self_id,
            nickname: config.nickname.clone(),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
            ws_ping: config.ws_ping,
            access_token: config
                .access_token
                .clone()
                .or_else(|| server_token.map(str::to_owned)),
            upstream,
            links: Arc::new(links),
            framework_tokens: config
                .upstreams
                .iter()
                .filter_map(|upstream| {
                    upstream
                        .framework_token
                        .clone()
                        .map(|token| (upstream.self_id, token))
                })
                .collect(),
            max_upstream_bytes: answer_limit,
        });
        let answered = prometheus_client::metrics::family::Family::default();
        let mut accounts: HashMap<i64, Arc<ActionHandler>> = HashMap::new();
        for account in std::iter::once(self_id).chain(settings.links.keys().copied()) {
            accounts.insert(
                account,
                Arc::new(ActionHandler {
                    settings: Arc::clone(&settings),
                    self_id: account,
                    link: settings.links.get(&account).cloned(),
                    in_flight: upstream::InFlightLimits::default(),
                    answered: answered.clone(),
                }),
            );
        }
        Ok(Some(OneBotProfile {
            settings,
            accounts: Arc::new(accounts),
            answered,
            gateway_metrics,
        }))
    }

    /// The bot account id every event carries.
    pub fn self_id(&self) -> i64 {
        self.settings.self_id
    }
}

/// What the endpoints' handlers share.
#[derive(Clone)]
struct EndpointState {
    host: SessionHost,
    settings: Arc<Settings>,
    accounts: Arc<HashMap<i64, Arc<ActionHandler>>>,
}

impl EndpointState {
    /// The token `account`'s frameworks must present: its own, or the
    /// profile's.
    fn token_check(&self, account: i64) -> TokenCheck {
        let token = self
            .settings
            .framework_tokens
            .get(&account)
            .map(String::as_str)
            .or(self.settings.access_token.as_deref());
        TokenCheck::header_or_query(token)
    }
}

impl Profile for OneBotProfile {
    fn name(&self) -> &'static str {
        PROFILE
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "vigil_onebot_actions",
            "OneBot action requests answered, by action and status",
            self.answered.clone(),
        );
        self.gateway_metrics.register(registry);
    }

    /// `/`, `/event` and `/api` (the default account), `/{self_id}/…` for
    /// each account, each with and without its trailing slash; the token is
    /// checked before the upgrade. Beside them, the routes implementations
    /// use (`/onebot/v11/…`), with their own credentials.
    fn routes(&self, host: &SessionHost) -> Router {
        let state = EndpointState {
            host: host.clone(),
            settings: Arc::clone(&self.settings),
            accounts: Arc::clone(&self.accounts),
        };
        let mut downstream = Router::new();
        for (paths, role) in [
            (["/", "/{self_id}", "/{self_id}/"], OneBotRole::Universal),
            (["/event", "/event/", "/{self_id}/event"], OneBotRole::Event),
            (["/api", "/api/", "/{self_id}/api"], OneBotRole::Api),
        ] {
            for path in paths {
                downstream = downstream.route(path, endpoint(role));
            }
        }
        let downstream = downstream
            .route("/{self_id}/event/", endpoint(OneBotRole::Event))
            .route("/{self_id}/api/", endpoint(OneBotRole::Api))
            .with_state(state);
        if self.settings.links.is_empty() {
            return downstream;
        }
        downstream.merge(gateway::routes(gateway::Gateway {
            host: host.clone(),
            links: Arc::clone(&self.settings.links),
            metrics: self.gateway_metrics.clone(),
            ws_ping: self.settings.ws_ping,
            max_report_bytes: self.settings.max_upstream_bytes,
        }))
    }

    /// A OneBot event (an object with `post_type`) from a backend that left
    /// out `time` or `self_id` gets them, as clients require both.
    fn on_publish(&self, data: &mut Value) {
        protocol::complete_event(data, self.settings.self_id, protocol::unix_seconds());
    }

    fn background(&self, host: &SessionHost, stop: watch::Receiver<bool>) -> Option<Background> {
        Some(Box::pin(run_background(
            host.clone(),
            Arc::clone(&self.settings),
            stop,
        )))
    }
}

/// The heartbeats, and each gateway link's own task (forward-WS
/// connections, HTTP probes), until `stop`.
async fn run_background(host: SessionHost, settings: Arc<Settings>, stop: watch::Receiver<bool>) {
    let links: Vec<tokio::task::JoinHandle<()>> = settings
        .links
        .values()
        .filter_map(|link| match link.mode {
            UpstreamMode::ForwardWs => Some(tokio::spawn(gateway::run_forward(
                host.clone(),
                Arc::clone(link),
                settings.heartbeat_interval,
                settings.max_upstream_bytes,
                stop.clone(),
            ))),
            UpstreamMode::Http => Some(tokio::spawn(gateway::run_http_probe(
                Arc::clone(link),
                settings.heartbeat_interval,
                stop.clone(),
            ))),
            UpstreamMode::ReverseWs => None,
        })
        .collect();
    run_heartbeats(host, Arc::clone(&settings), stop).await;
    for task in links {
        let _ = task.await;
    }
}

/// One endpoint's route: `role`, for the account its path names
/// (`/{self_id}/…`) or the default account (the plain paths).
fn endpoint(role: OneBotRole) -> axum::routing::MethodRouter<EndpointState> {
    get(
        move |State(state): State<EndpointState>,
              ConnectInfo(conn): ConnectInfo<ConnInfo>,
              path: Option<Path<String>>,
              headers: axum::http::HeaderMap,
              RawQuery(query): RawQuery,
              upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| async move {
            // The token before anything else: without it, not even which
            // accounts exist is told.
            let account = match path {
                Some(Path(self_id)) => account_of(&state, &self_id),
                None => Ok(state.settings.self_id),
            };
            let checked = account.as_ref().map_or(state.settings.self_id, |id| *id);
            state
                .token_check(checked)
                .check(&headers, query.as_deref())?;
            let account = account?;
            match upgrade {
                Ok(upgrade) => accept(state, conn, upgrade, role, account).await,
                Err(rejection) => Ok(rejection.into_response()),
            }
        },
    )
}

/// The account a `/{self_id}/…` path names, if it is one of the accounts.
fn account_of(state: &EndpointState, self_id: &str) -> Result<i64, AppError> {
    self_id
        .parse::<i64>()
        .ok()
        .filter(|id| state.accounts.contains_key(id))
        .ok_or_else(|| AppError::not_found(format!("no OneBot account {self_id} here")))
}

async fn accept(
    state: EndpointState,
    conn: ConnInfo,
    upgrade: WebSocketUpgrade,
    role: OneBotRole,
    account: i64,
) -> Result<Response, AppError> {
    let settings = &state.settings;
    let Some(actions) = state.accounts.get(&account) else {
        return Err(AppError::not_found(format!(
            "no OneBot account {account} here"
        )));
    };
    let greeting = role.receives_events().then(|| {
        Message::Text(protocol::lifecycle_connect(account, protocol::unix_seconds()).into())
    });
    let on_data = role
        .answers_actions()
        .then(|| Arc::clone(actions) as Arc<dyn crate::core::DataHandler>);
    let spec = EndpointSpec {
        class: Arc::from(CLIENT_CLASS),
        identity: None,
        identity_proven: false,
        expires_at: None,
        endpoint: Endpoint {
            receives_published: role.receives_events(),
            pinged: settings.ws_ping,
            profile: Some(PROFILE),
            group: link::group_of(account),
            operator_link: false,
        },
        greeting,
        on_data,
    };
    Ok(state.host.accept(conn, upgrade, spec).await?)
}

/// The host's state as OneBot clients see it: online while serving, good
/// while serving with the policy plugin deciding (not disabled for faults).
pub fn status(host: &SessionHost) -> BotStatus {
    let online = !host.is_shutting_down();
    let plugin_decides = host.policy().state() == PolicyState::Active;
    BotStatus {
        online,
        good: online && plugin_decides,
    }
}

/// Sends a heartbeat meta event to every `/` and `/event` session each
/// interval, until `stop` turns true: each account's sessions hear their
/// own account's, with its status. One timer for all sessions; each
/// session's first heartbeat comes within one interval of its lifecycle
/// event.
async fn run_heartbeats(
    host: SessionHost,
    settings: Arc<Settings>,
    mut stop: watch::Receiver<bool>,
) {
    let interval_ms = settings.heartbeat_interval.as_millis() as u64;
    let mut interval = tokio::time::interval(settings.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate; lifecycle came first
    let accounts: Vec<i64> = std::iter::once(settings.self_id)
        .chain(
            settings
                .links
                .keys()
                .copied()
                .filter(|id| *id != settings.self_id),
        )
        .collect();
    while crate::core::tick::next_tick(&mut interval, &mut stop).await {
        let now = protocol::unix_seconds();
        for account in &accounts {
            let link = settings.links.get(account).map(Arc::as_ref);
            let beat = protocol::heartbeat(
                *account,
                now,
                interval_ms,
                link::account_status(&host, link),
            );
            host.publish(
                &Target::ProfileGroup(PROFILE, link::group_of(*account)),
                Message::Text(beat.into()),
            );
        }
    }
}

//! [`SessionHost`]: the core's public API, a small cloneable handle. The
//! HTTP API, the admin API, profiles, start-up, the tests and the load tool
//! all go through it; the hub behind it is private to the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::watch;
use vigil_policy_runtime::{PolicyEngine, PolicyHandle, SessionId, TcpFacts, Tier};

use crate::core::census::Census;
use crate::core::close_codes;
use crate::core::config::HostConfig;
use crate::core::hub::{Hub, PublishReport, Target};
use crate::core::inbound::InboundBudget;
use crate::core::metrics::Metrics;
use crate::core::observer::SessionObserver;
use crate::core::registry::Refused;
use crate::core::removals::RecentRemovals;
use crate::core::session::queue::Enqueued;
use crate::core::session::{task, Admitted, Endpoint, Session};
use crate::core::tcp::ConnInfo;

/// What a profile does with a client's data frames (text or binary) on its
/// endpoint: a bot protocol's action requests, for example. Called on the session's
/// own task for every data frame, so it must return quickly; answers go
/// back with [`SessionHost::reply`].
pub trait DataHandler: Send + Sync + 'static {
    /// One data frame from `session`.
    fn on_data(&self, host: &SessionHost, session: SessionId, frame: &[u8]);

    /// `session` was admitted and its task is starting: before its first
    /// frame. A profile that must address the session learns its id here.
    fn on_open(&self, _host: &SessionHost, _session: SessionId) {}

    /// `session`'s task has ended (evicted, closed, failed): no frame comes
    /// after this.
    fn on_close(&self, _host: &SessionHost, _session: SessionId) {}
}

/// A data handler bound to one session: tells the handler when the
/// session's task ends, by being dropped with it.
struct BoundHandler {
    handler: Arc<dyn DataHandler>,
    host: SessionHost,
    session: SessionId,
}

impl Drop for BoundHandler {
    fn drop(&mut self) {
        self.handler.on_close(&self.host, self.session);
    }
}

/// How to accept one WebSocket upgrade as a session.
pub struct EndpointSpec {
    /// Client class, as policies see it.
    pub class: Arc<str>,
    /// The client's identity: a newer session with the same one supersedes
    /// (evicts) the older at once — unless the older proved it and the newer
    /// only claims it, which is refused.
    pub identity: Option<String>,
    /// Whether the identity was proven (a verified token).
    pub identity_proven: bool,
    /// When the session must be closed (`token-expired`, 4401): its
    /// credential's expiry.
    pub expires_at: Option<std::time::SystemTime>,
    /// Publishing, pinging and which profile's endpoint it is.
    pub endpoint: Endpoint,
    /// A first message queued before anything can be published to the
    /// session (a bot protocol's hello event).
    pub greeting: Option<Message>,
    /// What the client's data frames mean, beyond activity.
    pub on_data: Option<Arc<dyn DataHandler>>,
}

impl EndpointSpec {
    /// A `/ws`-style session of `class`: receives publishes, is pinged, has
    /// no greeting and no data handler.
    pub fn plain(class: impl Into<Arc<str>>, identity: Option<String>) -> Self {
        EndpointSpec {
            class: class.into(),
            identity,
            identity_proven: false,
            expires_at: None,
            endpoint: Endpoint::PLAIN,
            greeting: None,
            on_data: None,
        }
    }
}

/// Why an upgrade was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Shutdown has begun.
    #[error("shutting down")]
    ShuttingDown,
    /// At the session limit, and the policy chose no session to drop.
    #[error("session limit of {max} reached and the policy chose no session to drop")]
    AtCapacity {
        /// `sessions.max_sessions`.
        max: usize,
    },
    /// The identity is held by a session that proved it; this one only
    /// claims it.
    #[error("identity `{0}` is held by a session that proved it; present a token for it")]
    IdentityTaken(String),
}

/// One session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// Unique for the life of the process.
    pub id: SessionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's identity, if it gave one.
    pub identity: Option<String>,
    /// Client class.
    pub class: String,
    /// When it was accepted, Unix ms.
    pub connected_at: u64,
    /// Current tier.
    #[serde(serialize_with = "tier_name")]
    pub tier: Tier,
    /// Last health the policy gave.
    pub health: u8,
    /// Last ping/pong round trip, ms.
    pub rtt_ms: Option<u32>,
    /// Outbound bytes waiting.
    pub queued_bytes: usize,
    /// Time since the last inbound frame, ms.
    pub last_seen_ms: u64,
    /// Kernel TCP facts as of the last probe.
    #[serde(serialize_with = "tcp_facts")]
    pub tcp: Option<TcpFacts>,
}

fn tier_name<S: serde::Serializer>(tier: &Tier, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(tier.as_str())
}

fn tcp_facts<S: serde::Serializer>(
    tcp: &Option<TcpFacts>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    tcp.as_ref()
        .map(vigil_policy_runtime::json::tcp_json)
        .serialize(serializer)
}

impl SessionView {
    fn of(session: &Session, now: Instant) -> Self {
        let snapshot = session.lock().snapshot(now);
        SessionView {
            id: session.id,
            peer: session.peer,
            identity: session.identity.clone(),
            class: session.class.to_string(),
            connected_at: session.connected_unix_ms,
            tier: snapshot.tier,
            health: snapshot.health,
            rtt_ms: snapshot.rtt_ms,
            queued_bytes: snapshot.queued_bytes,
            last_seen_ms: snapshot.last_seen_ms,
            tcp: snapshot.tcp,
        }
    }
}

/// Which sessions to list: filters, then a page by id.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only this client class.
    pub class: Option<String>,
    /// Only this tier (`fast`, `regular`, `keep-alive`).
    pub tier: Option<String>,
    /// Ids above this one (the last id of the previous page).
    pub after: Option<SessionId>,
    /// At most this many (default 1 000).
    pub limit: Option<usize>,
    /// Only sessions whose id, identity, peer address or class contains
    /// this text (case-insensitive).
    pub search: Option<String>,
}

/// A page of sessions.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPage {
    /// Sessions matching the filters, on every page.
    pub count: usize,
    /// This page, by id.
    pub sessions: Vec<SessionView>,
}

/// The running session host. Cheap to clone; every clone is the same host.
#[derive(Clone)]
pub struct SessionHost {
    pub(crate) hub: Arc<Hub>,
}

impl SessionHost {
    /// A host around a running policy thread, with `metrics` (the profiles'
    /// own registered in it already). Nothing runs until [`Self::run_tick`].
    pub fn new(
        config: HostConfig,
        engine: PolicyEngine,
        policy: PolicyHandle,
        metrics: Metrics,
    ) -> Self {
        SessionHost {
            hub: Hub::new(config, engine, policy, metrics),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HostConfig {
        &self.hub.config
    }

    /// The policy thread: its stats, state and plugin.
    pub fn policy(&self) -> &PolicyHandle {
        &self.hub.policy
    }

    /// The wasm engine candidates are compiled with.
    pub fn engine(&self) -> &PolicyEngine {
        &self.hub.engine
    }

    /// Installs the observer a cluster hears of this node's sessions
    /// through, and starts ids above `id_base`; false if one was installed
    /// already.
    pub fn observe(&self, observer: Arc<dyn SessionObserver>, id_base: SessionId) -> bool {
        self.hub.registry.start_ids_above(id_base);
        self.hub.observer.set(observer).is_ok()
    }

    /// Every local session's id and identity, for re-registering them.
    pub fn identities(&self) -> Vec<(SessionId, String, bool)> {
        let mut found = Vec::new();
        self.hub.registry.for_each(|session| {
            if let Some(identity) = &session.identity {
                found.push((session.id, identity.clone(), session.identity_proven));
            }
        });
        found
    }

    /// The budget every connection's inbound meter draws on.
    pub fn inbound_budget(&self) -> &Arc<InboundBudget> {
        &self.hub.inbound
    }

    /// The host's metrics (counters a profile may move are its own).
    pub fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn metrics_text(&self) -> String {
        self.hub.metrics.render(&self.hub.policy)
    }

    /// Whether shutdown has begun (new sessions are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.hub.is_shutting_down()
    }

    /// Live sessions now.
    pub fn session_count(&self) -> usize {
        self.hub.registry.len()
    }

    /// Application frames received since start (pongs and pings not
    /// counted): the traffic side of the growth alarm, which cluster mode
    /// sums over nodes.
    pub fn app_frames(&self) -> u64 {
        self.hub.app_frames()
    }

    /// Session tasks still running (sessions not yet fully closed).
    pub fn live_tasks(&self) -> usize {
        self.hub.live_tasks()
    }

    /// Accepts a WebSocket upgrade as a session described by `spec`:
    /// refuses during shutdown, makes room under the session limit, and
    /// queues the greeting before anything can be published to the session.
    pub async fn accept(
        &self,
        conn: ConnInfo,
        upgrade: WebSocketUpgrade,
        spec: EndpointSpec,
    ) -> Result<Response, AcceptError> {
        if self.hub.is_shutting_down() {
            return Err(AcceptError::ShuttingDown);
        }
        if let Some(identity) = &spec.identity {
            if !spec.identity_proven && self.hub.registry.held_proven(identity) {
                return Err(AcceptError::IdentityTaken(identity.clone()));
            }
        }
        if !spec.endpoint.operator_link {
            self.make_room().await?;
        }
        let server = &self.hub.config.server;
        let upgrade = upgrade
            .read_buffer_size(server.read_buffer_bytes)
            .write_buffer_size(server.write_buffer_bytes)
            .max_message_size(server.max_message_bytes)
            .max_frame_size(server.max_message_bytes);
        let first_ping = self.hub.config.tiers.fast.ping_interval();
        let host = self.clone();
        Ok(upgrade
            .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
            .on_upgrade(move |socket| async move {
                let hub = Arc::clone(&host.hub);
                let admitted = Admitted {
                    peer: conn.peer,
                    identity: spec.identity,
                    identity_proven: spec.identity_proven,
                    proxied: conn.proxied,
                    class: hub.classes.share(spec.class),
                    endpoint: spec.endpoint,
                    expires_at: spec.expires_at,
                    meter: conn.meter.clone(),
                };
                let session = Arc::new(Session::new(hub.registry.next_id(), admitted, first_ping));
                if let Some(greeting) = spec.greeting {
                    hub.deliver(&session, greeting);
                }
                if let Err(refused) = hub.admit(Arc::clone(&session)) {
                    let (code, reason) = match refused {
                        // A proven holder came in between the check and now.
                        Refused::IdentityTaken => (
                            close_codes::POLICY_VIOLATION,
                            "identity held by a session that proved it",
                        ),
                        Refused::Full(_) => (close_codes::CAPACITY, "no room for more sessions"),
                    };
                    task::refuse(socket, code, reason).await;
                    return;
                }
                if hub.is_shutting_down() {
                    // Upgraded after shutdown took its list of sessions to close.
                    hub.evict(session.id, "shutdown", close_codes::SHUTDOWN);
                }
                let id = session.id;
                let on_data = spec.on_data.map(|handler| {
                    handler.on_open(&host, id);
                    let bound = BoundHandler {
                        handler,
                        host,
                        session: id,
                    };
                    Box::new(move |frame: &[u8]| {
                        bound.handler.on_data(&bound.host, bound.session, frame)
                    }) as task::InboundData
                });
                task::start(hub, session, socket, conn.fd, on_data);
            }))
    }

    /// At the session limit, asks the policy whom to drop.
    async fn make_room(&self) -> Result<(), AcceptError> {
        let hub = &self.hub;
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
            .map(|chosen| {
                chosen
                    .into_iter()
                    .filter(|id| {
                        hub.registry
                            .get(*id)
                            .is_some_and(|session| !session.endpoint.operator_link)
                    })
                    .collect::<Vec<_>>()
            })
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
                Err(AcceptError::AtCapacity { max })
            }
        }
    }

    /// Offers `message` to the targeted sessions' queues, within each
    /// queue's limits. Sessions whose endpoint takes no publishes are skipped.
    pub fn publish(&self, target: &Target, message: Message) -> PublishReport {
        self.hub.publish(target, message)
    }

    /// Queues an answer to a client's own request. Not subject to the
    /// queue's hard limit (the soft mark still counts): a client that asked
    /// must hear back even while published messages fill its queue. `None`
    /// when the session is gone.
    pub fn reply(&self, session: SessionId, message: Message) -> Option<Enqueued> {
        let session = self.hub.registry.get(session)?;
        Some(self.hub.deliver_unbounded(&session, message))
    }

    /// One session, as the API shows it.
    pub fn session(&self, id: SessionId) -> Option<SessionView> {
        let session = self.hub.registry.get(id)?;
        Some(SessionView::of(&session, Instant::now()))
    }

    /// A page of sessions matching `query`, by id.
    pub fn sessions(&self, query: &SessionQuery) -> SessionPage {
        let now = Instant::now();
        let mut matching: Vec<Arc<Session>> = Vec::new();
        let search = query
            .search
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(str::to_lowercase);
        self.hub.registry.for_each(|session| {
            if let Some(text) = &search {
                if !session_mentions(session, text) {
                    return;
                }
            }
            let class_matches = query
                .class
                .as_deref()
                .is_none_or(|class| &*session.class == class);
            let tier_matches = query
                .tier
                .as_deref()
                .is_none_or(|tier| session.lock().tier().as_str() == tier);
            if class_matches && tier_matches {
                matching.push(Arc::clone(session));
            }
        });
        let count = matching.len();
        matching.sort_unstable_by_key(|session| session.id);
        let after = query.after.unwrap_or(0);
        let sessions = matching
            .iter()
            .filter(|session| session.id > after)
            .take(query.limit.unwrap_or(1_000))
            .map(|session| SessionView::of(session, now))
            .collect();
        SessionPage { count, sessions }
    }

    /// Sessions per tier and class and the spread of health, counted now
    /// (one pass over the sessions).
    pub fn census(&self) -> Census {
        Census::of(&self.hub.registry)
    }

    /// The last removals, whole, and every removal's count by reason.
    pub fn removals(&self) -> &RecentRemovals {
        &self.hub.removals
    }

    /// Removes a session and closes it with `code` and `reason`; counted
    /// and logged. False if it was already gone.
    pub fn evict(&self, id: SessionId, reason: &str, code: u16) -> bool {
        self.hub.evict(id, reason, code)
    }

    /// Runs the shared tick (pings, pong deadlines, assessment, the growth
    /// alarm) until `stop` turns true.
    pub async fn run_tick(&self, stop: watch::Receiver<bool>) {
        crate::core::tick::run(Arc::clone(&self.hub), stop).await;
    }

    /// Graceful shutdown: refuses new sessions, closes every session with
    /// 1001 and waits up to the drain timeout for them. Returns (clean
    /// closes, sessions at shutdown).
    pub async fn shutdown(&self) -> (u64, usize) {
        self.hub.shutdown().await
    }
}

/// Whether `lowercase` (already lower-cased) occurs in the session's id,
/// identity, peer address or class.
fn session_mentions(session: &Session, lowercase: &str) -> bool {
    session.id.to_string().contains(lowercase)
        || session.peer.to_string().contains(lowercase)
        || session.class.to_lowercase().contains(lowercase)
        || session
            .identity
            .as_deref()
            .is_some_and(|identity| identity.to_lowercase().contains(lowercase))
}

//! One node of a cluster: its heartbeat and the liveness of the others, its
//! subscription (probed, so a subscription that stops delivering is
//! noticed), cross-node requests with their replies, and identities claimed
//! across nodes.
//!
//! Redis holds only what must be shared and can be rebuilt: each node's
//! heartbeat (a key that expires), and each identity's holder, claimed by
//! one script (so concurrent claims are ordered and the later one
//! supersedes the earlier, unless the earlier was proven by a token and the
//! later was not: then the later is refused, on every node, as it is on
//! one). Sessions themselves are listed by asking the live nodes, so a
//! dead node's sessions leave the listing as soon as its heartbeat does, and
//! nothing goes stale. When Redis comes back (emptied or not), every node
//! re-writes its heartbeat and identities within a second and resubscribes.
//!
//! Delivery across nodes is at most once: a publish made while Redis is
//! unreachable is not queued for later; the answer says who was not reached.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use vigil_policy_runtime::SessionId;

use crate::cluster::config::ClusterConfig;
use crate::cluster::wire::{Envelope, Reply, Request, WireTarget};
use crate::core::monitor::GrowthWindow;
use crate::core::observer::{OpenedSession, SessionObserver};
use crate::core::{close_codes, PublishReport, SessionHost, SessionQuery, Target};

/// Session changes waiting for Redis at most; past it the next
/// reconciliation (every second) re-writes what was missed.
const CHANGE_BUFFER: usize = 65_536;

/// A Redis command's bound: a frozen Redis must not hold up the node.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A probe not back within this means the subscription is not delivering.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// The cluster's metrics, registered with the host's.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    broker_up: Gauge,
    nodes: Gauge,
    cluster_sessions: Gauge,
    cluster_suspect_growth: Gauge,
    unreachable: Counter,
    resyncs: Counter,
}

impl ClusterMetrics {
    /// Registers them.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "vigil_cluster_broker_up",
            "1 while Redis answers and this node's subscription delivers",
            self.broker_up.clone(),
        );
        registry.register(
            "vigil_cluster_nodes",
            "Live nodes in the cluster, this one included",
            self.nodes.clone(),
        );
        registry.register(
            "vigil_cluster_sessions",
            "Sessions on all live nodes, from their heartbeats",
            self.cluster_sessions.clone(),
        );
        registry.register(
            "vigil_cluster_suspect_session_growth",
            "1 while the cluster's session count grew by [monitor] growth_threshold within a window with no application traffic on any node",
            self.cluster_suspect_growth.clone(),
        );
        registry.register(
            "vigil_cluster_unreachable",
            "Nodes that did not answer a cross-node request in time",
            self.unreachable.clone(),
        );
        registry.register(
            "vigil_cluster_resyncs",
            "Times this node re-wrote its heartbeat and identities after Redis came back",
            self.resyncs.clone(),
        );
    }
}

/// A change to tell Redis of.
enum Change {
    Opened(OpenedSession),
    Closed { id: SessionId, identity: String },
}

/// The state shared by the node's tasks and its API.
struct Shared {
    node: String,
    prefix: String,
    host: SessionHost,
    client: redis::Client,
    commands: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    request_timeout: Duration,
    node_ttl: Duration,
    next_request: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<(String, Reply)>>>,
    /// Other live nodes, as of the last heartbeat round.
    peers: Mutex<Vec<String>>,
    /// Every live node's session count (this one's included), as of the
    /// last heartbeat round.
    node_sessions: Mutex<Vec<(String, u64)>>,
    commands_ok: AtomicBool,
    last_probe_back: Mutex<Option<Instant>>,
    probe_seq: AtomicU64,
    /// Changes were lost (buffer full, Redis down): reconcile everything.
    resync: AtomicBool,
    /// The growth alarm over the whole cluster's counts.
    cluster_growth: Mutex<GrowthWindow>,
    metrics: ClusterMetrics,
}

/// This node's membership of the cluster.
#[derive(Clone)]
pub struct ClusterNode {
    shared: Arc<Shared>,
}

/// The observer the core tells of sessions.
struct Observer {
    changes: mpsc::Sender<Change>,
    shared: Arc<Shared>,
}

impl SessionObserver for Observer {
    fn opened(&self, session: &OpenedSession) {
        if session.identity.is_some()
            && self
                .changes
                .try_send(Change::Opened(session.clone()))
                .is_err()
        {
            self.shared.resync.store(true, Ordering::Relaxed);
        }
    }

    fn closed(&self, id: SessionId, identity: Option<&str>, _reason: &str) {
        if let Some(identity) = identity {
            let change = Change::Closed {
                id,
                identity: identity.to_owned(),
            };
            if self.changes.try_send(change).is_err() {
                self.shared.resync.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// What a cross-node publish reached.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPublish {
    /// The counts, all nodes together.
    #[serde(flatten)]
    pub report: PublishReport,
    /// Nodes that answered, this one included.
    pub nodes: usize,
    /// Nodes that should have answered and did not.
    pub unreachable: Vec<String>,
    /// Why other nodes could not be asked at all (Redis unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ClusterPublish {
    /// Whether every node that should have been reached was.
    pub fn complete(&self) -> bool {
        self.error.is_none() && self.unreachable.is_empty()
    }
}

/// A cluster-wide session id, `<node>:<n>`.
pub fn cluster_id(node: &str, id: SessionId) -> String {
    format!("{node}:{id}")
}

/// Splits a cluster-wide id; a bare number is this node's.
pub fn parse_cluster_id<'a>(text: &'a str, this_node: &'a str) -> Option<(&'a str, SessionId)> {
    match text.rsplit_once(':') {
        Some((node, id)) => Some((node, id.parse().ok()?)),
        None => Some((this_node, text.parse().ok()?)),
    }
}

impl ClusterNode {
    /// Joins the cluster `config` names, as the node `host` runs. Works with
    /// Redis down: the node serves its own sessions and joins once Redis
    /// answers.
    pub fn start(
        config: &ClusterConfig,
        host: SessionHost,
        metrics: ClusterMetrics,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("[cluster] redis_url is required"))?;
        let client = redis::Client::open(url)
            .map_err(|error| anyhow::anyhow!("[cluster] redis_url `{url}`: {error}"))?;
        let node = config.node_id.clone().unwrap_or_else(generated_node_id);
        let (changes, inbox) = mpsc::channel(CHANGE_BUFFER);
        let shared = Arc::new(Shared {
            node: node.clone(),
            prefix: config.key_prefix.clone(),
            host: host.clone(),
            client,
            commands: tokio::sync::Mutex::new(None),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            node_ttl: Duration::from_millis(config.node_ttl_ms),
            next_request: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            peers: Mutex::new(Vec::new()),
            node_sessions: Mutex::new(Vec::new()),
            commands_ok: AtomicBool::new(false),
            last_probe_back: Mutex::new(None),
            probe_seq: AtomicU64::new(0),
            resync: AtomicBool::new(true),
            cluster_growth: Mutex::new(GrowthWindow::new(
                Duration::from_millis(host.config().monitor.window_ms),
                host.config().monitor.growth_threshold,
                Instant::now(),
                host.session_count() as u64,
                host.app_frames(),
            )),
            metrics,
        });
        // Ids from this start on are above any of an earlier life of the
        // same node name: a late message naming an old session misses.
        let id_base = vigil_policy_runtime::clock::unix_ms_now() << 20;
        host.observe(
            Arc::new(Observer {
                changes,
                shared: Arc::clone(&shared),
            }),
            id_base,
        );
        tokio::spawn(subscribe_loop(Arc::clone(&shared), stop.clone()));
        tokio::spawn(heartbeat_loop(Arc::clone(&shared), stop.clone()));
        tokio::spawn(change_loop(Arc::clone(&shared), inbox, stop));
        tracing::info!(node = %node, prefix = %config.key_prefix, "cluster mode: joining over Redis");
        Ok(ClusterNode { shared })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Whether Redis answers and the subscription delivers.
    pub fn broker_up(&self) -> bool {
        self.shared.broker_up()
    }

    /// Whether an unproven claim to `identity` must be refused because a
    /// session on another live node proved it. With Redis unreachable the
    /// answer is no: the node's own rule still holds, and the claim script
    /// refuses the session once Redis answers.
    pub async fn refuses_unproven(&self, identity: &str) -> bool {
        self.shared
            .held_proven_elsewhere(identity)
            .await
            .unwrap_or(false)
    }

    /// Live nodes as of the last heartbeat round, this one included.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes = self.shared.peers();
        nodes.push(self.shared.node.clone());
        nodes.sort();
        nodes
    }

    /// Every live node with its session count, this one's as of now and
    /// the others' as of their last heartbeat.
    pub fn node_sessions(&self) -> Vec<(String, u64)> {
        let mut counts = self
            .shared
            .node_sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let local = self.shared.host.session_count() as u64;
        match counts
            .iter_mut()
            .find(|(node, _)| *node == self.shared.node)
        {
            Some((_, sessions)) => *sessions = local,
            None => {
                counts.push((self.shared.node.clone(), local));
                counts.sort();
            }
        }
        counts
    }

    /// Publishes to `target` on every node that holds matching sessions.
    pub async fn publish(&self, target: &ClusterTarget, data: String) -> ClusterPublish {
        let shared = &self.shared;
        let mut result = ClusterPublish {
            report: PublishReport::default(),
            nodes: 1,
            unreachable: Vec::new(),
            error: None,
        };
        let (local, remote): (Option<Target>, Vec<(Vec<String>, WireTarget)>) = match target {
            ClusterTarget::All => (Some(Target::All), vec![(shared.peers(), WireTarget::All)]),
            ClusterTarget::Class(class) => (
                Some(Target::Class(class.clone())),
                vec![(shared.peers(), WireTarget::Class(class.clone()))],
            ),
            ClusterTarget::Identity(identity) => match shared.identity_holder(identity).await {
                Ok(Some((node, _, _))) if node != shared.node => (
                    None,
                    vec![(vec![node], WireTarget::Identity(identity.clone()))],
                ),
                Ok(Some(_)) => (Some(Target::Identity(identity.clone())), Vec::new()),
                // Not registered (yet: Redis restarted and the holder has
                // not re-written it): ask every node rather than miss it.
                Ok(None) => (
                    Some(Target::Identity(identity.clone())),
                    vec![(shared.peers(), WireTarget::Identity(identity.clone()))],
                ),
                Err(error) => {
                    result.error = Some(error);
                    (Some(Target::Identity(identity.clone())), Vec::new())
                }
            },
            ClusterTarget::Ids(ids) => {
                let mut by_node: HashMap<String, Vec<u64>> = HashMap::new();
                for (node, id) in ids {
                    by_node.entry(node.clone()).or_default().push(*id);
                }
                let local = by_node.remove(&shared.node).map(Target::Ids);
                let remote = by_node
                    .into_iter()
                    .map(|(node, ids)| (vec![node], WireTarget::Ids(ids)))
                    .collect();
                (local, remote)
            }
        };
        if let Some(local) = local {
            result.report.add(
                &shared
                    .host
                    .publish(&local, Message::Text(data.clone().into())),
            );
        }
        for (nodes, wire) in remote {
            if nodes.is_empty() {
                continue;
            }
            let request = Request::Publish {
                target: wire,
                data: data.clone(),
            };
            match shared.ask(&nodes, request).await {
                Ok(answers) => {
                    for node in &nodes {
                        match answers.get(node) {
                            Some(Reply::Published { report }) => {
                                result.report.add(report);
                                result.nodes += 1;
                            }
                            _ => result.unreachable.push(node.clone()),
                        }
                    }
                }
                Err(error) => {
                    result.unreachable.extend(nodes);
                    result.error = Some(error);
                }
            }
        }
        result.unreachable.sort();
        result.unreachable.dedup();
        if !result.unreachable.is_empty() {
            shared
                .metrics
                .unreachable
                .inc_by(result.unreachable.len() as u64);
        }
        result
    }

    /// A page of sessions of every live node, ordered by node then id;
    /// `after` is the last cluster id of the previous page.
    pub async fn sessions(&self, query: &SessionQuery, after: Option<&str>) -> ClusterPage {
        let shared = &self.shared;
        let limit = query.limit.unwrap_or(1_000);
        let cursor = after.and_then(|after| parse_cluster_id(after, &shared.node));
        let mut nodes = shared.peers();
        nodes.push(shared.node.clone());
        nodes.sort();
        // Nodes before the cursor's have nothing left to give.
        let wanted: Vec<String> = nodes
            .into_iter()
            .filter(|node| cursor.is_none_or(|(cursor_node, _)| node.as_str() >= cursor_node))
            .collect();
        let after_id_on =
            |node: &str| cursor.and_then(|(cursor_node, id)| (cursor_node == node).then_some(id));
        let mut page = ClusterPage::default();
        let mut sessions: Vec<(String, u64, Value)> = Vec::new();
        let local_query = SessionQuery {
            after: after_id_on(&shared.node),
            limit: Some(limit),
            ..query.clone()
        };
        if wanted.contains(&shared.node) {
            let local = shared.host.sessions(&local_query);
            page.count += local.count;
            for view in local.sessions {
                sessions.push((
                    shared.node.clone(),
                    view.id,
                    shared.view_json(&shared.node, &json!(view)),
                ));
            }
        }
        let remote: Vec<String> = wanted
            .into_iter()
            .filter(|node| *node != shared.node)
            .collect();
        // One request per node: its own cursor differs.
        let asks = remote.iter().map(|node| {
            let request = Request::List {
                class: query.class.clone(),
                tier: query.tier.clone(),
                after_id: after_id_on(node),
                limit,
                search: query.search.clone(),
            };
            let node = node.clone();
            async move {
                (
                    node.clone(),
                    shared.ask(std::slice::from_ref(&node), request).await,
                )
            }
        });
        for (node, answer) in futures_util::future::join_all(asks).await {
            match answer.map(|mut answers| answers.remove(&node)) {
                Ok(Some(Reply::Listed {
                    count,
                    sessions: listed,
                })) => {
                    page.count += count;
                    page.nodes += 1;
                    for view in listed {
                        let id = view["local_id"].as_u64().unwrap_or_default();
                        sessions.push((node.clone(), id, view));
                    }
                }
                Ok(_) => page.unreachable.push(node),
                Err(error) => {
                    page.unreachable.push(node);
                    page.error = Some(error);
                }
            }
        }
        if !page.unreachable.is_empty() {
            shared
                .metrics
                .unreachable
                .inc_by(page.unreachable.len() as u64);
        }
        sessions.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        page.nodes += 1; // this node
        page.sessions = sessions
            .into_iter()
            .take(limit)
            .map(|(_, _, view)| view)
            .collect();
        page
    }

    /// One session, from whichever node holds it.
    pub async fn session(&self, node: &str, id: SessionId) -> Result<Option<Value>, String> {
        let shared = &self.shared;
        if node == shared.node {
            return Ok(shared
                .host
                .session(id)
                .map(|view| shared.view_json(&shared.node, &json!(view))));
        }
        match shared
            .ask(&[node.to_owned()], Request::Get { id })
            .await?
            .remove(node)
        {
            Some(Reply::Got { session }) => Ok(session),
            _ => Err(format!("node {node} did not answer")),
        }
    }

    /// Evicts a session on whichever node holds it.
    pub async fn evict(&self, node: &str, id: SessionId, reason: &str) -> Result<bool, String> {
        let shared = &self.shared;
        if node == shared.node {
            return Ok(shared.host.evict(id, reason, close_codes::NORMAL));
        }
        let request = Request::Evict {
            id,
            reason: reason.to_owned(),
            code: close_codes::NORMAL,
        };
        match shared.ask(&[node.to_owned()], request).await?.remove(node) {
            Some(Reply::Evicted { evicted }) => Ok(evicted),
            _ => Err(format!("node {node} did not answer")),
        }
    }
}

/// Whom a cluster publish is for.
#[derive(Debug, Clone)]
pub enum ClusterTarget {
    /// Every session on every node.
    All,
    /// These sessions, by node.
    Ids(Vec<(String, SessionId)>),
    /// The session of an identity, wherever it is.
    Identity(String),
    /// Every session of a class on every node.
    Class(String),
}

/// A cluster-wide page of sessions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterPage {
    /// Matching sessions on the nodes that answered.
    pub count: usize,
    /// The page.
    pub sessions: Vec<Value>,
    /// Nodes that answered, this one included.
    pub nodes: usize,
    /// Live nodes that did not answer in time.
    pub unreachable: Vec<String>,
    /// Why other nodes could not be asked (Redis unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn generated_node_id() -> String {
    let random = std::collections::hash_map::RandomState::new();
    let mixed = std::hash::BuildHasher::hash_one(&random, std::process::id());
    format!("node-{:08x}", mixed as u32)
}

impl Shared {
    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    fn node_channel(&self, node: &str) -> String {
        self.key(&["to", node])
    }

    fn peers(&self) -> Vec<String> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn broker_up(&self) -> bool {
        let probe_recent = self
            .last_probe_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < PROBE_DEADLINE);
        self.commands_ok.load(Ordering::Relaxed) && probe_recent
    }

    /// A session as the cluster API shows it: its cluster id, its node, and
    /// its node-local id.
    fn view_json(&self, node: &str, view: &Value) -> Value {
        let mut view = view.clone();
        let local = view["id"].as_u64().unwrap_or_default();
        view["id"] = json!(cluster_id(node, local));
        view["local_id"] = json!(local);
        view["node"] = json!(node);
        view
    }

    /// The command connection, connecting first when there is none. A
    /// multiplexed connection is shared by clones, so commands from the
    /// node's tasks run concurrently over one socket.
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut slot = self.commands.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connected = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Ok(Err(error)) => Err(self.failed(format!("cannot connect to Redis: {error}"))),
            Err(_) => Err(self.failed("cannot connect to Redis: timed out".to_owned())),
        }
    }

    /// Runs one Redis command within [`COMMAND_TIMEOUT`].
    async fn command<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, String> {
        let mut connection = self.connection().await?;
        let answer =
            tokio::time::timeout(COMMAND_TIMEOUT, command.query_async::<T>(&mut connection)).await;
        self.settle(answer).await
    }

    /// Runs a pipeline within [`COMMAND_TIMEOUT`].
    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: redis::Pipeline,
    ) -> Result<T, String> {
        let mut connection = self.connection().await?;
        let answer =
            tokio::time::timeout(COMMAND_TIMEOUT, pipeline.query_async::<T>(&mut connection)).await;
        self.settle(answer).await
    }

    /// Records what an answer says of Redis; a failure of the connection
    /// drops it, so the next command reconnects.
    async fn settle<T>(
        &self,
        answer: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        match answer {
            Ok(Ok(value)) => {
                self.commands_ok.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(error)) => {
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    *self.commands.lock().await = None;
                }
                Err(self.failed(format!("Redis: {error}")))
            }
            Err(_) => {
                *self.commands.lock().await = None;
                Err(self.failed("Redis did not answer in time".to_owned()))
            }
        }
    }

    fn failed(&self, why: String) -> String {
        if self.commands_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.node, %why, "cluster degraded: Redis unreachable; local sessions are still served");
        }
        self.resync.store(true, Ordering::Relaxed);
        why
    }

    async fn publish_envelope(&self, channel: &str, envelope: &Envelope) -> Result<(), String> {
        let text = serde_json::to_string(envelope).map_err(|error| error.to_string())?;
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(text);
        self.command::<i64>(command).await.map(|_| ())
    }

    /// Asks `nodes` and waits, within the request timeout, for their
    /// answers; those that do not answer are missing from the map.
    async fn ask(
        &self,
        nodes: &[String],
        request: Request,
    ) -> Result<HashMap<String, Reply>, String> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answers, mut inbox) = mpsc::channel(nodes.len().max(1));
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, answers);
        let envelope = Envelope::Request {
            id,
            from: self.node.clone(),
            request,
        };
        let mut sent = Ok(());
        if nodes.len() > 1 {
            sent = self.publish_envelope(&self.key(&["all"]), &envelope).await;
        } else if let Some(node) = nodes.first() {
            sent = self
                .publish_envelope(&self.node_channel(node), &envelope)
                .await;
        }
        let mut replies = HashMap::new();
        if sent.is_ok() {
            let wanted: HashSet<&String> = nodes.iter().collect();
            let deadline = tokio::time::Instant::now() + self.request_timeout;
            while replies.len() < wanted.len() {
                match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    Ok(Some((node, reply))) => {
                        if wanted.contains(&node) {
                            replies.insert(node, reply);
                        }
                    }
                    _ => break,
                }
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        sent.map(|()| replies)
    }

    /// The node and session holding `identity`, if a live node does.
    async fn identity_holder(
        &self,
        identity: &str,
    ) -> Result<Option<(String, SessionId, bool)>, String> {
        let mut command = redis::cmd("GET");
        command.arg(self.key(&["identity", identity]));
        let holder: Option<String> = self.command(command).await?;
        Ok(holder.and_then(|holder| parse_holder(&holder)))
    }

    /// Answers one request from another node.
    async fn answer(&self, id: u64, from: String, request: Request) {
        let host = &self.host;
        let reply = match request {
            Request::Publish { target, data } => {
                let target = match target {
                    WireTarget::All => Target::All,
                    WireTarget::Ids(ids) => Target::Ids(ids),
                    WireTarget::Identity(identity) => Target::Identity(identity),
                    WireTarget::Class(class) => Target::Class(class),
                };
                Reply::Published {
                    report: host.publish(&target, Message::Text(data.into())),
                }
            }
            Request::List {
                class,
                tier,
                after_id,
                limit,
                search,
            } => {
                let page = host.sessions(&SessionQuery {
                    class,
                    tier,
                    after: after_id,
                    limit: Some(limit),
                    search,
                });
                Reply::Listed {
                    count: page.count,
                    sessions: page
                        .sessions
                        .iter()
                        .map(|view| self.view_json(&self.node, &json!(view)))
                        .collect(),
                }
            }
            Request::Get { id } => Reply::Got {
                session: host
                    .session(id)
                    .map(|view| self.view_json(&self.node, &json!(view))),
            },
            Request::Evict { id, reason, code } => Reply::Evicted {
                evicted: host.evict(id, &reason, code),
            },
        };
        let envelope = Envelope::Reply {
            id,
            from: self.node.clone(),
            reply,
        };
        if let Err(error) = self
            .publish_envelope(&self.node_channel(&from), &envelope)
            .await
        {
            tracing::debug!(node = %self.node, to = %from, %error, "cannot answer a cluster request");
        }
    }

    /// Claims `identity` for local session `id`, in one script: an
    /// unproven claim to an identity a live node's session proved is
    /// refused (the new session is closed, as on one node); otherwise the
    /// claim wins and the earlier holder's node, if another live one, is
    /// told to let its session go. The message names the old session's id,
    /// never the identity, so a late one cannot evict the winner.
    async fn claim(&self, id: SessionId, identity: &str, proven: bool) -> Result<(), String> {
        let mut script = redis::cmd("EVAL");
        script
            .arg(CLAIM_SCRIPT)
            .arg(1)
            .arg(self.key(&["identity", identity]))
            .arg(holder_value(&self.node, id, proven))
            .arg(&self.node)
            .arg(self.key(&["node", ""]))
            .arg(if proven { "1" } else { "0" });
        let (outcome, earlier): (String, String) = self.command(script).await?;
        if outcome == "held" {
            if self
                .host
                .evict(id, "identity-held", close_codes::POLICY_VIOLATION)
            {
                tracing::warn!(node = %self.node, session_id = id, %identity, holder = %earlier, "unproven claim refused: a session on another node proved this identity");
            }
            return Ok(());
        }
        if let Some((node, old, _)) = parse_holder(&earlier) {
            if node != self.node && self.peers().contains(&node) {
                let envelope = Envelope::Supersede {
                    id: old,
                    by: self.node.clone(),
                };
                self.publish_envelope(&self.node_channel(&node), &envelope)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether `identity` is held, proven, by a session on another live
    /// node: an unproven claim to it is refused before the upgrade.
    async fn held_proven_elsewhere(&self, identity: &str) -> Result<bool, String> {
        Ok(self
            .identity_holder(identity)
            .await?
            .is_some_and(|(node, _, proven)| {
                proven && node != self.node && self.peers().contains(&node)
            }))
    }

    /// Lets go of `identity` if local session `id` still holds it.
    async fn release(&self, id: SessionId, identity: &str) -> Result<(), String> {
        let mut script = redis::cmd("EVAL");
        script
            .arg("local held = redis.call('GET', KEYS[1]) if held == ARGV[1] or held == ARGV[2] then return redis.call('DEL', KEYS[1]) else return 0 end")
            .arg(1)
            .arg(self.key(&["identity", identity]))
            .arg(holder_value(&self.node, id, false))
            .arg(holder_value(&self.node, id, true));
        self.command::<i64>(script).await.map(|_| ())
    }

    /// One heartbeat round: this node's key, the live peers with the
    /// cluster's counts, and, when needed, a re-write of every local
    /// identity.
    async fn heartbeat(&self) -> Result<(), String> {
        let local_sessions = self.host.session_count() as u64;
        let local_app_frames = self.host.app_frames();
        let record = json!({
            "node": self.node,
            "sessions": local_sessions,
            "app_frames": local_app_frames,
        })
        .to_string();
        let mut round = redis::pipe();
        round
            .cmd("SET")
            .arg(self.key(&["node", &self.node]))
            .arg(record)
            .arg("PX")
            .arg(self.node_ttl.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.key(&["nodes"]))
            .arg(&self.node)
            .ignore()
            .cmd("SMEMBERS")
            .arg(self.key(&["nodes"]));
        let (known,): (Vec<String>,) = self.pipeline(round).await?;
        let others: Vec<String> = known
            .into_iter()
            .filter(|node| *node != self.node)
            .collect();
        let mut records: Vec<Option<String>> = Vec::new();
        if !others.is_empty() {
            let mut get = redis::cmd("MGET");
            for node in &others {
                get.arg(self.key(&["node", node]));
            }
            records = self.command(get).await?;
        }
        let mut peers = Vec::new();
        let mut dead = Vec::new();
        let mut sessions = local_sessions;
        let mut app_frames = local_app_frames;
        let mut node_sessions = vec![(self.node.clone(), local_sessions)];
        for (node, record) in others.into_iter().zip(records) {
            match record {
                Some(record) => {
                    let record = serde_json::from_str::<Value>(&record).unwrap_or_default();
                    let its_sessions = record["sessions"].as_u64().unwrap_or(0);
                    sessions += its_sessions;
                    app_frames += record["app_frames"].as_u64().unwrap_or(0);
                    node_sessions.push((node.clone(), its_sessions));
                    peers.push(node);
                }
                // Dead: its heartbeat expired. Its identities are free to be
                // claimed (claims check liveness).
                None => dead.push(node),
            }
        }
        if !dead.is_empty() {
            let mut remove = redis::cmd("SREM");
            remove.arg(self.key(&["nodes"])).arg(&dead);
            self.command::<i64>(remove).await?;
            for node in &dead {
                tracing::info!(node = %self.node, dead = %node, "node declared dead: its sessions leave the cluster");
            }
        }
        peers.sort();
        self.metrics.nodes.set(peers.len() as i64 + 1);
        self.metrics.cluster_sessions.set(sessions as i64);
        self.check_cluster_growth(sessions, app_frames);
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers;
        node_sessions.sort();
        *self
            .node_sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = node_sessions;
        if self.resync.swap(false, Ordering::Relaxed) {
            if let Err(error) = self.reconcile().await {
                self.resync.store(true, Ordering::Relaxed);
                return Err(error);
            }
            self.metrics.resyncs.inc();
        }
        Ok(())
    }

    /// The growth alarm over the cluster's summed counts, with the node's
    /// `[monitor]` window and threshold.
    fn check_cluster_growth(&self, sessions: u64, app_frames: u64) {
        let verdict = self
            .cluster_growth
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(Instant::now(), sessions, app_frames);
        let Some(verdict) = verdict else { return };
        if verdict.suspect {
            tracing::warn!(
                node = %self.node,
                cluster_sessions = verdict.sessions,
                grown = verdict.grown,
                "the cluster's session count keeps growing while no node receives application traffic: dead sessions may be piling up"
            );
        }
        self.metrics
            .cluster_suspect_growth
            .set(i64::from(verdict.suspect));
    }

    /// Re-writes every local identity Redis does not know (it restarted, or
    /// changes were lost), and lets go of local sessions whose identity
    /// another live node holds now. Reads and writes go in batches, so
    /// 10 000 identities take a few round trips, not 20 000.
    async fn reconcile(&self) -> Result<(), String> {
        let peers = self.peers();
        let identities = self.host.identities();
        for batch in identities.chunks(RECONCILE_BATCH) {
            let mut get = redis::cmd("MGET");
            for (_, identity, _) in batch {
                get.arg(self.key(&["identity", identity]));
            }
            let holders: Vec<Option<String>> = self.command(get).await?;
            let mut writes = redis::pipe();
            let mut claims = Vec::new();
            for ((id, identity, proven), holder) in batch.iter().zip(holders) {
                match holder.as_deref().and_then(parse_holder) {
                    Some((node, held, _)) if node == self.node && held == *id => {}
                    Some((node, _, their_proof)) if node != self.node && peers.contains(&node) => {
                        if *proven && !their_proof {
                            claims.push((*id, identity.clone()));
                        } else {
                            self.host.evict(*id, "superseded", close_codes::NORMAL);
                        }
                    }
                    _ => {
                        writes
                            .cmd("SET")
                            .arg(self.key(&["identity", identity]))
                            .arg(holder_value(&self.node, *id, *proven))
                            .ignore();
                    }
                }
            }
            self.pipeline::<()>(writes).await?;
            for (id, identity) in claims {
                self.claim(id, &identity, true).await?;
            }
        }
        Ok(())
    }
}

/// Identities read and re-written per round trip when reconciling.
const RECONCILE_BATCH: usize = 1_000;

/// The claim, atomically: `{"held", holder}` when an unproven claim meets
/// a proven holder on another live node, else the claim is written and
/// `{"claimed", earlier holder or ""}`. KEYS[1] the identity; ARGV: the new
/// holder, this node, the node-key prefix, whether the claim is proven.
const CLAIM_SCRIPT: &str = r#"
local earlier = redis.call('GET', KEYS[1])
if earlier and ARGV[4] == '0' then
  local node, rest = string.match(earlier, '^(%S+) (.+)$')
  if node and node ~= ARGV[2] and string.find(rest, ' proven', 1, true)
     and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    return {'held', earlier}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return {'claimed', earlier or ''}
"#;

/// An identity's holder as Redis keeps it: `"<node> <id>"`, with
/// `" proven"` when a token proved it.
fn holder_value(node: &str, id: SessionId, proven: bool) -> String {
    if proven {
        format!("{node} {id} proven")
    } else {
        format!("{node} {id}")
    }
}

/// The node, the session and whether it was proven, from a holder.
fn parse_holder(holder: &str) -> Option<(String, SessionId, bool)> {
    let mut parts = holder.split(' ');
    let node = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    let proven = match parts.next() {
        None => false,
        Some("proven") => true,
        Some(_) => return None,
    };
    if node.is_empty() || parts.next().is_some() {
        return None;
    }
    Some((node.to_owned(), id, proven))
}

/// Heartbeats and probes every fifth of the node TTL, until `stop`.
async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = shared.node_ttl / 5;
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = false;
    while crate::core::tick::next_tick(&mut interval, &mut stop).await {
        if let Err(error) = shared.heartbeat().await {
            tracing::debug!(node = %shared.node, %error, "heartbeat failed");
        }
        let seq = shared.probe_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let probe = Envelope::Probe { seq };
        let _ = shared
            .publish_envelope(&shared.node_channel(&shared.node), &probe)
            .await;
        let up = shared.broker_up();
        shared.metrics.broker_up.set(i64::from(up));
        if up != was_up {
            if up {
                tracing::info!(node = %shared.node, "cluster broker up");
            } else {
                tracing::warn!(node = %shared.node, "cluster broker degraded: cross-node publish and listing report what they cannot reach");
            }
            was_up = up;
        }
    }
    // Leaving: the others drop this node at once rather than after its TTL.
    let mut delete = redis::cmd("DEL");
    delete.arg(shared.key(&["node", &shared.node]));
    let _ = shared.command::<i64>(delete).await;
}

/// Applies session changes to Redis in order.
async fn change_loop(
    shared: Arc<Shared>,
    mut inbox: mpsc::Receiver<Change>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            change = inbox.recv() => match change { Some(change) => change, None => break },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let applied = match &change {
            Change::Opened(session) => match &session.identity {
                Some(identity) => {
                    shared
                        .claim(session.id, identity, session.identity_proven)
                        .await
                }
                None => Ok(()),
            },
            Change::Closed { id, identity } => shared.release(*id, identity).await,
        };
        if applied.is_err() {
            // Reconciliation, once Redis answers, puts it right.
            shared.resync.store(true, Ordering::Relaxed);
        }
    }
}

/// Subscribes to this node's channel and the broadcast channel, answers
/// what comes in, and starts over whenever the subscription ends or stops
/// delivering its own probes.
async fn subscribe_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, shared.client.get_async_pubsub()).await {
            Ok(Ok(mut pubsub)) => {
                let subscribed = async {
                    pubsub.subscribe(shared.node_channel(&shared.node)).await?;
                    pubsub.subscribe(shared.key(&["all"])).await
                };
                if let Ok(Ok(())) = tokio::time::timeout(COMMAND_TIMEOUT, subscribed).await {
                    backoff = Duration::from_millis(100);
                    // Count from now: a probe must come back on this one.
                    *shared
                        .last_probe_back
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    shared.resync.store(true, Ordering::Relaxed);
                    tracing::info!(node = %shared.node, "subscribed to the cluster's channels");
                    let mut messages = pubsub.on_message();
                    let mut check = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Ok(text) = message.get_payload::<String>() else { continue };
                                handle(&shared, &text);
                            }
                            _ = check.tick() => {
                                let last = *shared.last_probe_back.lock().unwrap_or_else(PoisonError::into_inner);
                                if last.is_none_or(|at| at.elapsed() >= PROBE_DEADLINE) {
                                    tracing::warn!(node = %shared.node, "the subscription stopped delivering its probes; starting it over");
                                    break;
                                }
                            }
                            _ = stop.wait_for(|stop| *stop) => return,
                        }
                    }
                }
            }
            Ok(Err(error)) => tracing::debug!(node = %shared.node, %error, "cannot subscribe"),
            Err(_) => tracing::debug!(node = %shared.node, "subscribing timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One message from a channel.
fn handle(shared: &Arc<Shared>, text: &str) {
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        tracing::debug!(node = %shared.node, "a malformed cluster message was ignored");
        return;
    };
    match envelope {
        Envelope::Probe { .. } => {
            *shared
                .last_probe_back
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        Envelope::Request { id, from, request } => {
            if from == shared.node {
                return; // our own broadcast
            }
            let shared = Arc::clone(shared);
            tokio::spawn(async move { shared.answer(id, from, request).await });
        }
        Envelope::Reply { id, from, reply } => {
            let waiting = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned();
            if let Some(waiting) = waiting {
                let _ = waiting.try_send((from, reply));
            }
        }
        Envelope::Supersede { id, by } => {
            if shared.host.evict(id, "superseded", close_codes::NORMAL) {
                tracing::info!(node = %shared.node, session_id = id, by = %by, "session superseded by the same identity on another node");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_name_their_node() {
        assert_eq!(cluster_id("a", 7), "a:7");
        assert_eq!(parse_cluster_id("b:12", "a"), Some(("b", 12)));
        assert_eq!(parse_cluster_id("12", "a"), Some(("a", 12)));
        assert_eq!(parse_cluster_id("b:x", "a"), None);
        assert_eq!(
            parse_holder(&holder_value("node-1", 42, false)),
            Some(("node-1".to_owned(), 42, false))
        );
        assert_eq!(
            parse_holder(&holder_value("node-1", 42, true)),
            Some(("node-1".to_owned(), 42, true))
        );
        assert_eq!(parse_holder("garbage"), None);
        assert_eq!(parse_holder("node-1 42 forged"), None);
        assert_eq!(parse_holder("node-1 42 proven extra"), None);
    }
}

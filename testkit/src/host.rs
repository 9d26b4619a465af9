//! [`TestHost`]: a real Vigil host inside the test process, on a free
//! loopback port, started the way `vigil serve` starts one (config
//! validation, the plugin's start-up check), with test timings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use vigil::config::{TierTiming, TiersConfig, VigilConfig};
use vigil::core::observer::{OpenedSession, SessionObserver};
use vigil::core::{PublishReport, SessionQuery, SessionView, SwapReport, Target};
use vigil::policy::{PluginSource, PolicyEngine};
use vigil::sdk::SessionId;
use vigil::{RunningServer, SessionHost};

use crate::client::Client;
use crate::error::KitError;
use crate::frames;
use crate::metrics::Metrics;
use crate::wait::{bounded, within};

/// How long any one call of the kit waits by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Test timings: ping every second, pong timeout one second in every tier,
/// a 50 ms tick, short close grace and drain. A dead client is found in
/// about two seconds instead of a minute.
pub fn test_config() -> VigilConfig {
    let mut config = VigilConfig::default();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let timing = TierTiming {
        ping_interval_ms: 1_000,
        pong_timeout_ms: 1_000,
    };
    config.tiers = TiersConfig::uniform(timing);
    config.sessions.tick_ms = 50;
    config.sessions.close_grace_ms = 300;
    config.sessions.drain_timeout_ms = 2_000;
    config
}

/// One engine for every host a test process starts, so each plugin is
/// compiled once per process (and then found in the on-disk cache).
fn shared_engine(config: &VigilConfig) -> Result<PolicyEngine, KitError> {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let engine = config
        .policy
        .engine()
        .map_err(|error| KitError::Start(format!("{error:#}")))?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// What the host told the kit about its sessions.
#[derive(Default)]
struct SessionLog {
    by_peer: Mutex<HashMap<SocketAddr, SessionId>>,
    removed: Mutex<HashMap<SessionId, String>>,
    changed: Notify,
}

impl SessionObserver for SessionLog {
    fn opened(&self, session: &OpenedSession) {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.peer, session.id);
        self.changed.notify_waiters();
    }

    fn closed(&self, id: SessionId, _identity: Option<&str>, reason: &str) {
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reason.to_owned());
        self.changed.notify_waiters();
    }
}

impl SessionLog {
    fn session_of(&self, peer: SocketAddr) -> Option<SessionId> {
        self.by_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .copied()
    }

    fn removal_reason(&self, id: SessionId) -> Option<String> {
        self.removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// Describes a [`TestHost`] before it starts.
#[derive(Debug)]
pub struct TestHostBuilder {
    config: VigilConfig,
    plugin: Option<(Vec<u8>, String)>,
    timeout: Duration,
}

impl TestHostBuilder {
    /// The policy plugin (a `.wasm` component's bytes) and its
    /// configuration JSON. Default: the built-in default policy.
    pub fn plugin(mut self, wasm: &[u8], config_json: &str) -> Self {
        self.plugin = Some((wasm.to_vec(), config_json.to_owned()));
        self
    }

    /// Changes the configuration (which starts as [`test_config`]).
    pub fn configure(mut self, change: impl FnOnce(&mut VigilConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// How long each call of the kit waits at most. Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the host on a free loopback port.
    pub async fn start(self) -> Result<TestHost, KitError> {
        let TestHostBuilder {
            mut config,
            plugin,
            timeout,
        } = self;
        if config.cluster.redis_url.is_some() {
            return Err(KitError::ClusterMode);
        }
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(KitError::io("binding a loopback port"))?;
        let engine = shared_engine(&config)?;
        let mut builder = vigil::Vigil::builder(config).engine(engine);
        if let Some((wasm, config_json)) = plugin {
            builder = builder.plugin(
                PluginSource::from_bytes("plugin-under-test.wasm", "test kit", wasm),
                config_json,
            );
        }
        let server = within(timeout, "the host to start", builder.start(listener))
            .await?
            .map_err(|error| KitError::Start(format!("{error:#}")))?;
        let log = Arc::new(SessionLog::default());
        if !server
            .host
            .observe(Arc::clone(&log) as Arc<dyn SessionObserver>, 0)
        {
            return Err(KitError::ClusterMode);
        }
        Ok(TestHost {
            server,
            log,
            timeout,
        })
    }
}

/// A running host for one test. Shut it down with [`TestHost::shutdown`]
/// to check that it stops cleanly; otherwise it stops with the test's
/// runtime.
pub struct TestHost {
    server: RunningServer,
    log: Arc<SessionLog>,
    timeout: Duration,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("address", &self.server.address)
            .finish_non_exhaustive()
    }
}

impl TestHost {
    /// A host with the default policy and [`test_config`].
    pub fn builder() -> TestHostBuilder {
        TestHostBuilder {
            config: test_config(),
            plugin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Starts a host running `wasm` (configured with `config_json`) with
    /// [`test_config`].
    pub async fn start(wasm: &[u8], config_json: &str) -> Result<TestHost, KitError> {
        Self::builder().plugin(wasm, config_json).start().await
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    /// The host itself, for anything the kit does not wrap.
    pub fn host(&self) -> &SessionHost {
        &self.server.host
    }

    /// Connects a scripted client to `/ws`.
    pub async fn connect(&self) -> Result<Client, KitError> {
        self.connect_to("/ws", &[]).await
    }

    /// Connects a scripted client to `path` (with its query), sending
    /// `headers` with the upgrade; returns once the host holds its session.
    pub async fn connect_to(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, KitError> {
        let address = self.address();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let (stream, already_read) = within(self.timeout, "the WebSocket upgrade", async {
            let mut stream = TcpStream::connect(address)
                .await
                .map_err(KitError::io("connecting to the host"))?;
            let already_read =
                frames::upgrade(&mut stream, &address.to_string(), path, &headers).await?;
            Ok::<_, KitError>((stream, already_read))
        })
        .await??;
        let local = stream
            .local_addr()
            .map_err(KitError::io("reading the client's address"))?;
        let session = bounded(
            self.timeout,
            "the host to register the client's session",
            || self.log.session_of(local),
            &self.log.changed,
        )
        .await?;
        Client::spawn(session, stream, already_read, self.timeout)
    }

    /// Makes `wasm` the active policy, validated and dry-run like an admin
    /// swap.
    pub async fn swap(&self, wasm: &[u8], config_json: &str) -> Result<SwapReport, KitError> {
        let source = PluginSource::from_bytes("candidate.wasm", "test kit", wasm.to_vec());
        within(
            self.timeout,
            "the swap",
            self.host()
                .swap_policy(source, config_json.to_owned(), None),
        )
        .await?
        .map_err(|error| KitError::Rejected(error.to_string()))
    }

    /// Runs `wasm` in shadow beside the active policy.
    pub async fn shadow(&self, wasm: &[u8], config_json: &str) -> Result<(), KitError> {
        let source = PluginSource::from_bytes("shadow.wasm", "test kit", wasm.to_vec());
        within(
            self.timeout,
            "the shadow to start",
            self.host()
                .start_shadow(source, config_json.to_owned(), None),
        )
        .await?
        .map(|_| ())
        .map_err(|error| KitError::Rejected(error.to_string()))
    }

    /// The shadow's disagreement report (as `GET
    /// /admin/policy/shadow/report` serves it).
    pub async fn shadow_report(&self) -> Result<Value, KitError> {
        within(
            self.timeout,
            "the shadow report",
            self.host().policy().shadow_report(),
        )
        .await?
        .map_err(|error| KitError::Refused(error.to_string()))?
        .ok_or_else(|| KitError::Refused("no shadow policy is running".to_owned()))
    }

    /// Makes the shadow candidate active.
    pub async fn promote(&self) -> Result<(), KitError> {
        within(self.timeout, "the promotion", self.host().promote_shadow())
            .await?
            .map(|_| ())
            .map_err(|error| KitError::Refused(error.to_string()))
    }

    /// Returns to the policy that ran before the last swap.
    pub async fn rollback(&self) -> Result<(), KitError> {
        within(self.timeout, "the rollback", self.host().rollback_policy())
            .await?
            .map(|_| ())
            .map_err(|error| KitError::Refused(error.to_string()))
    }

    /// Waits until session `id` has left the host; why it did (the
    /// eviction reason, such as `pong-timeout`, or how it ended, such as
    /// `client-closed`).
    pub async fn until_evicted(&self, id: SessionId) -> Result<String, KitError> {
        let what = format!("session {id} to be removed");
        bounded(
            self.timeout,
            &what,
            || self.log.removal_reason(id),
            &self.log.changed,
        )
        .await
    }

    /// Waits until the host holds exactly `count` sessions.
    pub async fn until_sessions(&self, count: usize) -> Result<(), KitError> {
        let what = format!("the host to hold {count} sessions");
        bounded(
            self.timeout,
            &what,
            || (self.host().session_count() == count).then_some(()),
            &self.log.changed,
        )
        .await
    }

    /// Publishes a text message to one session, or to every session
    /// (`None`), as `POST /publish` does.
    pub fn publish(&self, to: Option<SessionId>, text: &str) -> PublishReport {
        let target = match to {
            Some(id) => Target::Ids(vec![id]),
            None => Target::All,
        };
        self.host()
            .publish(&target, Message::Text(text.to_owned().into()))
    }

    /// Every live session, by id.
    pub fn sessions(&self) -> Vec<SessionView> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.host().sessions(&SessionQuery {
                after,
                ..SessionQuery::default()
            });
            let Some(last) = page.sessions.last().map(|s| s.id) else {
                return all;
            };
            all.extend(page.sessions);
            after = Some(last);
        }
    }

    /// One live session.
    pub fn session(&self, id: SessionId) -> Option<SessionView> {
        self.host().session(id)
    }

    /// The host's metrics now.
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.host().metrics_text())
    }

    /// Shuts down gracefully (1001 to every session, drain); the number of
    /// sessions closed cleanly.
    pub async fn shutdown(self) -> Result<u64, KitError> {
        let limit = self.timeout;
        let (clean, _) = within(limit, "the host to shut down", self.server.shutdown())
            .await?
            .map_err(|error| KitError::Start(format!("shutting down: {error:#}")))?;
        Ok(clean)
    }
}

//! Start-up: the one way a Vigil host starts. The CLI, the tests, the load
//! tool and the bench harness all call [`Vigil::builder`], so every one of
//! them runs the same config validation, plugin load, start-up check and
//! fault limits that users get:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config = vigil::config::VigilConfig::default();
//! let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
//! vigil::Vigil::builder(config)
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

/// Command line: `vigil serve`, `vigil policy check`.
pub mod cli;
/// Reloading the policy when its file changes (`--watch`).
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use vigil_policy_runtime::scenarios::{self, CheckReport};
use vigil_policy_runtime::{PluginSource, PolicyEngine, PolicyHandle, Sandbox, Supervisor};

use crate::cluster::{ClusterMetrics, ClusterNode};
use crate::config::VigilConfig;
use crate::core::metrics::Metrics;
use crate::core::SessionHost;
use crate::http::auth::{ClientAuth, ControlAccess};
use crate::http::dashboard::Dashboard;
use crate::http::peer::TrustedProxies;
use crate::http::tls::{TlsReloader, TlsWatch};
use crate::onebot::OneBotProfile;
use crate::profile::Profile;

/// Sessions in the start-up check's capacity-pressure batch.
const STARTUP_CHECK_CAPACITY_SESSIONS: usize = 20;

/// The Vigil host, as started from a configuration.
pub struct Vigil;

impl Vigil {
    /// Starts describing a host that runs `config`.
    pub fn builder(config: VigilConfig) -> VigilBuilder {
        VigilBuilder {
            config,
            engine: None,
            plugin: None,
        }
    }
}

/// How to start a host: the configuration, and optionally a shared wasm
/// engine (tests share one, so each plugin compiles once) and a plugin given
/// as bytes instead of `[policy] path`.
pub struct VigilBuilder {
    config: VigilConfig,
    engine: Option<PolicyEngine>,
    plugin: Option<(PluginSource, String)>,
}

impl VigilBuilder {
    /// Compiles plugins with `engine` (which keeps a compile cache) rather
    /// than a new one.
    pub fn engine(mut self, engine: PolicyEngine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Runs `source` with `config_json` as the policy, in place of what
    /// `[policy]` names.
    pub fn plugin(mut self, source: PluginSource, config_json: impl Into<String>) -> Self {
        self.plugin = Some((source, config_json.into()));
        self
    }

    /// Validates the configuration, loads the plugin and runs the start-up
    /// check (a bad plugin or config stops here, before anything listens),
    /// then serves on `listener`: the public API with every configured
    /// profile, the shared tick, the admin API on its own listener when an
    /// admin token is set, and the policy file watch when asked.
    pub async fn start(self, listener: TcpListener) -> anyhow::Result<RunningServer> {
        let VigilBuilder {
            config,
            engine,
            plugin,
        } = self;
        config.validate()?;
        let engine = match engine {
            Some(engine) => engine,
            None => config.policy.engine()?,
        };
        let (source, config_json) = match plugin {
            Some(plugin) => plugin,
            None => (policy_source(&config)?, config.policy.plugin_config_json()?),
        };
        let (sandbox, report) =
            load_checked_off_runtime(engine.clone(), source, config_json, &config).await?;
        tracing::info!(plugin = %sandbox.name(), sha256 = sandbox.sha256(), "policy plugin loaded");
        for line in report.to_string().lines() {
            tracing::info!("{line}");
        }
        let supervisor = Supervisor::new(sandbox, config.policy.faults.clone());
        let policy = PolicyHandle::spawn(supervisor).context("starting the policy thread")?;

        let profiles = build_profiles(&config)?;
        let cluster_metrics = ClusterMetrics::default();
        let metrics = Metrics::new(|registry| {
            for profile in &profiles {
                profile.register_metrics(registry);
            }
            if config.cluster.redis_url.is_some() {
                cluster_metrics.register(registry);
            }
        });
        let host = SessionHost::new(config.host(), engine, policy, metrics);
        serve_host(listener, host, profiles, cluster_metrics, &config)
    }

    /// [`Self::start`], then serves until `shutdown` completes, then shuts
    /// down gracefully (1001 to every session, drain).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let server = self.start(listener).await?;
        tracing::info!(address = %server.address, "vigil listening");
        if let Some(admin) = server.admin_address {
            tracing::info!(address = %admin, "admin API listening");
        }
        shutdown.await;
        tracing::info!("shutting down");
        server.shutdown().await?;
        tracing::info!("vigil stopped");
        Ok(())
    }
}

/// The plugin `[policy] path` names, or the built-in default policy.
pub fn policy_source(config: &VigilConfig) -> anyhow::Result<PluginSource> {
    Ok(match &config.policy.path {
        Some(path) => PluginSource::from_file(path)?,
        None => PluginSource::embedded_default(),
    })
}

/// Loads a plugin into a sandbox under `[policy.limits]` and runs the
/// built-in scenarios through it: a plugin that fails to load, faults or
/// breaks the contract is refused here. Runs guest code, so call it from a
/// plain thread, never a tokio worker.
pub fn load_checked(
    engine: &PolicyEngine,
    source: &PluginSource,
    config_json: &str,
    config: &VigilConfig,
) -> anyhow::Result<(Sandbox, CheckReport)> {
    let mut sandbox = Sandbox::load(engine, source, config_json, config.policy.limits.clone())?;
    let report = scenarios::run_check(&mut sandbox, STARTUP_CHECK_CAPACITY_SESSIONS)
        .with_context(|| format!("policy plugin {} failed its start-up check", sandbox.name()))?;
    Ok((sandbox, report))
}

/// [`load_checked`] on a thread of its own, awaitable from async code.
async fn load_checked_off_runtime(
    engine: PolicyEngine,
    source: PluginSource,
    config_json: String,
    config: &VigilConfig,
) -> anyhow::Result<(Sandbox, CheckReport)> {
    let config = config.clone();
    vigil_policy_runtime::thread::on_own_thread("vigil-load", move || {
        load_checked(&engine, &source, &config_json, &config)
    })
    .await?
}

/// Every profile the configuration enables.
fn build_profiles(config: &VigilConfig) -> anyhow::Result<Vec<Arc<dyn Profile>>> {
    let mut profiles: Vec<Arc<dyn Profile>> = Vec::new();
    if let Some(onebot) = OneBotProfile::from_config(
        &config.onebot,
        config.server.access_token.as_deref(),
        config.sessions.queue_max_bytes,
    )? {
        profiles.push(Arc::new(onebot));
    }
    Ok(profiles)
}

/// Starts every task of a running host around `host`.
fn serve_host(
    listener: TcpListener,
    host: SessionHost,
    profiles: Vec<Arc<dyn Profile>>,
    cluster_metrics: ClusterMetrics,
    config: &VigilConfig,
) -> anyhow::Result<RunningServer> {
    let address = listener.local_addr().context("reading the bound address")?;
    let (stop, stopped) = signal::channel(false);
    let cluster = match &config.cluster.redis_url {
        Some(_) => Some(ClusterNode::start(
            &config.cluster,
            host.clone(),
            cluster_metrics,
            stopped.clone(),
        )?),
        None => None,
    };
    let admin_address = match &config.admin.token {
        Some(token) => Some(start_admin(
            &host,
            cluster.clone(),
            config,
            token,
            stopped.clone(),
        )?),
        None => {
            tracing::info!("no admin token configured: the admin API is not served");
            None
        }
    };
    let tick = {
        let host = host.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { host.run_tick(stopped).await })
    };
    let background: Vec<_> = profiles
        .iter()
        .filter_map(|profile| profile.background(&host, stopped.clone()))
        .map(tokio::spawn)
        .collect();
    let proxies = TrustedProxies::new(config.server.trusted_proxies.clone());
    let control = ControlAccess::new(&config.api, proxies.clone());
    let clients = ClientAuth::new(config.server.access_token.as_deref(), &config.auth)?;
    if config.api.keys.is_empty() {
        tracing::warn!(
            "no [api] key is set: /publish, /sessions and /metrics answer loopback clients only"
        );
    }
    let tls = config
        .server
        .tls
        .as_ref()
        .map(TlsReloader::load)
        .transpose()?;
    let tls_watch = tls.as_ref().map(TlsReloader::watch).transpose()?;
    let app = crate::http::api::router(host.clone(), &profiles, control, clients, cluster.clone());
    let server = crate::http::serve::serve(
        listener,
        app,
        host.clone(),
        proxies,
        tls,
        config.tcp.clone(),
        stopped.clone(),
    );
    let task_host = host.clone();
    let task = tokio::spawn(async move {
        let mut shutdown_requested = stopped;
        let closing = async {
            let _ = shutdown_requested.wait_for(|stop| *stop).await;
            let (clean, total) = task_host.shutdown().await;
            tracing::info!(
                closed_cleanly = clean,
                sessions = total,
                "sessions closed for shutdown"
            );
            (clean, total)
        };
        let ((), closed) = tokio::join!(server, closing);
        let _ = tick.await;
        for task in background {
            let _ = task.await;
        }
        Ok(closed)
    });
    let policy_watch = match (&config.policy.path, config.policy.watch) {
        (Some(path), true) => {
            let config_json = config.policy.plugin_config_json()?;
            Some(watch::watch(host.clone(), path, config_json)?)
        }
        (None, true) => anyhow::bail!("--watch needs a policy file (--policy FILE.wasm)"),
        _ => None,
    };
    Ok(RunningServer {
        address,
        admin_address,
        cluster,
        policy_watch,
        _tls_watch: tls_watch,
        host,
        stop,
        task,
    })
}

/// The admin API and the dashboard on a runtime (and OS thread) of their
/// own: under heavy session traffic a swap must not wait in the same run
/// queue as thousands of session tasks.
fn start_admin(
    host: &SessionHost,
    cluster: Option<ClusterNode>,
    config: &VigilConfig,
    token: &str,
    mut stopped: signal::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listen = config.admin.listen;
    let admin_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} for the admin API"))?;
    admin_listener
        .set_nonblocking(true)
        .context("configuring the admin listener")?;
    let admin_address = admin_listener
        .local_addr()
        .context("reading the admin address")?;
    let dashboard = Dashboard::new(host.clone(), cluster, stopped.clone());
    let app = crate::http::admin::router(host.clone(), token).merge(
        crate::http::dashboard::router(Arc::clone(&dashboard), token),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the admin runtime")?;
    std::thread::Builder::new()
        .name("vigil-admin".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(dashboard.run_sampler());
                let listener = match TcpListener::from_std(admin_listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "cannot serve the admin API");
                        return;
                    }
                };
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "admin API stopped");
                }
            });
        })
        .context("starting the admin thread")?;
    Ok(admin_address)
}

/// A running host: its addresses, its handle, and how to stop it.
pub struct RunningServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Where the admin API listens, when it is served.
    pub admin_address: Option<SocketAddr>,
    /// The session host, for tests and embedding.
    pub host: SessionHost,
    /// This node's cluster membership, in cluster mode.
    pub cluster: Option<ClusterNode>,
    stop: signal::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<(u64, usize)>>,
    policy_watch: Option<watch::PolicyWatch>,
    _tls_watch: Option<TlsWatch>,
}

impl RunningServer {
    /// Shuts down gracefully (1001 to every session, drain) and returns
    /// (clean closes, sessions at shutdown).
    pub async fn shutdown(mut self) -> anyhow::Result<(u64, usize)> {
        self.policy_watch = None;
        let _ = self.stop.send(true);
        self.task.await.context("server task failed")?
    }
}

/// Binds the configured address and serves until SIGTERM or Ctrl-C.
pub async fn run_until_signal(builder: VigilBuilder, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    builder.serve(listener, shutdown_signal()).await
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

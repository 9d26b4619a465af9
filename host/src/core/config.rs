//! The host's settings, section by section: what the session host itself
//! reads. The file format (`vigil.toml`) is assembled from these sections,
//! plus the profiles' own, by [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use vigil_policy_runtime::{SandboxLimits, SupervisorConfig};

/// What the session host runs on: every section of `vigil.toml` but the
/// profiles'.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// The HTTP/WebSocket listener and its buffers.
    pub server: ServerConfig,
    /// Session limits, queues, the shared tick, shutdown.
    pub sessions: SessionsConfig,
    /// Heartbeat timings of each tier.
    pub tiers: TiersConfig,
    /// Socket options of accepted connections.
    pub tcp: TcpConfig,
    /// The "sessions grow while activity does not" alarm.
    pub monitor: MonitorConfig,
    /// Which policy plugin runs, with what configuration and limits.
    pub policy: PolicyConfig,
    /// The admin API (policy swap, rollback, shadow).
    pub admin: AdminConfig,
}

impl HostConfig {
    /// Checks what the types alone cannot, naming the setting at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.policy.watch && self.policy.path.is_none() {
            bail!("[policy] watch needs a plugin file: set `path` (or pass --policy FILE.wasm)");
        }
        if self.policy.config.is_some() && self.policy.config_file.is_some() {
            bail!("[policy] sets both `config` and `config_file`; use one");
        }
        if let Err(why) = self.policy.limits.validate() {
            bail!("[policy.limits] {why}");
        }
        if self.policy.faults.max_faults == 0 {
            bail!("[policy.faults] max_faults must be at least 1");
        }
        let sessions = &self.sessions;
        if sessions.tick_ms == 0 {
            bail!("[sessions] tick_ms must be above 0");
        }
        if sessions.queue_soft_bytes > sessions.queue_max_bytes {
            bail!("[sessions] queue_soft_bytes must not exceed queue_max_bytes");
        }
        if sessions.max_sessions == Some(0) {
            bail!("[sessions] max_sessions must be at least 1 (leave it out for no limit)");
        }
        for (name, timing) in [
            ("fast", self.tiers.fast),
            ("regular", self.tiers.regular),
            ("keep_alive", self.tiers.keep_alive),
        ] {
            if timing.ping_interval_ms == 0 || timing.pong_timeout_ms == 0 {
                bail!("[tiers.{name}] ping_interval_ms and pong_timeout_ms must be above 0");
            }
        }
        let server = &self.server;
        if server.read_buffer_bytes < 256 || server.write_buffer_bytes == 0 {
            bail!("[server] read_buffer_bytes must be at least 256 and write_buffer_bytes above 0");
        }
        if server.handshake_timeout_ms == 0 || server.max_handshakes == 0 {
            bail!("[server] handshake_timeout_ms and max_handshakes must be above 0: an unbounded handshake lets a client that never finishes one hold a connection forever");
        }
        if server.inbound_budget_bytes < server.max_message_bytes {
            bail!("[server] inbound_budget_bytes ({}) must be at least max_message_bytes ({}): one legitimate message must fit", server.inbound_budget_bytes, server.max_message_bytes);
        }
        if server.access_token.as_deref() == Some("") {
            bail!("[server] access_token is empty; leave it out for no client token");
        }
        Ok(())
    }
}

/// `[admin]`: served on its own listener, never on the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry. Without one the admin
    /// API is not served at all. Default none.
    pub token: Option<String>,
    /// Health differences above this count as a shadow disagreement. Default 10.
    pub shadow_health_threshold: u8,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: None,
            shadow_health_threshold: 10,
        }
    }
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The client credential: when set, `/ws` requires it, as
    /// `Authorization: Bearer <token>` or `?access_token=<token>` (a JWT
    /// from `[auth]` is accepted too). It never opens the control routes.
    /// Default none.
    pub access_token: Option<String>,
    /// Per-connection WebSocket read buffer, bytes, allocated up front for
    /// every session. Default 512: it is most of an idle session's memory
    /// after the task itself (BENCHMARKS.md); tungstenite's own default of
    /// 128 KiB would cost 128 KiB per idle session. A frame larger than the
    /// buffer grows it to the frame's size, so large messages are still
    /// read in large reads.
    pub read_buffer_bytes: usize,
    /// Per-connection WebSocket write buffer target, bytes. Default 4 096.
    pub write_buffer_bytes: usize,
    /// Largest inbound message, bytes; larger ones close the session with
    /// 1009. Default 1 MiB.
    pub max_message_bytes: usize,
    /// The whole handshake — TLS, the HTTP request's headers, the upgrade —
    /// must be done within this, ms, or the connection is closed. Default
    /// 10 000 (Python `websockets`' `open_timeout`).
    pub handshake_timeout_ms: u64,
    /// Connections still in their handshake at once; more are answered 503
    /// and closed. Default 4 096.
    pub max_handshakes: usize,
    /// Connections one source IP may hold at once (sessions and handshakes);
    /// 0 for no limit. More are answered 429. Default 0.
    pub per_ip_max_connections: usize,
    /// New connections one source IP may open per second (a token bucket
    /// with a burst of the same size); 0 for no limit. More are answered
    /// 429. Default 0.
    pub per_ip_connections_per_sec: u32,
    /// Inbound bytes all sessions together may hold in partial frames and
    /// messages being reassembled. Past it, the sessions holding the most
    /// are closed with 1009 until the rest fit. Default 64 MiB.
    pub inbound_budget_bytes: usize,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is
    /// believed: a session through one gets the client's address as its
    /// peer, and no TCP facts (they would describe the proxy's connection).
    /// Default none: the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Native `wss://`: a certificate chain and key, PEM. Default none.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: certificate and key files, reloaded on SIGHUP or when
/// either file changes, without dropping sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            access_token: None,
            read_buffer_bytes: 512,
            write_buffer_bytes: 4096,
            max_message_bytes: 1 << 20,
            handshake_timeout_ms: 10_000,
            max_handshakes: 4_096,
            per_ip_max_connections: 0,
            per_ip_connections_per_sec: 0,
            inbound_budget_bytes: 64 << 20,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

impl SessionsConfig {
    /// [`SessionsConfig::tcp_info_max_age_ms`]; zero reads at every probe.
    pub fn tcp_info_max_age(&self) -> Duration {
        Duration::from_millis(self.tcp_info_max_age_ms)
    }
}

impl ServerConfig {
    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// `[sessions]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Most sessions at once; beyond it the policy chooses whom to drop, or
    /// new connections get 503. Default unlimited.
    pub max_sessions: Option<usize>,
    /// Client class of sessions on `/ws`. Default `default`.
    pub default_class: String,
    /// Outbound queue hard limit per session, bytes: messages beyond it are
    /// dropped and counted. Default 1 MiB.
    pub queue_max_bytes: usize,
    /// Outbound queue soft mark, bytes: above it the policy hears of
    /// backpressure. Default 256 KiB.
    pub queue_soft_bytes: usize,
    /// The shared tick that drives pings, pong deadlines and re-assessment, ms.
    /// Default 100.
    pub tick_ms: u64,
    /// How long an evicted session gets to take its close frame before the
    /// connection is dropped, ms. Default 1 000.
    pub close_grace_ms: u64,
    /// How long shutdown waits for sessions to close, ms. Default 5 000.
    pub drain_timeout_ms: u64,
    /// Inbound frames per second a session may send (pings included) before
    /// it is closed with 1008. Default 200.
    pub max_inbound_frames_per_sec: u32,
    /// Report frame-received / frame-sent events to the policy (one event per
    /// frame: costly at high message rates). Default false.
    pub frame_events: bool,
    /// How old a healthy session's kernel TCP facts (`TCP_INFO`) may get,
    /// ms. A probe reads them afresh when the session is late with a pong,
    /// has data queued, showed retransmits or unacked segments, or takes no
    /// pings; otherwise only once the last reading is this old, sparing
    /// every healthy session a system call per ping. 0 reads them at every
    /// probe. Default 300 000 (5 minutes).
    pub tcp_info_max_age_ms: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max_sessions: None,
            default_class: "default".to_owned(),
            queue_max_bytes: 1 << 20,
            queue_soft_bytes: 256 << 10,
            tick_ms: 100,
            close_grace_ms: 1_000,
            drain_timeout_ms: 5_000,
            max_inbound_frames_per_sec: 200,
            frame_events: false,
            tcp_info_max_age_ms: 300_000,
        }
    }
}

/// When a tier pings and how long it waits for the pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierTiming {
    /// Time between pings, ms.
    pub ping_interval_ms: u64,
    /// How long a ping may go unanswered before the pong is overdue, ms.
    pub pong_timeout_ms: u64,
}

impl TierTiming {
    /// Time between pings.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// How long a ping may go unanswered.
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_millis(self.pong_timeout_ms)
    }
}

/// `[tiers]`: the host executes the tiers the policy chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// Default: ping every 5 s, pong timeout 5 s.
    pub fast: TierTiming,
    /// Default: ping every 30 s, pong timeout 30 s.
    pub regular: TierTiming,
    /// Default: probe every 60 s, pong timeout 30 s.
    pub keep_alive: TierTiming,
}

impl TiersConfig {
    /// Every tier on the same timing (tests and benchmarks that want one
    /// heartbeat whatever tier the policy chooses).
    pub fn uniform(timing: TierTiming) -> Self {
        TiersConfig {
            fast: timing,
            regular: timing,
            keep_alive: timing,
        }
    }
}

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig {
            fast: TierTiming {
                ping_interval_ms: 5_000,
                pong_timeout_ms: 5_000,
            },
            regular: TierTiming {
                ping_interval_ms: 30_000,
                pong_timeout_ms: 30_000,
            },
            keep_alive: TierTiming {
                ping_interval_ms: 60_000,
                pong_timeout_ms: 30_000,
            },
        }
    }
}

impl TiersConfig {
    /// The timing of `tier`.
    pub fn timing(&self, tier: vigil_policy_runtime::Tier) -> TierTiming {
        match tier {
            vigil_policy_runtime::Tier::Fast => self.fast,
            vigil_policy_runtime::Tier::Regular => self.regular,
            vigil_policy_runtime::Tier::KeepAlive => self.keep_alive,
        }
    }
}

/// `[tcp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// TCP keepalive idle time, seconds; 0 disables. Default 30.
    pub keepalive_secs: u64,
    /// `TCP_USER_TIMEOUT` (Linux): unacknowledged data older than this kills
    /// the connection, ms; 0 leaves the kernel default. Default 30 000.
    pub user_timeout_ms: u64,
    /// Disable Nagle's algorithm. Default true.
    pub nodelay: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            keepalive_secs: 30,
            user_timeout_ms: 30_000,
            nodelay: true,
        }
    }
}

/// `[monitor]`: the seed problem's symptom, as an alarm.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Window the growth is measured over, ms. Default 60 000.
    pub window_ms: u64,
    /// Net new sessions within a window, with no inbound application
    /// traffic in it, that raise the alarm. Default 100.
    pub growth_threshold: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            window_ms: 60_000,
            growth_threshold: 100,
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The plugin component; the built-in default policy when unset.
    pub path: Option<PathBuf>,
    /// The plugin's configuration, inline (converted to JSON).
    pub config: Option<toml::Table>,
    /// The plugin's configuration, as a JSON file. Exclusive with `config`.
    pub config_file: Option<PathBuf>,
    /// Reload the plugin when `path` changes (validated like an admin swap).
    /// Default false.
    pub watch: bool,
    /// Deadline and memory caps.
    pub limits: SandboxLimits,
    /// When a faulting plugin is disabled.
    pub faults: SupervisorConfig,
    /// Keep compiled plugins on disk, so a large (Python, JavaScript)
    /// plugin is compiled once rather than at every start and swap.
    /// Default true.
    pub compile_cache: bool,
    /// Where: a directory private to the user Vigil runs as (whoever can
    /// write to it can run code in the host). Default
    /// `$XDG_CACHE_HOME/vigil/compiled`, else `$HOME/.cache/vigil/compiled`;
    /// with neither set, no cache.
    pub compile_cache_dir: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            path: None,
            config: None,
            config_file: None,
            watch: false,
            limits: SandboxLimits::default(),
            faults: SupervisorConfig::default(),
            compile_cache: true,
            compile_cache_dir: None,
        }
    }
}

/// The compile cache's directory under a cache home (`$XDG_CACHE_HOME`):
/// one layout for the host and for the tests that share its cache.
pub fn compile_cache_under(cache_home: &std::path::Path) -> PathBuf {
    cache_home.join("vigil").join("compiled")
}

impl PolicyConfig {
    /// The compile cache's directory, when there is to be one.
    pub fn compile_cache_path(&self) -> Option<PathBuf> {
        if !self.compile_cache {
            return None;
        }
        if let Some(dir) = &self.compile_cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| !dir.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache"))
            })?;
        Some(compile_cache_under(&base))
    }

    /// The process's wasm engine, with the compile cache when configured.
    /// A cache that cannot be opened is warned about, not fatal.
    pub fn engine(&self) -> anyhow::Result<vigil_policy_runtime::PolicyEngine> {
        let engine =
            vigil_policy_runtime::PolicyEngine::new().context("starting the wasm engine")?;
        let Some(dir) = self.compile_cache_path() else {
            return Ok(engine);
        };
        match engine.clone().with_compile_cache(&dir) {
            Ok(cached) => Ok(cached),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot open the compile cache; plugins are compiled at every load");
                Ok(engine)
            }
        }
    }

    /// The JSON string handed to the plugin's `configure` (`{}` when none).
    pub fn plugin_config_json(&self) -> anyhow::Result<String> {
        if let Some(file) = &self.config_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read policy config {}", file.display()))?;
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("policy config {} is not valid JSON", file.display()))?;
            return Ok(text);
        }
        match &self.config {
            Some(table) => Ok(serde_json::to_string(table)
                .context("policy config cannot be expressed as JSON")?),
            None => Ok("{}".to_owned()),
        }
    }
}

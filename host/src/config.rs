//! `vigil.toml`: every setting with its documented default, section by
//! section. Command-line flags override what the file says. The core's
//! sections are defined in [`crate::core::config`], each profile's next to
//! the profile; this file puts them together and validates the whole.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//!
//! [policy]
//! path = "plugins/my_policy.wasm"   # default: the built-in default policy
//! config = { idle_evict_ms = 0 }    # handed to the plugin's `configure` as JSON
//! # config_file = "policy.json"     # or read the JSON from a file
//!
//! [policy.limits]
//! call_deadline_ms = 20
//! init_deadline_ms = 1000
//! memory_bytes = 67108864
//!
//! [policy.faults]
//! max_faults = 5
//! fault_window_ms = 60000
//! ```

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

pub use crate::cluster::ClusterConfig;
pub use crate::core::config::{
    AdminConfig, HostConfig, MonitorConfig, PolicyConfig, ServerConfig, SessionsConfig, TcpConfig,
    TierTiming, TiersConfig, TlsConfig,
};
pub use crate::http::config::{ApiConfig, AuthConfig};
pub use crate::onebot::{OneBotConfig, UpstreamConfig, UpstreamMode};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VigilConfig {
    /// The HTTP/WebSocket listener.
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
    /// The control routes' keys.
    pub api: ApiConfig,
    /// How clients prove who they are.
    pub auth: AuthConfig,
    /// Cluster mode over Redis (off without `redis_url`).
    pub cluster: ClusterConfig,
    /// The OneBot v11 forward-WebSocket profile.
    pub onebot: OneBotConfig,
}

impl VigilConfig {
    /// Reads and validates a `vigil.toml`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: VigilConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = config
            .server
            .tls
            .as_mut()
            .map(|tls| [&mut tls.cert, &mut tls.key]);
        let paths = [&mut config.policy.path, &mut config.policy.config_file]
            .into_iter()
            .flatten()
            .chain(config.auth.jwt_public_key.as_mut())
            .chain(tls.into_iter().flatten());
        for relative in paths {
            if relative.is_relative() {
                *relative = base.join(&*relative);
            }
        }
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks what the types alone cannot: the core's sections, then each
    /// profile's.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.host().validate()?;
        self.api.validate()?;
        self.auth.validate()?;
        self.cluster.validate()?;
        let listen = self.server.listen;
        if !listen.ip().is_loopback()
            && self.api.keys.is_empty()
            && !self.api.allow_public_without_key
        {
            anyhow::bail!(
                "[server] listen = {listen} is not a loopback address, and no [api] key is set: set one ([api] keys = [\"...\"] or --api-key) so backends can publish and list, or choose to go without ([api] allow_public_without_key = true; the control routes then answer loopback clients only)"
            );
        }
        self.onebot.validate()
    }

    /// The sections the session host runs on.
    pub fn host(&self) -> HostConfig {
        HostConfig {
            server: self.server.clone(),
            sessions: self.sessions.clone(),
            tiers: self.tiers,
            tcp: self.tcp.clone(),
            monitor: self.monitor.clone(),
            policy: self.policy.clone(),
            admin: self.admin.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_config_text_is_read_or_refused_never_a_panic(text in "(?s).{0,400}") {
            if let Ok(config) = toml::from_str::<VigilConfig>(&text) {
                let _ = config.validate();
            }
        }

        #[test]
        fn any_numbers_in_the_sessions_section_are_validated_not_panicked_on(
            tick in any::<u32>(), soft in any::<u32>(), max in any::<u32>(),
            timeout in any::<u32>(), handshakes in any::<u32>(),
        ) {
            let text = format!(
                "[sessions]\ntick_ms = {tick}\nqueue_soft_bytes = {soft}\nqueue_max_bytes = {max}\n[server]\nhandshake_timeout_ms = {timeout}\nmax_handshakes = {handshakes}\n"
            );
            let config: VigilConfig = toml::from_str(&text)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let valid = config.validate().is_ok();
            prop_assert_eq!(
                valid,
                tick > 0 && soft <= max && timeout > 0 && handshakes > 0
            );
        }
    }
}

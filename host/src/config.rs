//! `vigil.toml`: every setting with its documented default. Command-line
//! flags override what the file says.
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::policy::{SandboxLimits, SupervisorConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VigilConfig {
    /// The HTTP/WebSocket listener.
    pub server: ServerConfig,
    /// Which policy plugin runs, with what configuration and limits.
    pub policy: PolicyConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The plugin component; the built-in default policy when unset.
    pub path: Option<PathBuf>,
    /// The plugin's configuration, inline (converted to JSON).
    pub config: Option<toml::Table>,
    /// The plugin's configuration, as a JSON file. Exclusive with `config`.
    pub config_file: Option<PathBuf>,
    /// Deadline and memory caps.
    pub limits: SandboxLimits,
    /// When a faulting plugin is disabled.
    pub faults: SupervisorConfig,
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
        for relative in [&mut config.policy.path, &mut config.policy.config_file]
            .into_iter()
            .flatten()
        {
            if relative.is_relative() {
                *relative = base.join(&*relative);
            }
        }
        config
            .validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.policy.config.is_some() && self.policy.config_file.is_some() {
            bail!("[policy] sets both `config` and `config_file`; use one");
        }
        let limits = &self.policy.limits;
        if limits.call_deadline.is_zero() || limits.init_deadline.is_zero() {
            bail!("[policy.limits] deadlines must be above 0 ms");
        }
        if limits.memory_bytes < (1 << 20) {
            bail!("[policy.limits] memory_bytes must be at least 1 MiB (1048576); a wasm32-wasip2 component needs more than a few pages");
        }
        if self.policy.faults.max_faults == 0 {
            bail!("[policy.faults] max_faults must be at least 1");
        }
        Ok(())
    }
}

impl PolicyConfig {
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

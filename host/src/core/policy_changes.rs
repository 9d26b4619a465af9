//! Changing the running policy: a validated swap, rollback, shadow and
//! promotion. Every change that makes another plugin active ends in the same
//! bookkeeping (re-assess every session soon, count, time, log), written
//! once in [`SessionHost::changed_policy`]. Used by the admin API and the
//! file watch alike.

use std::time::{Duration, Instant};

use vigil_policy_runtime::{
    validate_off_runtime, ChangeError, PluginReport, PluginSource, RejectedCandidate,
    SandboxLimits, Shadow, Supervisor, Validated,
};

use crate::core::host::SessionHost;
use crate::core::hub::DRY_RUN_SESSIONS;

/// A completed swap.
#[derive(Debug, Clone)]
pub struct SwapReport {
    /// The new active policy.
    pub plugin: PluginReport,
    /// Compile (or cache hit), instantiate, configure and dry run.
    pub load_time: Duration,
    /// From the request to the new policy serving.
    pub swap_time: Duration,
    /// Sessions in the dry run.
    pub dry_run_sessions: usize,
}

/// How a policy became active, for the log.
#[derive(Debug, Clone, Copy)]
enum Change {
    Swapped,
    RolledBack,
    Promoted,
}

impl SessionHost {
    /// Loads a candidate and dry-runs it on the current sessions' facts, off
    /// the async runtime; nothing running is touched. `limits` are the
    /// candidate's own (a heavy runtime's), else `[policy.limits]`.
    pub async fn validate_candidate(
        &self,
        source: PluginSource,
        config_json: String,
        limits: Option<SandboxLimits>,
    ) -> Result<Validated, RejectedCandidate> {
        let hub = &self.hub;
        let (now_ms, snapshot) = hub.facts_sample(DRY_RUN_SESSIONS);
        validate_off_runtime(
            hub.engine.clone(),
            source,
            config_json,
            limits.unwrap_or_else(|| hub.config.policy.limits.clone()),
            now_ms,
            snapshot,
        )
        .await
    }

    /// Validates a candidate against the current sessions and, if it passes,
    /// makes it the active policy; counts and logs either way.
    pub async fn swap_policy(
        &self,
        source: PluginSource,
        config_json: String,
        limits: Option<SandboxLimits>,
    ) -> Result<SwapReport, RejectedCandidate> {
        let received = Instant::now();
        let validated = match self.validate_candidate(source, config_json, limits).await {
            Ok(validated) => validated,
            Err(rejected) => {
                self.swap_rejected(&rejected);
                return Err(rejected);
            }
        };
        let load_time = validated.validation_time;
        let dry_run_sessions = validated.dry_run_sessions;
        let supervisor = Supervisor::new(validated.sandbox, self.hub.config.policy.faults.clone());
        let plugin = self
            .hub
            .policy
            .swap(supervisor)
            .await
            .map_err(|gone| RejectedCandidate::Internal(gone.to_string()))?;
        let swap_time = self.changed_policy(Change::Swapped, &plugin, received);
        Ok(SwapReport {
            plugin,
            load_time,
            swap_time,
            dry_run_sessions,
        })
    }

    /// Counts and logs a candidate turned away before it could run.
    pub fn swap_rejected(&self, reason: &dyn std::fmt::Display) {
        self.hub.metrics.swap(false);
        tracing::warn!(reason = %reason, "policy swap rejected; the active policy stays");
    }

    /// Back to the previous policy.
    pub async fn rollback_policy(&self) -> Result<PluginReport, ChangeError> {
        let started = Instant::now();
        let plugin = self.hub.policy.rollback().await?;
        self.changed_policy(Change::RolledBack, &plugin, started);
        Ok(plugin)
    }

    /// Makes the shadow candidate the active policy.
    pub async fn promote_shadow(&self) -> Result<PluginReport, ChangeError> {
        let started = Instant::now();
        let plugin = self.hub.policy.promote().await?;
        self.changed_policy(Change::Promoted, &plugin, started);
        Ok(plugin)
    }

    /// Validates a candidate and runs it in shadow beside the active policy;
    /// returns its name and hash.
    pub async fn start_shadow(
        &self,
        source: PluginSource,
        config_json: String,
        limits: Option<SandboxLimits>,
    ) -> Result<(String, String), RejectedCandidate> {
        let validated = self.validate_candidate(source, config_json, limits).await?;
        let name = validated.sandbox.name().to_string();
        let sha256 = validated.sandbox.sha256().to_owned();
        let config = &self.hub.config;
        let supervisor = Supervisor::new(validated.sandbox, config.policy.faults.clone());
        let shadow = Shadow::new(supervisor, config.admin.shadow_health_threshold);
        self.hub
            .policy
            .set_shadow(Some(shadow))
            .await
            .map_err(|gone| RejectedCandidate::Internal(gone.to_string()))?;
        tracing::info!(plugin = %name, "shadow policy started");
        Ok((name, sha256))
    }

    /// The one after-change path: the new policy serves from here; every
    /// session is brought forward for assessment by it (follow-up work, not
    /// part of the change's time), and the change is counted and logged.
    fn changed_policy(&self, change: Change, plugin: &PluginReport, started: Instant) -> Duration {
        let took = started.elapsed();
        self.hub.reassess_all();
        self.hub.metrics.swap(true);
        self.hub.metrics.swap_seconds.observe(took.as_secs_f64());
        let message = match change {
            Change::Swapped => "policy swapped",
            Change::RolledBack => "policy rolled back",
            Change::Promoted => "shadow policy promoted",
        };
        tracing::info!(
            plugin = %plugin.name,
            sha256 = %plugin.sha256,
            swap_ms = took.as_secs_f64() * 1e3,
            "{message}"
        );
        took
    }
}

//! Keeps a plugin from taking the host down. Every call goes through the
//! [`Supervisor`]: a fault (trap, panic, deadline, memory cap, broken
//! contract) gives that batch the native default policy's verdicts, is logged
//! with the plugin's name and counted, and the plugin gets a fresh instance.
//! Too many faults in a window disable the plugin: only the fallback runs
//! until an operator replaces it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use vigil_default_policy::DefaultPolicy;
use vigil_policy_sdk::{Event, Policy, SessionId};

use super::columns::{SessionColumns, VerdictColumns};
use super::contract;
pub use super::fault::FaultKind;
use super::sandbox::{CallFault, Sandbox};

/// When a faulting plugin is given up on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Faults within `fault_window` that disable the plugin. Default 5.
    pub max_faults: u32,
    /// The window faults are counted over. Default 60 000 ms.
    #[serde(rename = "fault_window_ms", with = "crate::limits::millis")]
    pub fault_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_faults: 5,
            fault_window: Duration::from_secs(60),
        }
    }
}

/// Whether the plugin is being called at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyState {
    /// The plugin decides (with the fallback covering single faults).
    Active,
    /// Too many faults: only the native fallback decides.
    Disabled,
}

impl PolicyState {
    /// `active` or `disabled`, as reports say it.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Active => "active",
            PolicyState::Disabled => "disabled",
        }
    }
}

/// Who produced a batch's verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictSource {
    /// The plugin.
    Plugin,
    /// The native default policy, because the plugin faulted this way.
    Fallback(FaultKind),
    /// The native default policy, because the plugin is disabled.
    Disabled,
}

/// The verdicts for a batch, and how they came about.
#[derive(Debug, Clone)]
pub struct AssessOutcome {
    /// One per session in the batch; always valid under the contract.
    pub verdicts: VerdictColumns,
    /// Plugin or fallback.
    pub source: VerdictSource,
    /// Time spent in the call, fallback included.
    pub elapsed: Duration,
}

/// Counters other threads read without asking the policy thread.
#[derive(Debug, Default)]
pub struct PolicyStats {
    calls: AtomicU64,
    sessions_assessed: AtomicU64,
    fallback_batches: AtomicU64,
    restarts: AtomicU64,
    faults: [AtomicU64; 8],
    disabled: AtomicBool,
}

impl PolicyStats {
    /// Guest calls made (assess, on-events, select-evictions).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Session verdicts produced, by plugin or fallback.
    pub fn sessions_assessed(&self) -> u64 {
        self.sessions_assessed.load(Ordering::Relaxed)
    }

    /// Batches answered by the fallback.
    pub fn fallback_batches(&self) -> u64 {
        self.fallback_batches.load(Ordering::Relaxed)
    }

    /// Fresh instances started after faults.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Faults of one kind.
    pub fn faults(&self, kind: FaultKind) -> u64 {
        self.faults[kind.index()].load(Ordering::Relaxed)
    }

    /// Faults of every kind.
    pub fn total_faults(&self) -> u64 {
        FaultKind::ALL.iter().map(|kind| self.faults(*kind)).sum()
    }

    /// Active or disabled.
    pub fn state(&self) -> PolicyState {
        if self.disabled.load(Ordering::Relaxed) {
            PolicyState::Disabled
        } else {
            PolicyState::Active
        }
    }

    fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plugin under supervision, with its native fallback.
pub struct Supervisor {
    sandbox: Sandbox,
    fallback: DefaultPolicy,
    config: SupervisorConfig,
    recent_faults: VecDeque<Instant>,
    stats: Arc<PolicyStats>,
    last_batch_fell_back: bool,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("sandbox", &self.sandbox)
            .field("state", &self.stats.state())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Supervises a loaded plugin. The fallback takes the plugin's
    /// configuration when it is a valid default-policy configuration (so a
    /// faulting default plugin is replaced by the same decisions), and the
    /// default-policy defaults otherwise.
    pub fn new(sandbox: Sandbox, config: SupervisorConfig) -> Self {
        let mut fallback = DefaultPolicy::default();
        if let Err(reason) = fallback.configure(sandbox.config_json()) {
            tracing::debug!(
                plugin = %sandbox.name(),
                %reason,
                "plugin config is not a default-policy config; fallback uses defaults"
            );
        }
        Supervisor {
            sandbox,
            fallback,
            config,
            recent_faults: VecDeque::new(),
            stats: Arc::new(PolicyStats::default()),
            last_batch_fell_back: false,
        }
    }

    /// The supervised plugin.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Shared counters, readable from any thread.
    pub fn stats(&self) -> Arc<PolicyStats> {
        Arc::clone(&self.stats)
    }

    /// Active or disabled.
    pub fn state(&self) -> PolicyState {
        self.stats.state()
    }

    /// Whether the last `assess` batch got the fallback's verdicts.
    pub fn last_batch_fell_back(&self) -> bool {
        self.last_batch_fell_back
    }

    /// Verdicts for a batch: the plugin's when it answers within its limits
    /// and the contract, the fallback's otherwise. Never fails.
    pub fn assess(&mut self, now_ms: u64, sessions: &SessionColumns) -> AssessOutcome {
        let started = Instant::now();
        let (verdicts, source) = match self.plugin_assess(now_ms, sessions) {
            Ok(verdicts) => (verdicts, VerdictSource::Plugin),
            Err(source) => {
                self.stats.fallback_batches.fetch_add(1, Ordering::Relaxed);
                let verdicts = self.fallback.assess(now_ms, &sessions.to_rows());
                (VerdictColumns::from(&verdicts[..]), source)
            }
        };
        self.stats
            .sessions_assessed
            .fetch_add(sessions.len() as u64, Ordering::Relaxed);
        self.last_batch_fell_back = source != VerdictSource::Plugin;
        AssessOutcome {
            verdicts,
            source,
            elapsed: started.elapsed(),
        }
    }

    fn plugin_assess(
        &mut self,
        now_ms: u64,
        sessions: &SessionColumns,
    ) -> Result<VerdictColumns, VerdictSource> {
        self.ready("assess")?;
        let result = self.sandbox.assess(now_ms, sessions);
        self.stats.record_call();
        let verdicts = result.map_err(|fault| self.fault("assess", fault))?;
        if let Err(violation) = contract::check_verdicts(sessions.ids(), &verdicts) {
            let fault = CallFault::from(violation);
            return Err(self.fault("assess", fault));
        }
        Ok(verdicts)
    }

    /// Hands events to the plugin. A fault is handled like any other; there
    /// is nothing to fall back to, the events are simply not seen.
    pub fn on_events(&mut self, events: &[Event]) {
        if events.is_empty() || self.ready("on-events").is_err() {
            return;
        }
        let result = self.sandbox.on_events(events);
        self.stats.record_call();
        if let Err(fault) = result {
            self.fault("on-events", fault);
        }
    }

    /// Which sessions to drop under capacity pressure. `None` when the plugin
    /// faulted or broke the contract: the host then refuses new connections
    /// rather than guess. A disabled plugin's choice is the fallback's.
    pub fn select_evictions(
        &mut self,
        now_ms: u64,
        sessions: &SessionColumns,
        excess: u32,
    ) -> Option<Vec<SessionId>> {
        if self.state() == PolicyState::Disabled {
            let sessions = sessions.to_rows();
            return Some(self.fallback.select_evictions(now_ms, &sessions, excess));
        }
        self.ready("select-evictions").ok()?;
        let result = self.sandbox.select_evictions(now_ms, sessions, excess);
        self.stats.record_call();
        let chosen = match result {
            Ok(chosen) => chosen,
            Err(fault) => {
                self.fault("select-evictions", fault);
                return None;
            }
        };
        if let Err(violation) = contract::check_evictions(sessions.ids(), excess, &chosen) {
            let fault = CallFault::from(violation);
            self.fault("select-evictions", fault);
            return None;
        }
        Some(chosen)
    }

    /// Ok when the plugin can take a call: enabled, with a live instance
    /// (starting one if the last restart failed).
    fn ready(&mut self, call: &str) -> Result<(), VerdictSource> {
        if self.state() == PolicyState::Disabled {
            return Err(VerdictSource::Disabled);
        }
        if self.sandbox.is_live() {
            return Ok(());
        }
        match self.sandbox.restart() {
            Ok(()) => {
                self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(fault) => Err(self.fault(call, fault)),
        }
    }

    /// Logs and counts a fault, disables the plugin when it faults too often,
    /// and otherwise restarts it at once so the next call finds it ready.
    fn fault(&mut self, call: &str, fault: CallFault) -> VerdictSource {
        let kind = fault.kind;
        self.stats.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.recent_faults.push_back(now);
        while let Some(oldest) = self.recent_faults.front() {
            if now.duration_since(*oldest) > self.config.fault_window {
                self.recent_faults.pop_front();
            } else {
                break;
            }
        }
        tracing::warn!(
            plugin = %self.sandbox.name(),
            call,
            fault = %kind,
            detail = %fault.detail,
            "policy plugin faulted; this batch uses the built-in default policy"
        );
        if self.recent_faults.len() >= self.config.max_faults as usize {
            self.stats.disabled.store(true, Ordering::Relaxed);
            tracing::error!(
                plugin = %self.sandbox.name(),
                faults = self.recent_faults.len(),
                window_ms = self.config.fault_window.as_millis() as u64,
                "policy plugin disabled after repeated faults; the built-in default policy decides until the plugin is replaced"
            );
            return VerdictSource::Fallback(kind);
        }
        if !self.sandbox.is_live() || kind == FaultKind::Contract {
            match self.sandbox.restart() {
                Ok(()) => {
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                }
                Err(restart_fault) => {
                    tracing::warn!(
                        plugin = %self.sandbox.name(),
                        fault = %restart_fault.kind,
                        detail = %restart_fault.detail,
                        "policy plugin could not be restarted; will retry on the next call"
                    );
                }
            }
        }
        VerdictSource::Fallback(kind)
    }
}

//! The limits a policy plugin runs under, and the store limiter that enforces
//! the memory part while recording that it did (memory exhaustion surfaces as
//! a plain error, not a `wasmtime::Trap`, so faults are classified on this
//! record rather than on the error's type).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Caps for one plugin instance. Defaults suit a policy that scores tens of
/// thousands of sessions per call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// Budget of one `assess`, `on-events` or `select-evictions` call, in
    /// the calling thread's CPU time: a call the machine keeps off the CPU
    /// is not charged for it, up to four times the budget in wall-clock
    /// time (`crate::watchdog`). Default 20 ms.
    #[serde(rename = "call_deadline_ms", with = "millis")]
    pub call_deadline: Duration,
    /// Sessions per `assess` call at most; a larger batch is split into
    /// several calls, each under the call deadline. Unset (or 0): measured
    /// from the plugin's own cost per session, so a CPython or
    /// SpiderMonkey plugin gets batches that fit its deadline
    /// (`crate::batching`). Default unset.
    pub max_batch_sessions: Option<usize>,
    /// Budget of instantiation plus `configure`, which may build tables.
    /// Default 1 000 ms.
    #[serde(rename = "init_deadline_ms", with = "millis")]
    pub init_deadline: Duration,
    /// Linear memory, all memories together, bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Core instances. A Rust `wasm32-wasip2` component uses several (its
    /// module plus adapter shims), so this is a sanity cap, not one. Default 32.
    pub instances: usize,
    /// Tables. Default 32.
    pub tables: usize,
    /// Elements per table. Default 100 000.
    pub table_elements: usize,
    /// Linear memories. Default 8.
    pub memories: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            call_deadline: Duration::from_millis(20),
            max_batch_sessions: None,
            init_deadline: Duration::from_millis(1_000),
            memory_bytes: 64 << 20,
            instances: 32,
            tables: 32,
            table_elements: 100_000,
            memories: 8,
        }
    }
}

impl SandboxLimits {
    /// These limits with the settings in `overrides` (a JSON object of the
    /// same keys as `[policy.limits]`) written over them: how the admin API
    /// gives one plugin limits of its own.
    pub fn with_overrides(&self, overrides: &str) -> Result<SandboxLimits, String> {
        let overrides: serde_json::Value = serde_json::from_str(overrides)
            .map_err(|error| format!("limits must be a JSON object: {error}"))?;
        let serde_json::Value::Object(overrides) = overrides else {
            return Err("limits must be a JSON object".to_owned());
        };
        let mut merged = serde_json::to_value(self).map_err(|error| error.to_string())?;
        if let serde_json::Value::Object(merged) = &mut merged {
            merged.extend(overrides);
        }
        let limits: SandboxLimits =
            serde_json::from_value(merged).map_err(|error| format!("limits: {error}"))?;
        limits.validate()?;
        Ok(limits)
    }

    /// What the types alone cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if self.call_deadline.is_zero() || self.init_deadline.is_zero() {
            return Err("deadlines must be above 0 ms".to_owned());
        }
        if self.memory_bytes < (1 << 20) {
            return Err("memory_bytes must be at least 1 MiB (1048576); a wasm32-wasip2 component needs more than a few pages".to_owned());
        }
        Ok(())
    }
}

/// `serde(with = "millis")`: a setting written in ms, held as a `Duration`.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }
}

/// Enforces [`SandboxLimits`] on a store and remembers whether the memory cap
/// was what stopped the guest.
pub(crate) struct Limiter {
    inner: StoreLimits,
    memory_limit_hit: bool,
}

impl Limiter {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        Limiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(limits.instances)
                .tables(limits.tables)
                .table_elements(limits.table_elements)
                .memories(limits.memories)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit_hit: false,
        }
    }

    pub(crate) fn memory_limit_hit(&self) -> bool {
        self.memory_limit_hit
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_limit_hit = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_limit_hit = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

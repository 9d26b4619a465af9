//! The limits a policy plugin runs under, and the store limiter that enforces
//! the memory part while recording that it did (memory exhaustion surfaces as
//! a plain error, not a `wasmtime::Trap`, so faults are classified on this
//! record rather than on the error's type).

use std::time::Duration;

use serde::Deserialize;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Caps for one plugin instance. Defaults suit a policy that scores tens of
/// thousands of sessions per call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// Wall-clock budget of one `assess`, `on-events` or `select-evictions`
    /// call. Default 20 ms.
    #[serde(rename = "call_deadline_ms", with = "millis")]
    pub call_deadline: Duration,
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
            init_deadline: Duration::from_millis(1_000),
            memory_bytes: 64 << 20,
            instances: 32,
            tables: 32,
            table_elements: 100_000,
            memories: 8,
        }
    }
}

/// `serde(with = "millis")`: a setting written in ms, held as a `Duration`.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
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

//! How a plugin call can fail, as the sandbox classifies it and the
//! supervisor, metrics and reports name it.

use std::fmt;

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Ran past its deadline and was interrupted.
    Deadline,
    /// Tried to grow memory past its cap.
    MemoryLimit,
    /// Overflowed its stack.
    StackOverflow,
    /// Trapped: a panic (`unreachable`), an out-of-bounds access, ...
    Trap,
    /// Failed in the host's bindings (e.g. a malformed string or list).
    Error,
    /// Answered, but broke the contract (see [`crate::contract`]).
    Contract,
    /// A fresh instance refused the configuration the plugin loaded with.
    Config,
    /// No instance could be started to take the call.
    NotRunning,
}

impl FaultKind {
    /// Every kind, in a fixed order (the order of [`PolicyStats`]' counters).
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Deadline,
        FaultKind::MemoryLimit,
        FaultKind::StackOverflow,
        FaultKind::Trap,
        FaultKind::Error,
        FaultKind::Contract,
        FaultKind::Config,
        FaultKind::NotRunning,
    ];

    /// The name used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::StackOverflow => "stack-overflow",
            FaultKind::Trap => "trap",
            FaultKind::Error => "error",
            FaultKind::Contract => "contract",
            FaultKind::Config => "config",
            FaultKind::NotRunning => "not-running",
        }
    }

    pub(crate) fn index(self) -> usize {
        FaultKind::ALL
            .iter()
            .position(|kind| *kind == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed guest call, classified.
#[derive(Debug, Clone)]
pub struct CallFault {
    /// What went wrong.
    pub kind: FaultKind,
    /// Wasmtime's error chain, for the log.
    pub detail: String,
}

impl fmt::Display for CallFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

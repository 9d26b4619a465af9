//! Validating a candidate plugin before it may replace the running one:
//! compile, instantiate, `configure`, then a dry run of `assess` on a
//! snapshot of the current sessions (and on an empty batch). Any fault,
//! deadline overrun or contract violation rejects it with the reason; the
//! running policy is never touched by a rejected candidate.
//!
//! Validation runs guest code, so it runs on a thread of its own, never on a
//! tokio worker (see [`super::sandbox`]).

use std::time::{Duration, Instant};

use crate::columns::SessionColumns;

use super::contract::{self, ContractViolation};
use super::limits::SandboxLimits;
use super::sandbox::{CallFault, LoadError, PluginSource, PolicyEngine, Sandbox};

/// Why a candidate was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RejectedCandidate {
    /// It did not load (not a component, wrong world, refused config, ...).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The dry run faulted or overran its deadline.
    #[error("policy plugin {name} faulted in its dry run on {sessions} sessions: {fault}")]
    DryRunFault {
        /// The candidate's name.
        name: String,
        /// Sessions in the dry-run batch.
        sessions: usize,
        /// How it failed.
        fault: CallFault,
    },
    /// The dry run's answer broke the contract.
    #[error("policy plugin {name} broke the contract in its dry run on {sessions} sessions: {violation}")]
    DryRunContract {
        /// The candidate's name.
        name: String,
        /// Sessions in the dry-run batch.
        sessions: usize,
        /// How.
        violation: ContractViolation,
    },
    /// The validation thread could not run.
    #[error("cannot validate the candidate: {0}")]
    Internal(String),
}

/// A candidate that passed, ready to be supervised and swapped in.
pub struct Validated {
    /// The loaded, configured, dry-run plugin.
    pub sandbox: Sandbox,
    /// Time from receiving the bytes to a validated candidate.
    pub validation_time: Duration,
    /// Sessions in the dry run.
    pub dry_run_sessions: usize,
}

/// Loads `source` and dry-runs it on `snapshot` (the current sessions' facts).
pub fn validate(
    engine: &PolicyEngine,
    source: &PluginSource,
    config_json: &str,
    limits: SandboxLimits,
    now_ms: u64,
    snapshot: &SessionColumns,
) -> Result<Validated, RejectedCandidate> {
    let started = Instant::now();
    let mut sandbox = Sandbox::load(engine, source, config_json, limits)?;
    let name = sandbox.name().to_string();
    for batch in [&SessionColumns::new(), snapshot] {
        let verdicts =
            sandbox
                .assess(now_ms, batch)
                .map_err(|fault| RejectedCandidate::DryRunFault {
                    name: name.clone(),
                    sessions: batch.len(),
                    fault,
                })?;
        contract::check_verdicts(batch.ids(), &verdicts).map_err(|violation| {
            RejectedCandidate::DryRunContract {
                name: name.clone(),
                sessions: batch.len(),
                violation,
            }
        })?;
    }
    Ok(Validated {
        sandbox,
        validation_time: started.elapsed(),
        dry_run_sessions: snapshot.len(),
    })
}

/// [`validate`] on a thread of its own, awaitable from async code.
pub async fn validate_off_runtime(
    engine: PolicyEngine,
    source: PluginSource,
    config_json: String,
    limits: SandboxLimits,
    now_ms: u64,
    snapshot: SessionColumns,
) -> Result<Validated, RejectedCandidate> {
    crate::thread::on_own_thread("vigil-validate", move || {
        validate(&engine, &source, &config_json, limits, now_ms, &snapshot)
    })
    .await
    .map_err(|gone| RejectedCandidate::Internal(gone.to_string()))?
}

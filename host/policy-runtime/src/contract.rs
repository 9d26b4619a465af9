//! What a plugin's answers must satisfy before the host acts on them. A
//! violation is a fault like a trap: the batch gets fallback verdicts.

use std::collections::HashSet;

use crate::columns::VerdictColumns;
use crate::fault::{CallFault, FaultKind};
use vigil_policy_sdk::{action_code, is_valid_close_code, SessionId, MAX_CLOSE_REASON_BYTES};

/// A broken promise of the `vigil:policy` contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractViolation {
    /// `assess` must answer every session exactly once.
    #[error("assess returned {got} verdicts for a batch of {expected} sessions")]
    VerdictCount {
        /// Sessions in the batch.
        expected: usize,
        /// Verdicts returned.
        got: usize,
    },
    /// A verdict for a session that was not in the batch.
    #[error("verdict for session {0}, which is not in the batch")]
    UnknownSession(SessionId),
    /// Two verdicts for one session.
    #[error("more than one verdict for session {0}")]
    DuplicateVerdict(SessionId),
    /// Health is 0..=100.
    #[error("health {health} for session {session} is outside 0..=100")]
    HealthOutOfRange {
        /// The session.
        session: SessionId,
        /// What the plugin said.
        health: u8,
    },
    /// A close code a server may not or should not send.
    #[error("close code {code} for session {session} is not allowed (use 1000, 1001, 1008, 1011, 1013 or 3000..=4999)")]
    InvalidCloseCode {
        /// The session.
        session: SessionId,
        /// What the plugin said.
        code: u16,
    },
    /// The reason must fit a close frame and name something.
    #[error("eviction reason for session {session} is {len} bytes; it must be 1..={MAX_CLOSE_REASON_BYTES}")]
    InvalidReason {
        /// The session.
        session: SessionId,
        /// Its length in bytes.
        len: usize,
    },
    /// The columns of a `verdict-batch` must all be as long as `session`.
    #[error("assess answered {sessions} sessions but {got} values in its `{column}` column; every column of a verdict-batch has one value per session")]
    RaggedVerdicts {
        /// The first column found of another length.
        column: &'static str,
        /// Its length.
        got: usize,
        /// The length of the `session` column.
        sessions: usize,
    },
    /// A `tier` or `action` code the contract does not define.
    #[error("the verdict for session {session} has {code} in its `{column}` column, which is no code the contract defines")]
    UnknownCode {
        /// `tier` or `action`.
        column: &'static str,
        /// The session.
        session: SessionId,
        /// The code it gave.
        code: u8,
    },
    /// An eviction's `reason-index` must point into `reasons`.
    #[error("eviction of session {session} names reason {index}, but the answer lists {reasons} reasons")]
    UnknownReason {
        /// The session.
        session: SessionId,
        /// The index it gave.
        index: u32,
        /// How many reasons the answer listed.
        reasons: usize,
    },
    /// `select-evictions` may name at most `excess` sessions.
    #[error("select-evictions returned {got} sessions for an excess of {excess}")]
    TooManyEvictions {
        /// What the host asked for.
        excess: u32,
        /// What the plugin returned.
        got: usize,
    },
    /// `select-evictions` named a session more than once.
    #[error("select-evictions named session {0} more than once")]
    DuplicateEviction(SessionId),
    /// `select-evictions` named a session that was not offered.
    #[error("select-evictions named session {0}, which was not offered")]
    UnknownEviction(SessionId),
}

impl From<ContractViolation> for CallFault {
    /// A broken promise is a fault of kind [`FaultKind::Contract`], told
    /// in the violation's own words.
    fn from(violation: ContractViolation) -> Self {
        CallFault {
            kind: FaultKind::Contract,
            detail: violation.to_string(),
        }
    }
}

/// Checks an `assess` answer against the ids of its batch. (Codes and
/// reason indices were checked as the answer was read: [`VerdictColumns`]
/// holds no other.)
pub fn check_verdicts(
    sessions: &[SessionId],
    verdicts: &VerdictColumns,
) -> Result<(), ContractViolation> {
    if verdicts.len() != sessions.len() {
        return Err(ContractViolation::VerdictCount {
            expected: sessions.len(),
            got: verdicts.len(),
        });
    }
    check_values(verdicts)?;
    // Plugins usually answer in batch order: check that in one pass, and only
    // build a set when the order differs.
    if sessions == verdicts.sessions() {
        return Ok(());
    }
    let batch: HashSet<SessionId> = sessions.iter().copied().collect();
    let mut answered = HashSet::with_capacity(verdicts.len());
    for &session in verdicts.sessions() {
        if !batch.contains(&session) {
            return Err(ContractViolation::UnknownSession(session));
        }
        if !answered.insert(session) {
            return Err(ContractViolation::DuplicateVerdict(session));
        }
    }
    Ok(())
}

/// Health in range, and every eviction's close code and reason fit for a
/// close frame; column by column, the eviction checks only where a row
/// evicts.
fn check_values(verdicts: &VerdictColumns) -> Result<(), ContractViolation> {
    if let Some(row) = verdicts.health.iter().position(|health| *health > 100) {
        return Err(ContractViolation::HealthOutOfRange {
            session: verdicts.session[row],
            health: verdicts.health[row],
        });
    }
    let evictions = verdicts
        .action
        .iter()
        .enumerate()
        .filter(|(_, action)| **action == action_code::EVICT)
        .map(|(row, _)| row);
    for row in evictions {
        let session = verdicts.session[row];
        let code = verdicts.close_code[row];
        if !is_valid_close_code(code) {
            return Err(ContractViolation::InvalidCloseCode { session, code });
        }
        let len = verdicts
            .reasons
            .get(verdicts.reason_index[row] as usize)
            .map_or(0, |reason| reason.len());
        if len == 0 || len > MAX_CLOSE_REASON_BYTES {
            return Err(ContractViolation::InvalidReason { session, len });
        }
    }
    Ok(())
}

/// Checks a `select-evictions` answer against what was offered.
pub fn check_evictions(
    sessions: &[SessionId],
    excess: u32,
    chosen: &[SessionId],
) -> Result<(), ContractViolation> {
    if chosen.len() > excess as usize {
        return Err(ContractViolation::TooManyEvictions {
            excess,
            got: chosen.len(),
        });
    }
    let offered: HashSet<SessionId> = sessions.iter().copied().collect();
    let mut seen = HashSet::with_capacity(chosen.len());
    for &id in chosen {
        if !offered.contains(&id) {
            return Err(ContractViolation::UnknownEviction(id));
        }
        if !seen.insert(id) {
            return Err(ContractViolation::DuplicateEviction(id));
        }
    }
    Ok(())
}

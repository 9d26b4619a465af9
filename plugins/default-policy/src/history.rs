//! What the default policy learns from events: each session's RTT baseline.
//!
//! A hint only. It is lost on swap, fault recovery or restart, and the policy
//! then judges RTT against its absolute limit alone until pongs rebuild it.

use rustc_hash::FxHashMap;

use vigil_policy_sdk::{Event, EventKind, SessionId};

/// Sessions tracked at most; beyond this new sessions get no baseline, so a
/// flood of connections cannot grow plugin memory without bound.
const MAX_TRACKED_SESSIONS: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct History {
    /// Exponentially weighted mean of pong RTTs (weight 1/8, as TCP's SRTT).
    /// Keyed with Fx, not SipHash: the keys are the host's own sequential
    /// ids, which no client chooses, so a keyed hash would buy no protection
    /// here, only cost, on every pong and every assessment.
    rtt_baseline_ms: FxHashMap<SessionId, u32>,
}

impl History {
    pub(crate) fn record(&mut self, events: &[Event]) {
        for event in events {
            match &event.kind {
                EventKind::PongReceived { session, rtt_ms } => {
                    let tracked = self.rtt_baseline_ms.len();
                    match self.rtt_baseline_ms.get_mut(session) {
                        Some(mean) => {
                            *mean = ((u64::from(*mean) * 7 + u64::from(*rtt_ms)) / 8) as u32
                        }
                        None if tracked < MAX_TRACKED_SESSIONS => {
                            self.rtt_baseline_ms.insert(*session, *rtt_ms);
                        }
                        None => {}
                    }
                }
                EventKind::Removed { session, .. } | EventKind::TransportError { session, .. } => {
                    self.rtt_baseline_ms.remove(session);
                }
                _ => {}
            }
        }
    }

    pub(crate) fn rtt_baseline_ms(&self, session: SessionId) -> Option<u32> {
        if self.rtt_baseline_ms.is_empty() {
            return None;
        }
        self.rtt_baseline_ms.get(&session).copied()
    }
}

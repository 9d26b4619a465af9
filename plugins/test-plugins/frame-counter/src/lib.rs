//! A policy that counts the data frames the host reports for each session
//! (`frame-received` and `frame-sent` events of kind text or binary) and
//! shows the counts as the session's health: `10 × sent + received`, capped
//! at 100. So a test reads, through `GET /sessions`, which frame events the
//! host emitted. It never evicts, and re-assesses every 100 ms.

use std::collections::HashMap;

use vigil_policy_sdk::{
    Action, Event, EventKind, FrameKind, Policy, SessionFacts, SessionId, Tier, Verdict,
};

#[derive(Default)]
struct FrameCounter {
    /// (sent, received) data frames by session.
    frames: HashMap<SessionId, (u32, u32)>,
}

fn is_data(kind: FrameKind) -> bool {
    matches!(kind, FrameKind::Text | FrameKind::Binary)
}

impl Policy for FrameCounter {
    fn configure(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }

    fn on_events(&mut self, events: &[Event]) {
        for event in events {
            match &event.kind {
                EventKind::FrameSent { session, kind, .. } if is_data(*kind) => {
                    self.frames.entry(*session).or_default().0 += 1;
                }
                EventKind::FrameReceived { session, kind, .. } if is_data(*kind) => {
                    self.frames.entry(*session).or_default().1 += 1;
                }
                EventKind::Removed { session, .. } => {
                    self.frames.remove(session);
                }
                _ => {}
            }
        }
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        sessions
            .iter()
            .map(|facts| {
                let (sent, received) = self.frames.get(&facts.id).copied().unwrap_or_default();
                Verdict {
                    session: facts.id,
                    health: (sent.saturating_mul(10).saturating_add(received)).min(100) as u8,
                    tier: Tier::Regular,
                    action: Action::Keep,
                    reassess_in_ms: 100,
                }
            })
            .collect()
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId> {
        vigil_policy_sdk::first_by_rank(sessions, excess, |facts| facts.id)
    }
}

vigil_policy_sdk::export_policy!(FrameCounter);

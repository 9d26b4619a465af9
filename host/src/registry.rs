//! The session registry: every live session by id, and by client identity so
//! a reconnecting client supersedes its dead twin. Sharded maps, so the
//! message path never takes a global lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use vigil_policy_sdk::SessionId;

use crate::schedule::Schedule;
use crate::session::Session;

/// Live sessions.
pub struct Registry {
    sessions: DashMap<SessionId, Arc<Session>>,
    identities: DashMap<String, SessionId>,
    next_id: AtomicU64,
    schedule: Schedule,
    /// The zero of the schedule's clock.
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            sessions: DashMap::new(),
            identities: DashMap::new(),
            next_id: AtomicU64::new(0),
            schedule: Schedule::default(),
            epoch: Instant::now(),
        }
    }
}

impl Registry {
    /// A fresh id; ids are never reused while the process runs.
    pub fn next_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a session. Returns the session it supersedes: an earlier one with
    /// the same identity, which the caller must evict.
    pub fn insert(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let twin = session
            .identity
            .as_ref()
            .and_then(|identity| self.identities.insert(identity.clone(), session.id))
            .and_then(|old| {
                self.sessions
                    .get(&old)
                    .map(|entry| Arc::clone(entry.value()))
            });
        let slot = self.schedule.insert(session.id);
        session.slot.store(slot, Ordering::Release);
        self.sessions.insert(session.id, session);
        twin
    }

    /// Records when the tick must next look at `session` (`None`: now).
    /// Called under the session's lock, so the latest state's answer wins.
    pub(crate) fn set_due(&self, session: &Session, due: Option<Instant>) {
        let due_ms = due.map_or(0, |due| {
            due.saturating_duration_since(self.epoch).as_millis() as u64
        });
        self.schedule
            .set_due(session.slot.load(Ordering::Acquire), session.id, due_ms);
    }

    /// The sessions due at `now`, appended to `due`.
    pub(crate) fn collect_due(&self, now: Instant, due: &mut Vec<SessionId>) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.schedule.collect_due(now_ms, due);
    }

    /// Removes a session; `None` if it was already gone (so only the first
    /// remover counts it).
    pub fn remove(&self, id: SessionId) -> Option<Arc<Session>> {
        let (_, session) = self.sessions.remove(&id)?;
        self.schedule
            .remove(session.slot.load(Ordering::Acquire), session.id);
        if let Some(identity) = &session.identity {
            self.identities.remove_if(identity, |_, owner| *owner == id);
        }
        Some(session)
    }

    /// A live session.
    pub fn get(&self, id: SessionId) -> Option<Arc<Session>> {
        self.sessions
            .get(&id)
            .map(|entry| Arc::clone(entry.value()))
    }

    /// The live session of a client identity.
    pub fn by_identity(&self, identity: &str) -> Option<Arc<Session>> {
        let id = *self.identities.get(identity)?.value();
        self.get(id)
    }

    /// Live sessions now.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Visits every live session (one shard locked at a time, briefly).
    pub fn for_each(&self, mut visit: impl FnMut(&Arc<Session>)) {
        for entry in self.sessions.iter() {
            visit(entry.value());
        }
    }

    /// Every live session, cloned out of the map.
    pub fn snapshot(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }
}

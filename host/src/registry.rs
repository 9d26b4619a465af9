//! The session registry: every live session by id, and by client identity so
//! a reconnecting client supersedes its dead twin. Sharded maps, so the
//! message path never takes a global lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use vigil_policy_sdk::SessionId;

use crate::session::Session;

/// Live sessions.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<SessionId, Arc<Session>>,
    identities: DashMap<String, SessionId>,
    next_id: AtomicU64,
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
        self.sessions.insert(session.id, session);
        twin
    }

    /// Removes a session; `None` if it was already gone (so only the first
    /// remover counts it).
    pub fn remove(&self, id: SessionId) -> Option<Arc<Session>> {
        let (_, session) = self.sessions.remove(&id)?;
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

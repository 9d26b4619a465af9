//! The session registry: every live session by id, and by client identity so
//! a reconnecting client supersedes its dead twin. Sharded maps, so the
//! message path never takes a global lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use vigil_policy_runtime::SessionId;

use crate::core::config::TiersConfig;
use crate::core::prefetch::prefetch_shared;
use crate::core::schedule::{Schedule, ScheduleFull};
use crate::core::session::state::SessionState;
use crate::core::session::Session;

/// Why the registry refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It claimed, without proof, an identity another session proved.
    #[error("an unproven claim to an identity another session proved")]
    IdentityTaken,
    /// No room in the schedule (more sessions than a process can hold open).
    #[error(transparent)]
    Full(#[from] ScheduleFull),
}

/// Live sessions.
pub struct Registry {
    sessions: DashMap<SessionId, Arc<Session>>,
    /// Identity to (holder, whether the holder proved it).
    identities: DashMap<String, (SessionId, bool)>,
    next_id: AtomicU64,
    schedule: Schedule<Arc<Session>>,
    /// The zero of the schedule's clock.
    epoch: Instant,
    /// Pong timeouts by tier, for due times.
    tiers: TiersConfig,
}

impl Registry {
    /// An empty registry for sessions timed by `tiers`.
    pub fn new(tiers: TiersConfig) -> Self {
        Registry {
            sessions: DashMap::new(),
            identities: DashMap::new(),
            next_id: AtomicU64::new(0),
            schedule: Schedule::default(),
            epoch: Instant::now(),
            tiers,
        }
    }

    /// Starts ids above `base`, so a node that restarts under the same name
    /// never reuses an id of its earlier life (cluster mode: a late
    /// message naming an old session cannot hit a new one).
    pub fn start_ids_above(&self, base: SessionId) {
        self.next_id.fetch_max(base, Ordering::Relaxed);
    }

    /// A fresh id; ids are never reused while the process runs.
    pub fn next_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether `identity` is held by a session that proved it, so an
    /// unproven claim to it must be refused.
    pub fn held_proven(&self, identity: &str) -> bool {
        self.identities
            .get(identity)
            .is_some_and(|holder| holder.value().1)
    }

    /// Adds a session. Returns the session it supersedes — an earlier one
    /// with the same identity, which the caller must evict — or refuses it
    /// (`Err`) when it merely claims an identity another session proved, or
    /// when the schedule is full.
    pub fn insert(&self, session: Arc<Session>) -> Result<Option<Arc<Session>>, Refused> {
        let slot = self.schedule.insert(session.id, Arc::clone(&session))?;
        let mut twin = None;
        if let Some(identity) = &session.identity {
            match self.identities.entry(identity.clone()) {
                dashmap::Entry::Occupied(mut holder) => {
                    let (old, proven) = *holder.get();
                    if proven && !session.identity_proven {
                        self.schedule.remove(slot, session.id);
                        return Err(Refused::IdentityTaken);
                    }
                    holder.insert((session.id, session.identity_proven));
                    twin = self
                        .sessions
                        .get(&old)
                        .map(|entry| Arc::clone(entry.value()));
                }
                dashmap::Entry::Vacant(vacant) => {
                    vacant.insert((session.id, session.identity_proven));
                }
            }
        }
        session.slot.store(slot, Ordering::Release);
        self.sessions.insert(session.id, session);
        Ok(twin)
    }

    /// Changes `session`'s state with `change`, then records when the tick
    /// must next look at it, under the same lock, so the latest state's
    /// answer always wins. The schedule's one rule — a due time may be
    /// early, never late — is kept here and nowhere else.
    pub(crate) fn update<R>(
        &self,
        session: &Session,
        change: impl FnOnce(&mut SessionState) -> R,
    ) -> R {
        let mut state = session.lock();
        let result = change(&mut state);
        let pong_timeout = self.tiers.timing(state.tier()).pong_timeout();
        self.set_due(session, state.next_due(pong_timeout));
        result
    }

    fn set_due(&self, session: &Session, due: Option<Instant>) {
        let due_ms = due.map_or(0, |due| self.ms(due));
        self.schedule
            .set_due(session.slot.load(Ordering::Acquire), session.id, due_ms);
    }

    /// The sessions due at `now`, appended to `due`; the earliest due time
    /// after `now`, if any.
    pub(crate) fn collect_due(&self, now: Instant, due: &mut Vec<Arc<Session>>) -> Option<Instant> {
        let next = self
            .schedule
            .collect_due(self.ms(now), due, |session| prefetch_shared(session, 1));
        (next != u64::MAX).then(|| self.epoch + Duration::from_millis(next))
    }

    /// The schedule, for the tick's sleep between ticks.
    pub(crate) fn schedule(&self) -> &Schedule<Arc<Session>> {
        &self.schedule
    }

    /// The tick goes to sleep until `planned`; when it should wake, which
    /// is earlier if a due time written since is ([`Schedule::sleep_until`]).
    pub(crate) fn sleep_until(&self, planned: Instant) -> Instant {
        self.epoch + Duration::from_millis(self.schedule.sleep_until(self.ms(planned)))
    }

    /// `at` on the schedule's clock, ms.
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Removes a session; `None` if it was already gone (so only the first
    /// remover counts it).
    pub fn remove(&self, id: SessionId) -> Option<Arc<Session>> {
        let (_, session) = self.sessions.remove(&id)?;
        self.schedule
            .remove(session.slot.load(Ordering::Acquire), session.id);
        if let Some(identity) = &session.identity {
            self.identities
                .remove_if(identity, |_, (owner, _)| *owner == id);
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
        let id = self.identities.get(identity)?.value().0;
        self.get(id)
    }

    /// Live sessions now.
    pub fn len(&self) -> usize {
        self.sessions.len()
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

//! When each session next needs the shared tick, in one dense table: the
//! tick scans a few bytes per session to find the due ones, and only those
//! have their state locked and looked at. Visiting every session's state
//! ten times a second costs a cache miss or three each — at 19 000 idle
//! sessions, most of the host's idle CPU (BENCHMARKS.md).
//!
//! A due time is a hint that may be early, never late: it is written under
//! the session's lock whenever something changes when the session next needs
//! the tick (the tick's own visit, a verdict, news the policy must hear), so
//! a later write always reflects the latest state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use vigil_policy_runtime::SessionId;

/// Marks a free slot (session ids start at 1).
const FREE: u64 = 0;

/// One session's entry.
#[derive(Default)]
struct Entry {
    id: AtomicU64,
    due_ms: AtomicU64,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Entry>,
    free: Vec<usize>,
}

/// Due times by slot. Slots are reused once their session is removed.
#[derive(Default)]
pub struct Schedule {
    slots: RwLock<Slots>,
}

impl Schedule {
    /// A slot for `id`, due at once.
    pub fn insert(&self, id: SessionId) -> usize {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.entries.push(Entry::default());
                slots.entries.len() - 1
            }
        };
        let entry = &slots.entries[slot];
        entry.due_ms.store(0, Ordering::Relaxed);
        entry.id.store(id, Ordering::Release);
        slot
    }

    /// Frees `slot` if it still belongs to `id`.
    pub fn remove(&self, slot: usize, id: SessionId) {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let owned = slots
            .entries
            .get(slot)
            .is_some_and(|entry| entry.id.load(Ordering::Acquire) == id);
        if owned {
            slots.entries[slot].id.store(FREE, Ordering::Release);
            slots.free.push(slot);
        }
    }

    /// Sets when the session in `slot` is next due (host ms; 0 = now).
    pub fn set_due(&self, slot: usize, id: SessionId, due_ms: u64) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = slots.entries.get(slot) {
            if entry.id.load(Ordering::Acquire) == id {
                entry.due_ms.store(due_ms, Ordering::Release);
            }
        }
    }

    /// Appends to `due` every session due at `now_ms`.
    pub fn collect_due(&self, now_ms: u64, due: &mut Vec<SessionId>) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        for entry in &slots.entries {
            if entry.due_ms.load(Ordering::Acquire) <= now_ms {
                let id = entry.id.load(Ordering::Acquire);
                if id != FREE {
                    due.push(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_sessions_are_collected_and_slots_are_reused() {
        let schedule = Schedule::default();
        let a = schedule.insert(1);
        let b = schedule.insert(2);
        schedule.set_due(a, 1, 500);
        schedule.set_due(b, 2, 100);
        let mut due = Vec::new();
        schedule.collect_due(200, &mut due);
        assert_eq!(due, vec![2]);
        schedule.remove(b, 2);
        schedule.set_due(b, 2, 0); // a stale write to a freed slot does nothing
        due.clear();
        schedule.collect_due(1_000, &mut due);
        assert_eq!(due, vec![1]);
        let c = schedule.insert(3);
        assert_eq!(c, b, "the freed slot is reused");
        schedule.remove(a, 99); // not its owner
        due.clear();
        schedule.collect_due(1_000, &mut due);
        assert_eq!(due, vec![1, 3], "new sessions are due at once");
    }
}

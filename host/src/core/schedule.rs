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
//!
//! Each slot also holds its session's handle (`T`, an `Arc` in the host),
//! so the tick gets the due sessions themselves from the scan, without a
//! lookup by id in the registry's map for each.
//!
//! The schedule also tells the tick when to wake: between ticks the tick
//! sleeps until the earliest due time ([`Schedule::sleep_until`]), and a
//! write of an earlier one wakes it ([`Schedule::woken`]). An idle host
//! with nothing due does not wake ten times a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use tokio::sync::Notify;
use vigil_policy_runtime::SessionId;

/// Marks a free slot (session ids start at 1).
const FREE: u64 = 0;

/// One session's entry.
#[derive(Default)]
struct Entry {
    id: AtomicU64,
    due_ms: AtomicU64,
}

struct Slots<T> {
    entries: Vec<Entry>,
    /// Each slot's session, `None` while the slot is free.
    holders: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            holders: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// Due times by slot, and the session in each. Slots are reused once their
/// session is removed.
pub struct Schedule<T> {
    slots: RwLock<Slots<T>>,
    /// When the tick will wake unless woken (0 while it is awake: it will
    /// look at everything written anyway).
    sleeping_until_ms: AtomicU64,
    /// The earliest due time written since the tick last looked.
    earliest_written_ms: AtomicU64,
    wake: Notify,
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Schedule {
            slots: RwLock::default(),
            sleeping_until_ms: AtomicU64::new(0),
            earliest_written_ms: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }
}

impl<T: Clone> Schedule<T> {
    /// A slot for session `id`, held by `holder`, due at once.
    pub fn insert(&self, id: SessionId, holder: T) -> usize {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.entries.push(Entry::default());
                slots.holders.push(None);
                slots.entries.len() - 1
            }
        };
        slots.holders[slot] = Some(holder);
        let entry = &slots.entries[slot];
        entry.due_ms.store(0, Ordering::Relaxed);
        entry.id.store(id, Ordering::Release);
        drop(slots);
        self.wrote_due(0);
        slot
    }

    /// Wakes the tick if `due_ms` is before the time it sleeps until.
    fn wrote_due(&self, due_ms: u64) {
        // SeqCst pairs with `sleep_until`: either the tick sees this write's
        // time, or this write sees the tick's sleep and wakes it.
        self.earliest_written_ms.fetch_min(due_ms, Ordering::SeqCst);
        if due_ms < self.sleeping_until_ms.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Wakes the tick now, whatever is due (events piling up, inbound
    /// bytes held).
    pub fn wake_tick(&self) {
        self.wake.notify_one();
    }

    /// The tick is awake and about to look at everything.
    pub fn awake(&self) {
        self.sleeping_until_ms.store(0, Ordering::SeqCst);
        self.earliest_written_ms.store(u64::MAX, Ordering::SeqCst);
    }

    /// The tick goes to sleep until `at_ms` (the earliest due time its
    /// scan saw); returns when it should wake, which is earlier if a due
    /// time written since is.
    pub fn sleep_until(&self, at_ms: u64) -> u64 {
        self.sleeping_until_ms.store(at_ms, Ordering::SeqCst);
        at_ms.min(self.earliest_written_ms.load(Ordering::SeqCst))
    }

    /// Resolves when an earlier due time is written (or [`Self::wake_tick`]).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
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
            slots.holders[slot] = None;
            slots.free.push(slot);
        }
    }

    /// Sets when the session in `slot` is next due (host ms; 0 = now).
    pub fn set_due(&self, slot: usize, id: SessionId, due_ms: u64) {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = slots.entries.get(slot) {
            if entry.id.load(Ordering::Acquire) == id {
                entry.due_ms.store(due_ms, Ordering::Release);
            } else {
                return;
            }
        }
        drop(slots);
        self.wrote_due(due_ms);
    }

    /// Appends to `due` every session due at `now_ms`; returns the earliest
    /// due time after it (`u64::MAX` when nothing else is scheduled).
    pub fn collect_due(&self, now_ms: u64, due: &mut Vec<T>) -> u64 {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let mut next = u64::MAX;
        for (entry, holder) in slots.entries.iter().zip(&slots.holders) {
            let due_ms = entry.due_ms.load(Ordering::Acquire);
            let id = entry.id.load(Ordering::Acquire);
            if id == FREE {
                continue;
            }
            if due_ms <= now_ms {
                // Slots change only under the write lock this read excludes.
                if let Some(holder) = holder {
                    due.push(holder.clone());
                }
            } else {
                next = next.min(due_ms);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_sessions_are_collected_and_slots_are_reused() {
        let schedule = Schedule::<u64>::default();
        let a = schedule.insert(1, 1);
        let b = schedule.insert(2, 2);
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
        let c = schedule.insert(3, 3);
        assert_eq!(c, b, "the freed slot is reused");
        schedule.remove(a, 99); // not its owner
        due.clear();
        schedule.collect_due(1_000, &mut due);
        assert_eq!(due, vec![1, 3], "new sessions are due at once");
    }

    #[test]
    fn the_next_due_time_is_reported_and_an_earlier_write_wakes_the_tick() {
        let schedule = Schedule::<u64>::default();
        let a = schedule.insert(1, 1);
        let b = schedule.insert(2, 2);
        schedule.set_due(a, 1, 5_000);
        schedule.set_due(b, 2, 3_000);
        schedule.awake();
        let mut due = Vec::new();
        let next = schedule.collect_due(1_000, &mut due);
        assert!(due.is_empty());
        assert_eq!(next, 3_000);
        assert_eq!(schedule.sleep_until(next), 3_000);
        // A later write does not wake it; an earlier one does.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        runtime.block_on(async {
            schedule.set_due(a, 1, 4_000);
            let early =
                tokio::time::timeout(std::time::Duration::from_millis(20), schedule.woken()).await;
            assert!(early.is_err(), "a later due time woke the tick");
            schedule.set_due(a, 1, 2_000);
            let woken =
                tokio::time::timeout(std::time::Duration::from_millis(200), schedule.woken()).await;
            assert!(woken.is_ok(), "an earlier due time did not wake the tick");
        });
        // Written while awake: not a wake-up, but the next sleep is shorter.
        schedule.awake();
        schedule.set_due(b, 2, 1_500);
        assert_eq!(schedule.sleep_until(3_000), 1_500);
    }
}

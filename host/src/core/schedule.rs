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

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use tokio::sync::Notify;
use vigil_policy_runtime::SessionId;

/// Marks a free slot (session ids start at 1).
const FREE: u64 = 0;

/// Slots per chunk of the due table.
const CHUNK_SLOTS: usize = 4096;

/// Chunks at most: room for 16 Mi sessions, far more than one process can
/// hold open (each session holds a socket), in a table of 96 KiB.
const MAX_CHUNKS: usize = 4096;

/// One session's entry.
#[derive(Default)]
struct Entry {
    id: AtomicU64,
    due_ms: AtomicU64,
}

/// The schedule has no free slot: more sessions than [`MAX_CHUNKS`] chunks
/// hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the schedule holds {} sessions, its most", MAX_CHUNKS * CHUNK_SLOTS)]
pub struct ScheduleFull;

/// Who holds each slot, and which slots are free: changed only when a
/// session comes or goes, and read by the tick's scan.
struct Slots<T> {
    /// Each slot's session, `None` while the slot is free.
    holders: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            holders: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// Due times by slot, and the session in each. Slots are reused once their
/// session is removed.
pub struct Schedule<T> {
    /// The entries, in chunks that never move once made, so writing a due
    /// time takes no lock: it is written on every pong, visit and verdict,
    /// from every worker, and a lock there would be one cache line all of
    /// them write, several times a heartbeat.
    chunks: Box<[OnceLock<Box<[Entry]>>]>,
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
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            slots: RwLock::default(),
            sleeping_until_ms: AtomicU64::new(0),
            earliest_written_ms: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }
}

impl<T: Clone> Schedule<T> {
    /// `slot`'s entry, if its chunk was made.
    fn entry(&self, slot: usize) -> Option<&Entry> {
        self.chunks
            .get(slot / CHUNK_SLOTS)?
            .get()?
            .get(slot % CHUNK_SLOTS)
    }

    /// A slot for session `id`, held by `holder`, due at once.
    pub fn insert(&self, id: SessionId, holder: T) -> Result<usize, ScheduleFull> {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = slots.holders.len();
                let chunk = self.chunks.get(slot / CHUNK_SLOTS).ok_or(ScheduleFull)?;
                chunk.get_or_init(|| (0..CHUNK_SLOTS).map(|_| Entry::default()).collect());
                slots.holders.push(None);
                slot
            }
        };
        slots.holders[slot] = Some(holder);
        if let Some(entry) = self.entry(slot) {
            // The owner first, then the due time: a stale write racing
            // this one (see `set_due`) either lands before it or sees the
            // new owner.
            entry.id.store(id, Ordering::SeqCst);
            entry.due_ms.store(0, Ordering::SeqCst);
        }
        drop(slots);
        self.wrote_due(0);
        Ok(slot)
    }

    /// Wakes the tick if `due_ms` is before the time it sleeps until.
    fn wrote_due(&self, due_ms: u64) {
        // An earlier or equal time written since the tick last looked has
        // already woken it, or will be seen when it next sleeps: nothing
        // to add, and the shared line stays unwritten. (Between ticks
        // every pong writes "now".)
        if self.earliest_written_ms.load(Ordering::SeqCst) <= due_ms {
            return;
        }
        // SeqCst pairs with `sleep_until`: either the tick sees this write's
        // time, or this write sees the tick's sleep and wakes it.
        let earlier = self.earliest_written_ms.fetch_min(due_ms, Ordering::SeqCst);
        if due_ms < earlier && due_ms < self.sleeping_until_ms.load(Ordering::SeqCst) {
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
        // The scan that follows reads entries written before any write
        // that found `earliest_written_ms` already low and left it.
        fence(Ordering::SeqCst);
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
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if entry.id.load(Ordering::SeqCst) == id {
            entry.id.store(FREE, Ordering::SeqCst);
            slots.holders[slot] = None;
            slots.free.push(slot);
        }
    }

    /// Sets when the session in `slot` is next due (host ms; 0 = now).
    /// Lock-free: a write racing the slot's reuse by another session makes
    /// that session due at once, which is early, never late.
    pub fn set_due(&self, slot: usize, id: SessionId, due_ms: u64) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if entry.id.load(Ordering::SeqCst) != id {
            return;
        }
        entry.due_ms.store(due_ms, Ordering::SeqCst);
        if entry.id.load(Ordering::SeqCst) != id {
            // The slot changed hands meanwhile (`remove`, then `insert`
            // wrote the new owner before its due time): this write may
            // have landed on the new owner's entry.
            entry.due_ms.store(0, Ordering::SeqCst);
            self.wrote_due(0);
            return;
        }
        self.wrote_due(due_ms);
    }

    /// Appends to `due` every session due at `now_ms`; returns the earliest
    /// due time after it (`u64::MAX` when nothing else is scheduled).
    /// `ahead` is shown each due holder a few before it is cloned (a
    /// prefetch: cloning a holder that is an `Arc` writes its counts).
    pub fn collect_due(&self, now_ms: u64, due: &mut Vec<T>, ahead: impl Fn(&T)) -> u64 {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let mut next = u64::MAX;
        let mut due_slots = Vec::new();
        let chunks = self.chunks.iter().map_while(OnceLock::get);
        for (slot, entry) in chunks.flatten().take(slots.holders.len()).enumerate() {
            let due_ms = entry.due_ms.load(Ordering::Acquire);
            let id = entry.id.load(Ordering::Acquire);
            if id == FREE {
                continue;
            }
            if due_ms <= now_ms {
                due_slots.push(slot);
            } else {
                next = next.min(due_ms);
            }
        }
        // Holders change only under the write lock this read excludes.
        let holder = |slot: usize| slots.holders.get(slot).and_then(Option::as_ref);
        due.reserve(due_slots.len());
        for (position, &slot) in due_slots.iter().enumerate() {
            if let Some(later) = due_slots.get(position + crate::core::prefetch::AHEAD) {
                if let Some(later) = holder(*later) {
                    ahead(later);
                }
            }
            if let Some(holder) = holder(slot) {
                due.push(holder.clone());
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session `id`, held as its own id, in a fresh slot.
    fn inserted(schedule: &Schedule<u64>, id: u64) -> usize {
        schedule
            .insert(id, id)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn only_due_sessions_are_collected_and_slots_are_reused() {
        let schedule = Schedule::<u64>::default();
        let a = inserted(&schedule, 1);
        let b = inserted(&schedule, 2);
        schedule.set_due(a, 1, 500);
        schedule.set_due(b, 2, 100);
        let mut due = Vec::new();
        schedule.collect_due(200, &mut due, |_| {});
        assert_eq!(due, vec![2]);
        schedule.remove(b, 2);
        schedule.set_due(b, 2, 0); // a stale write to a freed slot does nothing
        due.clear();
        schedule.collect_due(1_000, &mut due, |_| {});
        assert_eq!(due, vec![1]);
        let c = inserted(&schedule, 3);
        assert_eq!(c, b, "the freed slot is reused");
        schedule.remove(a, 99); // not its owner
        due.clear();
        schedule.collect_due(1_000, &mut due, |_| {});
        assert_eq!(due, vec![1, 3], "new sessions are due at once");
    }

    #[test]
    fn the_next_due_time_is_reported_and_an_earlier_write_wakes_the_tick() {
        let schedule = Schedule::<u64>::default();
        let a = inserted(&schedule, 1);
        let b = inserted(&schedule, 2);
        schedule.set_due(a, 1, 5_000);
        schedule.set_due(b, 2, 3_000);
        schedule.awake();
        let mut due = Vec::new();
        let next = schedule.collect_due(1_000, &mut due, |_| {});
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

    #[test]
    fn a_write_for_a_slot_that_changed_hands_never_makes_the_new_owner_late() {
        let schedule = Schedule::<u64>::default();
        let slot = inserted(&schedule, 1);
        schedule.set_due(slot, 1, 9_000);
        schedule.remove(slot, 1);
        let reused = inserted(&schedule, 2);
        assert_eq!(reused, slot);
        // The old owner's late write is refused outright.
        schedule.set_due(slot, 1, 9_000);
        let mut due = Vec::new();
        schedule.collect_due(0, &mut due, |_| {});
        assert_eq!(due, vec![2], "the new owner is due at once, as inserted");
    }

    #[test]
    fn each_due_holder_but_the_first_few_is_shown_ahead_of_its_clone() {
        let schedule = Schedule::<u64>::default();
        for id in 1..=20 {
            let slot = inserted(&schedule, id);
            schedule.set_due(slot, id, if id % 2 == 0 { 100 } else { 5_000 });
        }
        let shown = std::cell::RefCell::new(Vec::new());
        let mut due = Vec::new();
        schedule.collect_due(200, &mut due, |id| shown.borrow_mut().push(*id));
        assert_eq!(due, (1..=10).map(|n| n * 2).collect::<Vec<u64>>());
        let ahead = crate::core::prefetch::AHEAD;
        assert_eq!(
            shown.into_inner(),
            due[ahead..].to_vec(),
            "every due holder {ahead} places on is shown, in order, and no other"
        );
    }

    #[test]
    fn slots_past_the_first_chunk_are_scheduled_too() {
        let schedule = Schedule::<u64>::default();
        let sessions = CHUNK_SLOTS as u64 + 10;
        for id in 1..=sessions {
            let slot = inserted(&schedule, id);
            schedule.set_due(slot, id, if id % 2 == 0 { 100 } else { 5_000 });
        }
        let mut due = Vec::new();
        let next = schedule.collect_due(200, &mut due, |_| {});
        assert_eq!(due.len() as u64, sessions / 2);
        assert!(due.iter().all(|id| id % 2 == 0));
        assert!(
            due.contains(&sessions),
            "the second chunk's sessions were missed"
        );
        assert_eq!(next, 5_000);
    }

    #[test]
    fn a_due_time_no_earlier_than_one_written_does_not_wake_the_tick_again() {
        let schedule = Schedule::<u64>::default();
        let a = inserted(&schedule, 1);
        let b = inserted(&schedule, 2);
        schedule.awake();
        schedule.set_due(a, 1, 5_000);
        schedule.set_due(b, 2, 5_000);
        let mut due = Vec::new();
        schedule.collect_due(1_000, &mut due, |_| {});
        schedule.sleep_until(5_000);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        runtime.block_on(async {
            let wait = std::time::Duration::from_millis(50);
            schedule.set_due(a, 1, 1_500);
            assert!(
                tokio::time::timeout(wait, schedule.woken()).await.is_ok(),
                "the earlier due time did not wake the tick"
            );
            schedule.set_due(b, 2, 1_500);
            assert!(
                tokio::time::timeout(wait, schedule.woken()).await.is_err(),
                "the same due time woke the tick a second time"
            );
        });
        assert_eq!(schedule.sleep_until(5_000), 1_500);
    }
}

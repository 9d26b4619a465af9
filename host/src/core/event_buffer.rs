//! Events on their way to the policy: added by every session's task as
//! things happen, handed over by the tick in one batch per tick.
//!
//! A vector under a lock rather than a channel: an idle session adds two
//! events a heartbeat (its ping sent, its pong received), from whichever
//! worker runs it, and the tick takes all of them at once. Adding is a lock,
//! a push and an unlock; taking swaps the whole vector out. A channel paid a
//! permit, a slot claim and a ready bit for each event, and the tick a
//! receive for each.

use std::sync::{Mutex, PoisonError};

use vigil_policy_runtime::Event;

/// What became of an added event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Buffered; `nearly_full` once three quarters of the capacity are
    /// used, so the caller can wake a sleeping tick to take them.
    Buffered { nearly_full: bool },
    /// Dropped: the buffer is full (the policy is slower than the events).
    Dropped,
}

/// Events buffered between ticks, up to a capacity; beyond it they are
/// dropped (the caller counts them) rather than grow memory while the
/// policy is slow.
pub(crate) struct EventBuffer {
    pending: Mutex<Vec<Event>>,
    capacity: usize,
}

impl EventBuffer {
    /// An empty buffer holding at most `capacity` events.
    pub(crate) fn new(capacity: usize) -> Self {
        EventBuffer {
            pending: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// Adds `event` unless the buffer is full.
    pub(crate) fn add(&self, event: Event) -> Added {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= self.capacity {
            return Added::Dropped;
        }
        pending.push(event);
        Added::Buffered {
            nearly_full: pending.len() >= self.capacity / 4 * 3,
        }
    }

    /// Every buffered event, oldest first; the buffer is left empty, with
    /// room for as many as were taken (the next tick's likely share).
    pub(crate) fn take(&self) -> Vec<Event> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let room = pending.len();
        // Allocating under the lock is rare: only when events came at all.
        if room == 0 {
            return Vec::new();
        }
        std::mem::replace(&mut *pending, Vec::with_capacity(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_policy_runtime::EventKind;

    fn tick_at(at_ms: u64) -> Event {
        Event {
            at_ms,
            kind: EventKind::Tick,
        }
    }

    #[test]
    fn events_come_out_in_order_and_the_buffer_starts_over_empty() {
        let buffer = EventBuffer::new(8);
        for at in 1..=3 {
            buffer.add(tick_at(at));
        }
        let taken: Vec<u64> = buffer.take().iter().map(|event| event.at_ms).collect();
        assert_eq!(taken, vec![1, 2, 3]);
        assert!(buffer.take().is_empty(), "taken events came out twice");
    }

    #[test]
    fn a_full_buffer_drops_and_says_when_it_is_nearly_full() {
        let buffer = EventBuffer::new(8);
        let added: Vec<Added> = (0..10).map(|at| buffer.add(tick_at(at))).collect();
        assert_eq!(added[4], Added::Buffered { nearly_full: false });
        assert_eq!(added[5], Added::Buffered { nearly_full: true });
        assert_eq!(&added[8..], &[Added::Dropped, Added::Dropped]);
        assert_eq!(buffer.take().len(), 8, "the first eight were kept");
        assert_eq!(
            buffer.add(tick_at(11)),
            Added::Buffered { nearly_full: false },
            "taking made room again"
        );
    }
}

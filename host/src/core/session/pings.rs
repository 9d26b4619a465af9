//! A session's pings waiting for their pongs, oldest first.
//!
//! A live client answers a ping within milliseconds, so nearly every session
//! has no ping in flight or one. The oldest is therefore kept inline, and
//! only a session that falls behind (two or more unanswered: a slow or dead
//! client) allocates room for the rest, which is released as soon as it
//! catches up. A plain `VecDeque` kept four slots' room from the first ping
//! on (144 bytes per idle session); releasing it after every pong instead
//! cost a malloc and a free per heartbeat, 6 % of the host's CPU at P = 5 s
//! (BENCHMARKS.md, issue 16, seventh part).

use std::collections::VecDeque;
use std::time::Instant;

/// Pings that may be in flight at once; the policy hears of the first overdue
/// one, more would only add noise.
pub(crate) const MAX_OUTSTANDING_PINGS: usize = 4;

/// A ping waiting for its pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PingInFlight {
    /// Its payload, to match the pong.
    pub(crate) sequence: u64,
    /// When the tick (or the policy) asked for it: the pong deadline runs
    /// from here, so it falls on a tick.
    pub(crate) requested: Instant,
    /// From the request to the session's task sending it, µs: taken off the
    /// round trip, which is the client's and the network's, not the host's
    /// scheduling.
    pub(crate) send_delay_us: u32,
    /// The tier's heartbeat (the tick's schedule), not a probe the policy
    /// asked for: its answer is news for the policy.
    pub(crate) heartbeat: bool,
}

/// A pong's match: the ping it answered, and whether it or any older ping
/// it settled was a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answered {
    pub(crate) ping: PingInFlight,
    pub(crate) heartbeat: bool,
}

/// Unanswered pings, oldest first, at most [`MAX_OUTSTANDING_PINGS`].
/// `later` is empty whenever `oldest` is `None`.
#[derive(Debug, Default)]
pub(crate) struct PingsInFlight {
    oldest: Option<PingInFlight>,
    later: VecDeque<PingInFlight>,
}

impl PingsInFlight {
    /// The oldest unanswered ping.
    pub(crate) fn front(&self) -> Option<&PingInFlight> {
        self.oldest.as_ref()
    }

    /// Unanswered pings.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.oldest.is_some()) + self.later.len()
    }

    /// True when every ping was answered.
    pub(crate) fn is_empty(&self) -> bool {
        self.oldest.is_none()
    }

    /// A ping just sent; the oldest goes when more than
    /// [`MAX_OUTSTANDING_PINGS`] are waiting.
    pub(crate) fn push(&mut self, ping: PingInFlight) {
        if self.oldest.is_none() {
            self.oldest = Some(ping);
            return;
        }
        self.later.push_back(ping);
        if self.len() > MAX_OUTSTANDING_PINGS {
            self.oldest = self.later.pop_front();
        }
    }

    /// Settles the ping whose payload was `sequence`, and every older one
    /// (a pong answers everything sent before its ping too); `None`, with
    /// nothing settled, when no waiting ping has that payload.
    pub(crate) fn answer(&mut self, sequence: u64) -> Option<Answered> {
        let oldest = self.oldest?;
        if oldest.sequence == sequence {
            self.oldest = self.later.pop_front();
            self.release_if_caught_up();
            return Some(Answered {
                ping: oldest,
                heartbeat: oldest.heartbeat,
            });
        }
        let position = self
            .later
            .iter()
            .position(|ping| ping.sequence == sequence)?;
        // The pings between `oldest` and the answered one are settled too
        // (the drain removes them all when dropped, wherever `any` stops).
        let settled_heartbeat = self
            .later
            .drain(..position)
            .any(|settled| settled.heartbeat);
        let ping = self.later.pop_front()?;
        self.oldest = self.later.pop_front();
        self.release_if_caught_up();
        Some(Answered {
            ping,
            heartbeat: oldest.heartbeat || settled_heartbeat || ping.heartbeat,
        })
    }

    /// Gives back the room for later pings once none is left in it.
    fn release_if_caught_up(&mut self) {
        if self.later.is_empty() && self.later.capacity() > 0 {
            self.later = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(sequence: u64, heartbeat: bool) -> PingInFlight {
        PingInFlight {
            sequence,
            requested: Instant::now(),
            send_delay_us: 0,
            heartbeat,
        }
    }

    fn sequences(pings: &PingsInFlight) -> Vec<u64> {
        pings
            .oldest
            .iter()
            .chain(pings.later.iter())
            .map(|ping| ping.sequence)
            .collect()
    }

    #[test]
    fn a_session_answering_each_ping_never_allocates() {
        let mut pings = PingsInFlight::default();
        for sequence in 0..100 {
            pings.push(ping(sequence, true));
            assert_eq!(pings.len(), 1);
            let answered = pings.answer(sequence);
            assert_eq!(answered.map(|a| a.ping.sequence), Some(sequence));
            assert!(pings.is_empty());
            assert_eq!(pings.later.capacity(), 0, "no room held for later pings");
        }
    }

    #[test]
    fn a_pong_settles_its_ping_and_every_older_one() {
        let mut pings = PingsInFlight::default();
        pings.push(ping(1, true));
        pings.push(ping(2, false));
        pings.push(ping(3, false));
        pings.push(ping(4, false));
        assert_eq!(pings.len(), 4);
        assert_eq!(pings.front().map(|p| p.sequence), Some(1));
        let answered = pings.answer(3).map(|a| (a.ping.sequence, a.heartbeat));
        assert_eq!(
            answered,
            Some((3, true)),
            "ping 1, settled with it, was a heartbeat"
        );
        assert_eq!(sequences(&pings), vec![4]);
        assert_eq!(
            pings.later.capacity(),
            0,
            "caught up: the room is given back"
        );
        // A pong for a ping already settled matches nothing and settles nothing.
        assert_eq!(pings.answer(2), None);
        assert_eq!(sequences(&pings), vec![4]);
        let last = pings.answer(4).map(|a| (a.ping.sequence, a.heartbeat));
        assert_eq!(
            last,
            Some((4, false)),
            "a probe's answer alone is no heartbeat"
        );
        assert!(pings.is_empty());
    }

    #[test]
    fn at_most_four_wait_and_the_oldest_goes_first() {
        let mut pings = PingsInFlight::default();
        for sequence in 1..=6 {
            pings.push(ping(sequence, false));
        }
        assert_eq!(pings.len(), MAX_OUTSTANDING_PINGS);
        assert_eq!(sequences(&pings), vec![3, 4, 5, 6]);
        assert_eq!(pings.answer(1), None, "dropped, so no longer matched");
        assert_eq!(pings.answer(6).map(|a| a.ping.sequence), Some(6));
        assert!(pings.is_empty());
    }

    #[test]
    fn the_oldest_answered_alone_leaves_the_next_oldest_in_front() {
        let mut pings = PingsInFlight::default();
        pings.push(ping(1, false));
        pings.push(ping(2, true));
        assert_eq!(pings.answer(1).map(|a| a.heartbeat), Some(false));
        assert_eq!(pings.front().map(|p| p.sequence), Some(2));
        assert_eq!(pings.len(), 1);
        assert_eq!(pings.later.capacity(), 0);
    }
}

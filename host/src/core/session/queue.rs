//! A session's outbound queue: bounded in bytes, with a soft mark above
//! which the policy hears of backpressure and a hard limit at which messages
//! are dropped and counted.

use std::collections::VecDeque;
use std::time::Instant;

use axum::extract::ws::Message;
use vigil_policy_runtime::{EventKind, FrameKind, SessionId};

/// Outcome of offering a message to a session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued behind nothing: goes out at once.
    Immediate,
    /// Queued behind earlier messages.
    Behind,
    /// Queued, and this message took the queue above the soft mark: the
    /// policy should hear of the backpressure (this many bytes queued).
    CrossedSoftMark(usize),
    /// The queue is at its hard limit: dropped and counted.
    Dropped,
    /// The session is closing: not queued.
    Closing,
}

impl Enqueued {
    /// Whether the message was accepted for delivery.
    pub fn accepted(self) -> bool {
        matches!(
            self,
            Enqueued::Immediate | Enqueued::Behind | Enqueued::CrossedSoftMark(_)
        )
    }

    /// Whether the policy must hear of it at the next tick.
    pub fn is_news(self) -> bool {
        matches!(self, Enqueued::CrossedSoftMark(_) | Enqueued::Dropped)
    }
}

/// Payload size of a data message, as queues count it.
pub fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

/// A frame's payload size, control frames included, as frame events report it.
pub(crate) fn frame_size(message: &Message) -> usize {
    match message {
        Message::Ping(payload) | Message::Pong(payload) => payload.len(),
        other => message_len(other),
    }
}

/// A frame's kind, as frame events report it.
pub(crate) fn frame_kind(message: &Message) -> FrameKind {
    match message {
        Message::Text(_) => FrameKind::Text,
        Message::Binary(_) => FrameKind::Binary,
        Message::Ping(_) => FrameKind::Ping,
        Message::Pong(_) => FrameKind::Pong,
        Message::Close(_) => FrameKind::Close,
    }
}

/// The event of `message` going out to `session` (when frame events are
/// on), whichever way it was written.
pub(crate) fn frame_sent(session: SessionId, message: &Message) -> EventKind {
    EventKind::FrameSent {
        session,
        kind: frame_kind(message),
        size_bytes: frame_size(message) as u32,
    }
}

/// Messages waiting to be written, and what the policy is told of them.
#[derive(Default)]
pub(crate) struct OutboundQueue {
    frames: VecDeque<Message>,
    bytes: usize,
    /// Since when the queue has been above the soft mark.
    backlog_since: Option<Instant>,
    /// Messages dropped at the hard limit, over the session's life.
    dropped: u32,
}

impl OutboundQueue {
    /// Queues `message` (`size` bytes) unless that would pass `hard`.
    pub(crate) fn offer(
        &mut self,
        message: Message,
        size: usize,
        soft: usize,
        hard: usize,
        now: Instant,
    ) -> Enqueued {
        if self.bytes.saturating_add(size) > hard {
            self.dropped = self.dropped.saturating_add(1);
            return Enqueued::Dropped;
        }
        let mut outcome = if self.frames.is_empty() {
            Enqueued::Immediate
        } else {
            Enqueued::Behind
        };
        self.frames.push_back(message);
        self.bytes += size;
        if self.bytes > soft && self.backlog_since.is_none() {
            self.backlog_since = Some(now);
            outcome = Enqueued::CrossedSoftMark(self.bytes);
        }
        outcome
    }

    /// The next message to write; the backlog ends once the queue is back
    /// under `soft`.
    pub(crate) fn pop(&mut self, soft: usize) -> Option<Message> {
        let message = self.frames.pop_front()?;
        self.bytes = self.bytes.saturating_sub(message_len(&message));
        if self.bytes <= soft {
            self.backlog_since = None;
        }
        Some(message)
    }

    /// The queued messages, next first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Message> {
        self.frames.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn frames(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn backlog_since(&self) -> Option<Instant> {
        self.backlog_since
    }

    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Message {
        Message::Text("x".repeat(len).into())
    }

    #[test]
    fn the_soft_mark_is_reported_once_and_the_hard_limit_drops() {
        let mut queue = OutboundQueue::default();
        let now = Instant::now();
        assert_eq!(queue.offer(text(10), 10, 15, 30, now), Enqueued::Immediate);
        assert_eq!(
            queue.offer(text(10), 10, 15, 30, now),
            Enqueued::CrossedSoftMark(20)
        );
        assert_eq!(queue.offer(text(5), 5, 15, 30, now), Enqueued::Behind);
        assert_eq!(queue.offer(text(10), 10, 15, 30, now), Enqueued::Dropped);
        assert_eq!(queue.dropped(), 1);
        assert!(queue.backlog_since().is_some());
        assert!(queue.pop(15).is_some());
        assert!(queue.pop(15).is_some());
        assert_eq!(queue.bytes(), 5);
        assert!(queue.backlog_since().is_none(), "back under the soft mark");
    }
}

//! Writes what a session has queued straight to its socket, from whoever
//! queued it, instead of waking the session's task to write it
//! ([`crate::core::write_gate`] says when that is safe).
//!
//! A delivery to one session is written right after it is queued, on the
//! caller's thread. A publish to many is queued to all of them first, and
//! written by flush jobs of [`FLUSH_JOB_SESSIONS`] sessions each, spawned
//! on the runtime as the publish goes, which take turns in one
//! [`FlushLane`]: the publish answers as soon as everything is queued, and
//! a session that received several messages before its job ran gets them
//! in one write. Whatever cannot go directly (a TLS session, a stream
//! mid-frame, a message too large to coalesce, a full send buffer) is left
//! to the session's task, which is woken for it, as before.
//!
//! One lane, not a job per worker at once: measured on loopback with
//! 10 000 receivers (BENCHMARKS.md, issue 16, sixth part), writers on two
//! workers at once cost more CPU per delivery than one (their sends wake
//! the same receivers' epoll, whose lock they then contend for), and one
//! writer falls behind a burst of publishes just enough that messages
//! coalesce. A single-threaded server (Node's `ws`) has the same ceiling
//! of one core's sends per second.

use std::cell::RefCell;
use std::sync::Arc;

use axum::extract::ws::Message;

use crate::core::session::queue::message_len;
use crate::core::session::Session;
use crate::core::write_gate::{DirectWrite, WriteGate};

/// Sessions one flush job writes to.
pub(crate) const FLUSH_JOB_SESSIONS: usize = 256;

/// The most bytes of frames coalesced into one direct write; a message
/// larger than this alone goes through the session's task, which streams
/// it from the shared payload instead of copying it.
const MAX_DIRECT_BYTES: usize = 64 << 10;

/// The longest header [`encode`] writes: two bytes and an 8-byte length.
const MAX_HEADER_BYTES: usize = 10;

thread_local! {
    /// The frames of one direct write, reused from write to write.
    static FRAMES: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(MAX_DIRECT_BYTES));
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Messages written directly (whole, or all but a tail).
    pub(crate) written: usize,
    /// The session's task must be woken: messages are left, or a tail.
    pub(crate) wake_task: bool,
}

/// The session's write gate, if its socket takes direct writes at all (a
/// running plain-TCP session); otherwise its task writes everything.
pub(crate) fn direct_gate(session: &Session) -> Option<&WriteGate> {
    let gate = &session.meter.as_deref()?.gate;
    gate.is_open().then_some(gate)
}

/// Writes the session's queued messages to its socket if it may, as many
/// as fit in one write, taking them from the queue (`soft_mark` as the
/// queue's) and handing each to `on_written`.
pub(crate) fn write_queued(
    session: &Session,
    soft_mark: usize,
    mut on_written: impl FnMut(&Message),
) -> Flushed {
    let wake = Flushed {
        written: 0,
        wake_task: true,
    };
    let Some(gate) = direct_gate(session) else {
        return wake;
    };
    FRAMES.with_borrow_mut(|frames| {
        frames.clear();
        // Under the session's lock from the first look at the queue to the
        // last message taken from it: the task takes messages under the
        // same lock, so none is written out of order.
        let mut state = session.lock();
        let mut count = 0usize;
        for message in state.queued() {
            if frames.len() + message_len(message) + MAX_HEADER_BYTES > MAX_DIRECT_BYTES
                || !encode(message, frames)
            {
                break;
            }
            count += 1;
        }
        if count == 0 {
            return Flushed {
                written: 0,
                wake_task: state.has_outbound(),
            };
        }
        let outcome = gate.try_write(frames, |_| {});
        if outcome == DirectWrite::NotNow {
            return wake;
        }
        for _ in 0..count {
            if let Some(message) = state.pop_outbound(soft_mark) {
                on_written(&message);
            }
        }
        Flushed {
            written: count,
            // A tail is the task's to write.
            wake_task: outcome == DirectWrite::Tail || state.has_outbound(),
        }
    })
}

/// Appends `message`'s whole frame (final, unmasked: a server's frame is
/// the same bytes for every recipient) to `frames`; false for a control
/// message, which goes through the session's task.
fn encode(message: &Message, frames: &mut Vec<u8>) -> bool {
    let (opcode, payload): (u8, &[u8]) = match message {
        Message::Text(text) => (0x1, text.as_bytes()),
        Message::Binary(bytes) => (0x2, bytes),
        _ => return false,
    };
    frames.push(0x80 | opcode);
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => frames.push(len as u8),
        Ok(len) => {
            frames.push(126);
            frames.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            frames.push(127);
            frames.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    frames.extend_from_slice(payload);
    true
}

/// Where publishes' flush jobs take turns, one at a time, in the order
/// they were spawned.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlushLane(Arc<tokio::sync::Mutex<()>>);

/// The sessions a publish queued a message for, flushed by `flush` in
/// jobs of [`FLUSH_JOB_SESSIONS`] as they come, the last part when the
/// publish is done ([`FlushJobs::finish`]).
pub(crate) struct FlushJobs<F> {
    flush: F,
    lane: FlushLane,
    pending: Vec<Arc<Session>>,
    /// The runtime to spawn on; without one, everything is flushed here.
    runtime: Option<tokio::runtime::Handle>,
    spawned: bool,
}

impl<F: Fn(&Session) + Clone + Send + 'static> FlushJobs<F> {
    /// No sessions yet; jobs will run in `lane`.
    pub(crate) fn new(flush: F, lane: &FlushLane) -> Self {
        FlushJobs {
            flush,
            lane: lane.clone(),
            pending: Vec::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            spawned: false,
        }
    }

    /// `session`'s queue went from empty to holding the publish's message:
    /// it is this publish's to flush.
    pub(crate) fn add(&mut self, session: &Arc<Session>) {
        self.pending.push(Arc::clone(session));
        if self.pending.len() >= FLUSH_JOB_SESSIONS {
            self.spawn();
        }
    }

    fn spawn(&mut self) {
        let sessions = std::mem::take(&mut self.pending);
        match &self.runtime {
            Some(runtime) => {
                let flush = self.flush.clone();
                let lane = self.lane.clone();
                runtime.spawn(async move {
                    let _turn = lane.0.lock().await;
                    for session in &sessions {
                        flush(session);
                    }
                });
                self.spawned = true;
            }
            None => sessions.iter().for_each(|session| (self.flush)(session)),
        }
    }

    /// The publish is done: a publish small enough for one job is flushed
    /// here and now (no hand-off to wait for); a larger one's last part
    /// goes to a job like the rest.
    pub(crate) fn finish(mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.spawned {
            self.spawn();
        } else {
            self.pending
                .iter()
                .for_each(|session| (self.flush)(session));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn frames_parse_as_the_websocket_stack_reads_them_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for binary in [false, true] {
                let message = if binary {
                    Message::Binary(vec![7u8; len].into())
                } else {
                    Message::Text("t".repeat(len).into())
                };
                let mut frames = b"before".to_vec();
                assert!(encode(&message, &mut frames));
                let mut cursor = Cursor::new(&frames[6..]);
                let (header, payload_len) = FrameHeader::parse(&mut cursor)
                    .unwrap_or_else(|error| panic!("{len}: {error}"))
                    .unwrap_or_else(|| panic!("{len}: a whole header"));
                assert!(header.is_final, "{len}");
                assert_eq!(header.mask, None, "{len}: a server's frame is not masked");
                let opcode = if binary { Data::Binary } else { Data::Text };
                assert_eq!(header.opcode, OpCode::Data(opcode), "{len}");
                assert_eq!(payload_len, len as u64);
                assert_eq!(frames.len() - 6 - cursor.position() as usize, len);
            }
        }
        let mut frames = Vec::new();
        assert!(!encode(&Message::Ping(vec![1].into()), &mut frames));
        assert!(frames.is_empty());
    }
}

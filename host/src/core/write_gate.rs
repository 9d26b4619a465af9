//! Frames written straight to a session's socket by whoever decides them,
//! between the frames its task writes: the shared tick's heartbeat pings,
//! and data messages, written by whoever queued them (a publish, a
//! profile's reply; [`crate::core::flush`]).
//!
//! Every such frame used to wake the session's task: the runtime scheduled
//! it, and the task went through the WebSocket stack (read attempt, frame
//! encoding, flush) to write it. That wake and poll were most of an idle
//! host's user-space CPU per heartbeat, and about a third of the host's CPU
//! per fan-out delivery (BENCHMARKS.md, issue 16). The writer, which
//! already holds the session's state, now writes the frame itself when it
//! safely can, and leaves it to the task only when it cannot.
//!
//! It can when:
//! - the connection is plain TCP (under TLS the socket carries records, not
//!   frames), and its session is running ([`WriteGate::open`]);
//! - the stream is at a frame boundary: nothing written since the last
//!   completed flush, so no frame is half on the wire ([`WriteGate`]'s task
//!   bit, kept by the connection's stream);
//! - no earlier direct write still has bytes to go (its tail, below).
//!
//! Data messages must also keep their order: the writer takes them from the
//! head of the session's queue under the session's lock, and the task
//! claims the stream under the same lock as it takes a message from the
//! queue ([`WriteGate::stream_writes`]), so a direct write never passes a
//! message the task holds.
//!
//! A non-blocking write takes what the send buffer has room for. When that
//! is only part of the frame, the rest is the frame's **tail**: it is kept
//! for the connection's stream, which writes it before anything else, and
//! the session's task is woken to do so. A direct write therefore never
//! leaves half a frame on the wire, and it never blocks. Tails are rare (a
//! send buffer full mid-frame), so they live in one table for the process,
//! not in a field every connection would carry.
//!
//! While a writer writes, the gate keeps the descriptor open (closing waits
//! for it), so the tick also reads the socket's `TCP_INFO` there when the
//! policy is due fresh facts with a ping.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// The descriptor's bits in the gate's word; descriptors above this are
/// never opened (they take the task's path). Far above any open-file limit
/// in use.
const FD_BITS: u32 = (1 << 26) - 1;
/// A direct write left a tail: the stream writes it before anything else,
/// and no direct write goes until it has.
const TAIL: u32 = 1 << 27;
/// The session is running on a plain TCP connection: direct writes may go.
const OPEN: u32 = 1 << 28;
/// The stream may be mid-frame (written since its last completed flush),
/// or the task holds a message it took from the queue and has not flushed.
const TASK_WRITING: u32 = 1 << 29;
/// A direct write is under way.
const DIRECT_WRITING: u32 = 1 << 30;
/// The connection is closing: its descriptor may be closed at any moment.
const CLOSED: u32 = 1 << 31;

/// The unwritten ends of frames direct writes wrote in part, by socket.
static TAILS: LazyLock<Mutex<HashMap<u32, Bytes>>> = LazyLock::new(Default::default);

fn tails() -> std::sync::MutexGuard<'static, HashMap<u32, Bytes>> {
    TAILS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of a frame a writer tried to write directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectWrite {
    /// The whole frame is in the kernel's send buffer.
    Written,
    /// Part of it is, and the stream writes the rest before anything else:
    /// the frame is on its way, but the session's task must be woken.
    Tail,
    /// Nothing was written: the task must send it.
    NotNow,
}

/// Who may write to a connection's socket: its stream (for the session's
/// task, through the WebSocket stack) or a direct writer (one whole frame).
/// One word, descriptor and state together, so it fits in the padding of
/// the connection's meter: no memory per session.
#[derive(Debug, Default)]
pub struct WriteGate {
    word: AtomicU32,
}

impl WriteGate {
    /// A closed gate: nothing is written directly until [`WriteGate::open`].
    pub const fn new() -> Self {
        WriteGate {
            word: AtomicU32::new(0),
        }
    }

    /// `fd` is a plain TCP connection (no TLS): once it carries a session,
    /// frames may be written to it directly between the task's. (Before,
    /// no writer knows the connection.)
    pub fn open(&self, fd: RawFd) {
        let Ok(fd) = u32::try_from(fd) else {
            return;
        };
        if fd > FD_BITS {
            return;
        }
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & (CLOSED | OPEN) == 0).then_some(word | fd | OPEN)
            });
    }

    /// Whether the connection's session is running on plain TCP: the
    /// first of the rules, cheap to ask before encoding a frame.
    pub fn is_open(&self) -> bool {
        self.word.load(Ordering::Acquire) & (OPEN | CLOSED) == OPEN
    }

    /// The stream is about to write, or the task took a message from the
    /// queue: no direct write until the stream has flushed. Waits out a
    /// direct write under way (one non-blocking system call); never waits
    /// when the caller holds the session's state, as every direct writer
    /// does while it writes.
    pub fn stream_writes(&self) {
        let before = self.word.fetch_or(TASK_WRITING, Ordering::AcqRel);
        if before & DIRECT_WRITING != 0 {
            self.wait_for_direct_write();
        }
    }

    /// The stream flushed: everything it wrote is in the kernel, so the
    /// socket is at a frame boundary again.
    pub fn stream_flushed(&self) {
        self.word.fetch_and(!TASK_WRITING, Ordering::AcqRel);
    }

    /// Whether a direct write left a tail the stream has yet to write.
    pub fn has_tail(&self) -> bool {
        self.word.load(Ordering::Acquire) & TAIL != 0
    }

    /// The connection is closing; returns once no direct write is under
    /// way, so the descriptor can be closed. A tail stays for the stream:
    /// the closing handshake's frames follow it.
    pub fn close(&self) {
        let before = self.word.fetch_or(CLOSED, Ordering::AcqRel);
        if before & DIRECT_WRITING != 0 {
            self.wait_for_direct_write();
        }
    }

    fn wait_for_direct_write(&self) {
        while self.word.load(Ordering::Acquire) & DIRECT_WRITING != 0 {
            std::thread::yield_now();
        }
    }

    /// Its socket's descriptor: the key of its tail. Unique among open
    /// connections, and a tail is discarded before its descriptor closes.
    fn key(&self) -> u32 {
        self.word.load(Ordering::Acquire) & FD_BITS
    }

    /// Writes `frame` (one whole WebSocket frame) to the socket if it can go
    /// between frames (see the module's rules); what the send buffer cannot
    /// take becomes the stream's tail. Just before, `before_sending` gets
    /// the socket's descriptor, open for the call (the tick reads the
    /// socket's `TCP_INFO` with it when due).
    pub fn try_write(&self, frame: &[u8], before_sending: impl FnOnce(RawFd)) -> DirectWrite {
        let word = self.word.load(Ordering::Acquire);
        if word & (OPEN | TASK_WRITING | DIRECT_WRITING | CLOSED | TAIL) != OPEN {
            return DirectWrite::NotNow;
        }
        if self
            .word
            .compare_exchange(
                word,
                word | DIRECT_WRITING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return DirectWrite::NotNow;
        }
        // Below `FD_BITS`, so it fits.
        let fd = (word & FD_BITS) as RawFd;
        before_sending(fd);
        let written = send_some(fd, frame);
        let outcome = match written {
            0 => DirectWrite::NotNow,
            written if written == frame.len() => DirectWrite::Written,
            written => {
                tails().insert(self.key(), Bytes::copy_from_slice(&frame[written..]));
                DirectWrite::Tail
            }
        };
        let tail = if outcome == DirectWrite::Tail {
            TAIL
        } else {
            0
        };
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some((word & !DIRECT_WRITING) | tail)
            })
            .ok();
        outcome
    }

    /// The stream's part: writes the tail a direct write left, if any, to
    /// `socket`. Ready once there is none; the caller has claimed the
    /// stream ([`WriteGate::stream_writes`]), so no new one can appear.
    pub fn poll_write_tail<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut Context<'_>,
        socket: &mut W,
    ) -> Poll<io::Result<()>> {
        while self.has_tail() {
            let Some(tail) = tails().get(&self.key()).cloned() else {
                self.word.fetch_and(!TAIL, Ordering::AcqRel);
                break;
            };
            let written = ready!(Pin::new(&mut *socket).poll_write(cx, &tail))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let mut tails = tails();
            match tails.get_mut(&self.key()) {
                Some(rest) if rest.len() > written => rest.advance(written),
                _ => {
                    tails.remove(&self.key());
                    self.word.fetch_and(!TAIL, Ordering::AcqRel);
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Forgets a tail no stream will write (the connection is gone).
    pub fn discard_tail(&self) {
        if self.word.fetch_and(!TAIL, Ordering::AcqRel) & TAIL != 0 {
            tails().remove(&self.key());
        }
    }
}

impl Drop for WriteGate {
    fn drop(&mut self) {
        // Keyed by descriptor: a later connection's gate must not find it.
        self.discard_tail();
    }
}

/// Sends what the socket takes of `frame` now: the bytes written, 0 when
/// none (`EAGAIN`, or an error the task's own write will meet and report
/// as it always has).
fn send_some(fd: RawFd, frame: &[u8]) -> usize {
    // SAFETY: the gate is open and not closed, so `fd` is the connection's
    // open socket until the gate's `close` returns, which waits for this
    // call; `frame` is a readable buffer of `frame.len()` bytes.
    // Non-blocking, and no SIGPIPE on a connection the peer reset.
    #[allow(unsafe_code)]
    let written = unsafe {
        libc::send(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(written).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("its address"))
            .expect("connected");
        let (server, _) = listener.accept().expect("accepted");
        (server, client)
    }

    #[test]
    fn an_open_idle_gate_writes_the_frame_whole() {
        let (server, mut client) = pair();
        let gate = WriteGate::new();
        assert_eq!(
            gate.try_write(b"ping!", |_| {}),
            DirectWrite::NotNow,
            "an unopened gate wrote"
        );
        gate.open(server.as_raw_fd());
        assert_eq!(gate.try_write(b"ping!", |_| {}), DirectWrite::Written);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).expect("the frame arrived");
        assert_eq!(&got, b"ping!");
    }

    #[test]
    fn no_direct_write_while_the_stream_is_mid_frame_or_closing() {
        let (server, _client) = pair();
        let gate = WriteGate::new();
        gate.open(server.as_raw_fd());
        gate.stream_writes();
        assert_eq!(
            gate.try_write(b"x", |_| {}),
            DirectWrite::NotNow,
            "wrote into a frame"
        );
        gate.stream_flushed();
        assert_eq!(gate.try_write(b"x", |_| {}), DirectWrite::Written);
        gate.close();
        assert_eq!(
            gate.try_write(b"x", |_| {}),
            DirectWrite::NotNow,
            "wrote while closing"
        );
    }

    #[test]
    fn a_frame_the_send_buffer_takes_in_part_leaves_its_tail_and_keeps_writers_out() {
        let (server, client) = pair();
        let gate = WriteGate::new();
        gate.open(server.as_raw_fd());
        // The client reads nothing: a frame far larger than both buffers
        // goes in part.
        let frame = vec![7u8; 16 << 20];
        assert_eq!(gate.try_write(&frame, |_| {}), DirectWrite::Tail);
        assert!(gate.has_tail());
        let tail_len = tails().get(&gate.key()).map(Bytes::len).expect("a tail");
        assert!(tail_len > 0 && tail_len < frame.len());
        assert_eq!(
            gate.try_write(b"next", |_| {}),
            DirectWrite::NotNow,
            "a direct write went ahead of a tail"
        );
        let key = gate.key();
        drop(gate);
        assert!(
            !tails().contains_key(&key),
            "a dropped gate's tail stayed in the table"
        );
        drop(client);
    }

    #[test]
    fn a_full_send_buffer_takes_nothing_and_leaves_no_tail() {
        let (server, client) = pair();
        let gate = WriteGate::new();
        gate.open(server.as_raw_fd());
        server.set_nonblocking(true).expect("non-blocking");
        let chunk = vec![0u8; 64 << 10];
        while matches!((&server).write(&chunk), Ok(written) if written > 0) {}
        assert_eq!(gate.try_write(b"x", |_| {}), DirectWrite::NotNow);
        assert!(!gate.has_tail());
        drop(client);
    }
}

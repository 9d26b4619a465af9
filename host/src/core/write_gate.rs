//! A heartbeat ping written by the shared tick straight to a session's
//! socket, between the frames its task writes.
//!
//! Every heartbeat of an idle session used to wake its task: the tick asked
//! for a ping, the runtime scheduled the task, and the task went through the
//! WebSocket stack (read attempt, frame encoding, flush) to send ten bytes.
//! That wake and poll were most of an idle host's user-space CPU per
//! heartbeat (BENCHMARKS.md, issue 16). The tick, which decides the ping
//! and already holds the session's state, now writes it itself when it
//! safely can, and wakes the task only when it cannot.
//!
//! It can when:
//! - the connection is plain TCP (under TLS the socket carries records, not
//!   frames), and its session is running ([`WriteGate::open`]);
//! - the stream is at a frame boundary: nothing written since the last
//!   completed flush, so no frame is half on the wire ([`WriteGate`]'s task
//!   bit, kept by the connection's stream);
//! - the kernel holds nothing unsent or unacknowledged for the socket
//!   (`SIOCOUTQ` is 0). Then the send buffer is empty, and a ten-byte write
//!   is taken whole: a short write, which would leave half a frame, happens
//!   only when the buffer fills mid-write. The kernel is not asked when
//!   the last thing written was the previous direct ping and its pong came
//!   back: the pong's segment acknowledged every byte before it
//!   ([`WriteGate::answered`]), which is an idle session's every heartbeat.
//!
//! Otherwise the tick wakes the task as before, which sends the ping through
//! the WebSocket stack, behind whatever it is writing.
//!
//! While the tick writes, the gate keeps the descriptor open (closing waits
//! for it), so the tick also reads the socket's `TCP_INFO` there when the
//! policy is due fresh facts with the ping.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// The descriptor's bits in the gate's word; descriptors above this are
/// never opened (they take the task's path). Far above any open-file limit
/// in use.
const FD_BITS: u32 = (1 << 26) - 1;
/// The last write to the socket was a ping the tick wrote.
const PING_LAST: u32 = 1 << 26;
/// ... and its pong came back: the peer acknowledged everything written
/// (the pong's segment acknowledges all it received before it), so the
/// kernel holds nothing unsent and need not be asked.
const ACKED: u32 = 1 << 27;
/// The session is running on a plain TCP connection: the tick may write.
const OPEN: u32 = 1 << 28;
/// The stream may be mid-frame: written since its last completed flush.
const TASK_WRITING: u32 = 1 << 29;
/// The tick is writing a ping right now.
const TICK_WRITING: u32 = 1 << 30;
/// The connection is closing: its descriptor may be closed at any moment.
const CLOSED: u32 = 1 << 31;

/// What became of a ping the tick tried to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectPing {
    /// The whole frame is in the kernel's send buffer.
    Sent,
    /// Nothing was written: the task must send it.
    NotNow,
    /// Part of the frame was written and the rest could not be: the stream
    /// is broken and the session must end. (The empty-buffer rule makes
    /// this impossible in practice; it is handled, not assumed away.)
    Torn,
}

/// Who may write to a connection's socket: its stream (for the session's
/// task, through the WebSocket stack) or the tick (one ping, whole). One
/// word, descriptor and state together, so it fits in the padding of the
/// connection's meter: no memory per session.
#[derive(Debug, Default)]
pub struct WriteGate {
    word: AtomicU32,
}

impl WriteGate {
    /// A closed gate: the tick writes nothing until [`WriteGate::open`].
    pub const fn new() -> Self {
        WriteGate {
            word: AtomicU32::new(0),
        }
    }

    /// `fd` is a plain TCP connection (no TLS): once it carries a session,
    /// the tick may write pings to it between the task's frames. (Before,
    /// the tick does not know the connection.)
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

    /// The stream is about to write: no direct ping until it has flushed.
    /// Waits out a ping the tick is writing (one non-blocking system call).
    pub fn stream_writes(&self) {
        let before = self.word.fetch_or(TASK_WRITING, Ordering::AcqRel);
        if before & (PING_LAST | ACKED) != 0 {
            self.word.fetch_and(!(PING_LAST | ACKED), Ordering::AcqRel);
        }
        if before & TICK_WRITING != 0 {
            self.wait_for_tick();
        }
    }

    /// The pong to the newest ping in flight came back. If that ping was
    /// the last thing written (a direct one, nothing since), the peer has
    /// acknowledged every byte, and the next direct ping skips asking the
    /// kernel. The caller holds the session's state, as the tick does while
    /// it writes and records a ping, so no newer ping can be on the wire.
    pub fn answered(&self) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & (PING_LAST | ACKED) == PING_LAST).then_some(word | ACKED)
            });
    }

    /// The stream flushed: everything it wrote is in the kernel, so the
    /// socket is at a frame boundary again.
    pub fn stream_flushed(&self) {
        self.word.fetch_and(!TASK_WRITING, Ordering::AcqRel);
    }

    /// The connection is closing; returns once no direct ping is being
    /// written, so the descriptor can be closed.
    pub fn close(&self) {
        let before = self.word.fetch_or(CLOSED, Ordering::AcqRel);
        if before & TICK_WRITING != 0 {
            self.wait_for_tick();
        }
    }

    fn wait_for_tick(&self) {
        while self.word.load(Ordering::Acquire) & TICK_WRITING != 0 {
            std::thread::yield_now();
        }
    }

    /// Writes `frame` (a whole ping frame) to the socket if it can be
    /// written whole and between frames (see the module's rules). Just
    /// before, `before_sending` gets the socket's descriptor, open for the
    /// call (the tick reads the socket's `TCP_INFO` with it when due).
    pub fn try_ping(&self, frame: &[u8], before_sending: impl FnOnce(RawFd)) -> DirectPing {
        let word = self.word.load(Ordering::Acquire);
        if word & (OPEN | TASK_WRITING | TICK_WRITING | CLOSED) != OPEN {
            return DirectPing::NotNow;
        }
        if self
            .word
            .compare_exchange(
                word,
                word | TICK_WRITING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return DirectPing::NotNow;
        }
        // Below `FD_BITS`, so it fits.
        let fd = (word & FD_BITS) as RawFd;
        let outcome = if word & ACKED != 0 || unsent_bytes(fd) == Some(0) {
            before_sending(fd);
            send_whole(fd, frame)
        } else {
            DirectPing::NotNow
        };
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(match outcome {
                    // This ping is now the last write, not yet answered.
                    DirectPing::Sent => (word & !(TICK_WRITING | ACKED)) | PING_LAST,
                    DirectPing::NotNow => word & !TICK_WRITING,
                    DirectPing::Torn => word & !(TICK_WRITING | ACKED | PING_LAST),
                })
            });
        outcome
    }
}

/// Bytes the kernel holds for the socket, unsent or unacknowledged.
#[cfg(target_os = "linux")]
fn unsent_bytes(fd: RawFd) -> Option<libc::c_int> {
    let mut queued: libc::c_int = 0;
    // SAFETY: the gate is open and not closed, so `fd` is the connection's
    // open socket until the gate's `close` returns, which waits for this
    // call; `queued` is a writable `int`, as `SIOCOUTQ` (`TIOCOUTQ`) wants.
    #[allow(unsafe_code)]
    let result = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    (result == 0).then_some(queued)
}

/// Elsewhere the kernel is not asked, so the tick never writes.
#[cfg(not(target_os = "linux"))]
fn unsent_bytes(_fd: RawFd) -> Option<libc::c_int> {
    None
}

fn send_whole(fd: RawFd, frame: &[u8]) -> DirectPing {
    // SAFETY: as in `unsent_bytes`, `fd` is open for this call; `frame` is
    // a readable buffer of `frame.len()` bytes. Non-blocking, and no
    // SIGPIPE on a connection the peer reset.
    #[allow(unsafe_code)]
    let written = unsafe {
        libc::send(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    match usize::try_from(written) {
        Ok(written) if written == frame.len() => DirectPing::Sent,
        // Nothing written (`EAGAIN`, or an error the task's own write will
        // meet and report as it always has).
        Ok(0) | Err(_) => DirectPing::NotNow,
        Ok(_) => DirectPing::Torn,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;
    use std::io::Read;
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
            gate.try_ping(b"ping!", |_| {}),
            DirectPing::NotNow,
            "an unopened gate wrote"
        );
        gate.open(server.as_raw_fd());
        assert_eq!(gate.try_ping(b"ping!", |_| {}), DirectPing::Sent);
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
            gate.try_ping(b"x", |_| {}),
            DirectPing::NotNow,
            "wrote into a frame"
        );
        gate.stream_flushed();
        gate.close();
        assert_eq!(
            gate.try_ping(b"x", |_| {}),
            DirectPing::NotNow,
            "wrote while closing"
        );
    }

    #[test]
    fn bytes_the_peer_has_not_acknowledged_keep_the_tick_out() {
        let (server, client) = pair();
        let gate = WriteGate::new();
        gate.open(server.as_raw_fd());
        // The client stops reading: fill its receive buffer and the
        // server's send buffer until the kernel holds unsent bytes.
        server.set_nonblocking(true).expect("non-blocking");
        let chunk = vec![0u8; 64 << 10];
        while (&server).write_all_nonblocking(&chunk) {}
        assert_eq!(gate.try_ping(b"x", |_| {}), DirectPing::NotNow);
        drop(client);
    }

    #[test]
    fn only_an_answered_direct_ping_with_nothing_written_since_spares_the_kernel_check() {
        let (server, _client) = pair();
        let gate = WriteGate::new();
        gate.open(server.as_raw_fd());
        let acked = |gate: &WriteGate| gate.word.load(Ordering::Acquire) & ACKED != 0;
        gate.answered();
        assert!(!acked(&gate), "a pong to no direct ping counted");
        assert_eq!(gate.try_ping(b"1", |_| {}), DirectPing::Sent);
        gate.answered();
        assert!(acked(&gate), "the answered direct ping did not count");
        assert_eq!(gate.try_ping(b"2", |_| {}), DirectPing::Sent);
        assert!(
            !acked(&gate),
            "a new ping on the wire still counted as answered"
        );
        gate.stream_writes();
        gate.stream_flushed();
        gate.answered();
        assert!(!acked(&gate), "a pong after the stream wrote counted");
    }

    trait WriteNonBlocking {
        /// Writes what the socket takes; false once it takes nothing.
        fn write_all_nonblocking(self, bytes: &[u8]) -> bool;
    }

    impl WriteNonBlocking for &std::net::TcpStream {
        fn write_all_nonblocking(mut self, bytes: &[u8]) -> bool {
            use std::io::Write;
            matches!(self.write(bytes), Ok(written) if written > 0)
        }
    }
}

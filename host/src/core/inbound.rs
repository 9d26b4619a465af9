//! The budget for inbound bytes held across all sessions: what clients have
//! sent that is not yet a complete message (partial frames, fragments being
//! reassembled). Each connection's stream is wrapped in a
//! [`MeteredStream`], which counts the bytes read since the session's last
//! complete message. Past the budget, connections holding a share worth
//! noticing stop being read (so memory stops growing at once), and the tick
//! closes the sessions holding the most with 1009 until the rest fit.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::write_gate::WriteGate;

/// Held bytes below which a connection is never paused: one read buffer or
/// a small message in flight is normal traffic, not a hoard.
const PAUSE_FLOOR_BYTES: usize = 16 << 10;

/// All sessions' held bytes against the limit.
#[derive(Debug)]
pub struct InboundBudget {
    limit: usize,
    held: AtomicUsize,
    paused: Mutex<Vec<Waker>>,
}

impl InboundBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(InboundBudget {
            limit,
            held: AtomicUsize::new(0),
            paused: Mutex::new(Vec::new()),
        })
    }

    /// Bytes held now, all sessions together.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the budget is exceeded.
    pub fn exceeded(&self) -> bool {
        self.held() > self.limit
    }

    /// Resumes every paused connection (they pause again if still over).
    pub fn resume_paused(&self) {
        let wakers =
            std::mem::take(&mut *self.paused.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// One connection's share of the budget.
///
/// Also the one object a connection's stream and its session share, so it
/// carries the connection's [`WriteGate`] too: the stream keeps it, the tick
/// writes through it. It sits in what was this struct's padding (a test
/// checks the size), so it costs no memory per session.
#[derive(Debug)]
pub struct InboundMeter {
    budget: Arc<InboundBudget>,
    /// Bytes read since the last complete message (32 bits, saturating:
    /// the meter fits the allocator's 48-byte class, see the test).
    held: AtomicU32,
    /// Of those, the bytes the budget counts: the ones the WebSocket stack
    /// has asked to read past without completing a message
    /// ([`InboundMeter::charge`]).
    charged: AtomicU32,
    /// Who may write to the connection's socket (see [`crate::core::write_gate`]).
    pub(crate) gate: WriteGate,
    /// Counting starts once the connection is a session: before that its
    /// bytes are an HTTP request, bounded by the handshake.
    active: AtomicBool,
    /// Closed for the budget: never read from again.
    forfeited: AtomicBool,
}

impl InboundMeter {
    /// A meter drawing on `budget`.
    pub fn new(budget: &Arc<InboundBudget>) -> Arc<Self> {
        Arc::new(InboundMeter {
            budget: Arc::clone(budget),
            held: AtomicU32::new(0),
            charged: AtomicU32::new(0),
            gate: WriteGate::new(),
            active: AtomicBool::new(false),
            forfeited: AtomicBool::new(false),
        })
    }

    /// Starts counting (the connection became a session).
    pub(crate) fn activate(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    /// Bytes this connection holds: read since its last complete message.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed) as usize
    }

    /// A complete message arrived: what was held is now the application's.
    pub(crate) fn message_complete(&self) {
        self.held.store(0, Ordering::Relaxed);
        let charged = self.charged.swap(0, Ordering::Relaxed);
        self.budget.release(charged as usize);
    }

    /// Stops counting and gives back what is held (the session is being
    /// closed for the budget).
    pub(crate) fn forfeit(&self) {
        self.forfeited.store(true, Ordering::Relaxed);
        self.active.store(false, Ordering::Relaxed);
        self.message_complete();
    }

    fn read(&self, bytes: usize) {
        if bytes > 0 && self.active.load(Ordering::Relaxed) {
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            // Only this connection's task reads: no contention to retry.
            let _ = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    Some(held.saturating_add(bytes))
                });
        }
    }

    /// The WebSocket stack is reading again without having completed a
    /// message: the bytes held are waiting for more, and the budget counts
    /// them from now on. A message that arrives whole in one read (a pong,
    /// most frames) is complete before the next read, so the budget, one
    /// count that every worker's reads would otherwise write twice a
    /// frame, never hears of it (BENCHMARKS.md, issue 16, ninth part). The
    /// stack reads again at once whenever a message is incomplete, so
    /// bytes that wait are counted as soon as they wait.
    fn charge(&self) {
        let held = self.held.load(Ordering::Relaxed);
        let charged = self.charged.load(Ordering::Relaxed);
        if held > charged
            && self
                .charged
                .compare_exchange(charged, held, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.budget
                .held
                .fetch_add((held - charged) as usize, Ordering::Relaxed);
        }
    }

    /// Whether this connection must wait: the budget is exceeded and it
    /// holds more than normal traffic does.
    fn must_pause(&self) -> bool {
        // Its own count first: the budget's is written by every read of
        // every connection, and most connections hold nothing.
        self.held() >= PAUSE_FLOOR_BYTES && self.budget.exceeded()
    }
}

impl Drop for InboundMeter {
    fn drop(&mut self) {
        let charged = self.charged.swap(0, Ordering::Relaxed) as usize;
        self.budget.release(charged);
        if charged > 0
            && !self
                .budget
                .paused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            self.budget.resume_paused();
        }
    }
}

/// A connection's stream, counted against the inbound budget; `guard` is
/// whatever must live exactly as long as the connection (a per-IP slot).
pub struct MeteredStream<S> {
    inner: S,
    meter: Arc<InboundMeter>,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl<S> MeteredStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, meter: Arc<InboundMeter>, guard: Option<Box<dyn Send + Sync>>) -> Self {
        MeteredStream {
            inner,
            meter,
            _guard: guard,
        }
    }
}

impl<S> Drop for MeteredStream<S> {
    fn drop(&mut self) {
        // Before `inner` closes the descriptor: no direct writer may write
        // to it, or to whatever reuses its number.
        self.meter.gate.close();
        self.meter.gate.discard_tail();
    }
}

impl<S: AsyncWrite + Unpin> MeteredStream<S> {
    /// Keeps direct writers out until the next completed flush, then
    /// writes what is left of a frame a direct writer wrote in part: it
    /// must reach the wire before anything else does.
    fn claim_for_writing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.meter.gate.stream_writes();
        self.meter.gate.poll_write_tail(cx, &mut self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.meter.forfeited.load(Ordering::Relaxed) {
            // Its session is closing for the budget: no more of its bytes
            // are taken in; the close times out on the session's own timer.
            return Poll::Pending;
        }
        self.meter.charge();
        if self.meter.must_pause() {
            self.meter
                .budget
                .paused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(cx.waker().clone());
            // Re-checked after registering, so a release in between is seen.
            if self.meter.must_pause() {
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.meter.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // From the first byte of a frame until the flush that ends the
        // write, direct writers keep out (a frame may be half on the wire);
        // the tail of a direct write goes first.
        ready!(self.claim_for_writing(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The WebSocket stack flushes its stream only once it has written
        // out everything it buffered: a frame boundary. A direct write's
        // tail is written out first (the task flushes to send it).
        if self.meter.gate.has_tail() {
            ready!(self.claim_for_writing(cx))?;
        }
        let flushed = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if flushed.is_ok() {
            self.meter.gate.stream_flushed();
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.meter.gate.close();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.claim_for_writing(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_gate_fits_in_the_meters_padding() {
        // 24 bytes, behind the `Arc`'s two counts: 40, the allocator's
        // 48-byte class. One byte more and every session pays 16.
        assert!(
            std::mem::size_of::<InboundMeter>() <= 24,
            "InboundMeter grew to {} bytes",
            std::mem::size_of::<InboundMeter>()
        );
    }

    #[test]
    fn held_bytes_are_released_on_a_complete_message_and_on_drop() {
        let budget = InboundBudget::new(100);
        let meter = InboundMeter::new(&budget);
        meter.read(50);
        assert_eq!(budget.held(), 0, "not counted before the session starts");
        meter.activate();
        meter.read(60);
        meter.charge();
        meter.read(50);
        meter.charge();
        assert_eq!(budget.held(), 110);
        assert!(budget.exceeded());
        meter.message_complete();
        assert_eq!(budget.held(), 0);
        meter.read(30);
        meter.charge();
        assert_eq!(budget.held(), 30);
        drop(meter);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn bytes_count_against_the_budget_once_the_stack_reads_past_them_unfinished() {
        let budget = InboundBudget::new(100);
        let meter = InboundMeter::new(&budget);
        meter.activate();
        meter.read(14);
        assert_eq!(budget.held(), 0, "not yet waited on");
        meter.message_complete();
        meter.charge();
        assert_eq!(
            budget.held(),
            0,
            "a whole message in one read is never held"
        );
        meter.read(70);
        meter.charge();
        assert_eq!(budget.held(), 70, "read past unfinished: held");
        meter.read(40);
        assert_eq!(meter.held(), 110);
        meter.charge();
        meter.charge();
        assert_eq!(budget.held(), 110, "each byte counted once");
        meter.forfeit();
        assert_eq!(budget.held(), 0);
    }

    /// A metered stream over the server side of a fresh loopback
    /// connection with its gate open, and the client side.
    async fn metered_pair() -> (
        MeteredStream<crate::core::tcp_io::TcpIo>,
        Arc<InboundMeter>,
        tokio::net::TcpStream,
    ) {
        use std::os::fd::AsRawFd;

        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => panic!("no loopback listener: {error}"),
        };
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        let client = client.unwrap_or_else(|error| panic!("{error}"));
        let (accepted, _) = accepted.unwrap_or_else(|error| panic!("{error}"));
        let fd = accepted.as_raw_fd();
        let socket =
            crate::core::tcp_io::TcpIo::new(accepted).unwrap_or_else(|error| panic!("{error}"));
        let meter = InboundMeter::new(&InboundBudget::new(1 << 20));
        meter.gate.open(fd);
        let stream = MeteredStream::new(socket, Arc::clone(&meter), None);
        (stream, meter, client)
    }

    #[tokio::test]
    async fn the_stream_keeps_direct_writers_out_from_a_write_until_its_flush_and_after_it_drops() {
        use crate::core::write_gate::DirectWrite;
        use tokio::io::AsyncWriteExt;

        let (mut stream, meter, _client) = metered_pair().await;
        assert_eq!(
            meter.gate.try_write(b"a", |_| {}),
            DirectWrite::Written,
            "an idle stream kept direct writers out"
        );
        stream
            .write_all(b"half a frame")
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            meter.gate.try_write(b"b", |_| {}),
            DirectWrite::NotNow,
            "a direct write went into an unflushed write"
        );
        stream
            .flush()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            meter.gate.try_write(b"c", |_| {}),
            DirectWrite::Written,
            "a flushed stream kept direct writers out"
        );
        drop(stream);
        assert_eq!(
            meter.gate.try_write(b"d", |_| {}),
            DirectWrite::NotNow,
            "a direct write went to a dropped stream's socket"
        );
    }

    #[tokio::test]
    async fn the_tail_of_a_direct_write_goes_out_on_the_next_flush_before_anything_else() {
        use crate::core::write_gate::DirectWrite;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut stream, meter, client) = metered_pair().await;
        let mut client = Some(client);
        // First a flush alone (the task woken for a tail, with nothing of
        // its own to write), then a write of the stream's own.
        for own in [&b""[..], b"after"] {
            // Larger than the send and receive buffers together, while the
            // client reads nothing: written in part.
            let frame: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
            assert_eq!(meter.gate.try_write(&frame, |_| {}), DirectWrite::Tail);
            let mut reader = client.take().unwrap_or_else(|| panic!("the client"));
            let expected = frame.len() + own.len();
            let read = tokio::spawn(async move {
                let mut got = vec![0u8; expected];
                reader
                    .read_exact(&mut got)
                    .await
                    .unwrap_or_else(|error| panic!("{error}"));
                (got, reader)
            });
            stream
                .write_all(own)
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            stream
                .flush()
                .await
                .unwrap_or_else(|error| panic!("{error}"));
            let (got, reader) = read.await.unwrap_or_else(|error| panic!("{error}"));
            client = Some(reader);
            assert!(got[..frame.len()] == frame[..], "the frame arrived torn");
            assert_eq!(&got[frame.len()..], own, "the stream's write went first");
            assert!(!meter.gate.has_tail());
        }
        assert_eq!(
            meter.gate.try_write(b"z", |_| {}),
            DirectWrite::Written,
            "the written tail still kept direct writers out"
        );
    }
}

//! One WebSocket session: its shared state (liveness facts, bounded outbound
//! queue, pending control) and the single task that owns its socket.
//!
//! Memory per session is kept small on purpose: one task (reading, writing
//! and control in one `select!`), one small lock, no timer of its own — the
//! shared tick in [`crate::heartbeat`] decides when to ping and when to ask
//! the policy.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, StreamExt};
use tokio::sync::Notify;
use vigil_policy_sdk::{EventKind, FrameKind, SessionFacts, SessionId, TcpFacts, Tier};

use crate::hub::Hub;
use crate::onebot::OneBotRole;

/// Pings that may be in flight at once; the policy hears of the first overdue
/// one, more would only add noise.
const MAX_OUTSTANDING_PINGS: usize = 4;

/// A host-initiated close: the code and reason go out in the close frame.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (at most 123 bytes are sent).
    pub reason: String,
}

/// What a session's endpoint makes of it, beyond liveness: what its
/// client's data frames mean, whether published messages reach it, and
/// whether it gets WebSocket Pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: data frames are the application's; published messages go out;
    /// pinged by tier.
    Plain,
    /// A OneBot v11 endpoint.
    OneBot {
        /// `/`, `/event` or `/api`.
        role: OneBotRole,
        /// Whether the profile sends WebSocket Pings (`onebot.ws_ping`).
        ws_ping: bool,
    },
}

impl Endpoint {
    /// Whether `POST /publish` delivers to it (OneBot `/api` takes none).
    pub fn receives_published(self) -> bool {
        match self {
            Endpoint::Plain => true,
            Endpoint::OneBot { role, .. } => role.receives_events(),
        }
    }

    /// Whether the host sends it WebSocket Pings. Without them a probe only
    /// refreshes the kernel's view of the socket (`TCP_INFO`), and no pong
    /// can be overdue.
    pub fn sends_pings(self) -> bool {
        match self {
            Endpoint::Plain => true,
            Endpoint::OneBot { ws_ping, .. } => ws_ping,
        }
    }
}

/// What is known about a session, shared between its task, the tick, the
/// publish path and the API.
pub struct Session {
    /// Unique for the life of the process.
    pub id: SessionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's own identity (`client_id`), used to supersede a dead twin.
    pub identity: Option<String>,
    /// Client class, as policies see it.
    pub class: Arc<str>,
    /// Which endpoint it came in on.
    pub endpoint: Endpoint,
    /// Its entry in the registry's schedule (`usize::MAX` until registered).
    pub(crate) slot: AtomicUsize,
    /// When the session was accepted.
    pub connected_at: Instant,
    /// The same, as Unix time in ms, for the API.
    pub connected_unix_ms: u64,
    state: Mutex<SessionState>,
    wake: Notify,
}

/// A ping waiting for its pong.
#[derive(Debug, Clone, Copy)]
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
}

/// The mutable part of a session, behind one small lock.
pub(crate) struct SessionState {
    pub(crate) last_inbound: Instant,
    pub(crate) last_app: Option<Instant>,
    pub(crate) last_pong: Option<Instant>,
    /// Unanswered pings, oldest first.
    pub(crate) pings: VecDeque<PingInFlight>,
    pub(crate) last_ping_at: Option<Instant>,
    pub(crate) last_rtt_ms: Option<u32>,
    pub(crate) send_errors: u32,
    pub(crate) transport_errors: u32,
    pub(crate) queue: VecDeque<Message>,
    pub(crate) queued_bytes: usize,
    pub(crate) backlog_since: Option<Instant>,
    pub(crate) dropped_frames: u32,
    pub(crate) tier: Tier,
    pub(crate) health: u8,
    pub(crate) next_ping_at: Instant,
    pub(crate) reassess_at: Instant,
    /// Something happened that the policy should hear about at the next tick.
    pub(crate) significant: bool,
    pub(crate) overdue_reported: bool,
    /// When the tick (or the policy) asked for a probe. A ping's clock
    /// starts here, not when the task gets to send it, so a pong deadline
    /// falls on a tick and an overdue pong is seen at that tick, not one later.
    pub(crate) ping_requested: Option<Instant>,
    pub(crate) close: Option<CloseRequest>,
    pub(crate) tcp: Option<TcpFacts>,
}

impl SessionState {
    /// When the tick must next look at this session: its next ping, its
    /// next assessment, or its pong deadline, whichever comes first; `None`
    /// when the policy must hear of something now.
    pub(crate) fn next_due(&self, pong_timeout: Duration) -> Option<Instant> {
        if self.significant {
            return None;
        }
        let mut due = self.next_ping_at.min(self.reassess_at);
        if let Some(requested) = self.ping_requested {
            due = due.min(requested + pong_timeout);
        }
        if !self.overdue_reported {
            if let Some(ping) = self.pings.front() {
                due = due.min(ping.requested + pong_timeout);
            }
        }
        Some(due)
    }

    /// The one definition of an overdue pong: the oldest unanswered ping is
    /// older than the tier's pong timeout.
    pub(crate) fn pong_overdue(&self, now: Instant, pong_timeout: Duration) -> bool {
        self.pings
            .front()
            .is_some_and(|ping| now.saturating_duration_since(ping.requested) >= pong_timeout)
    }
}

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

impl Session {
    /// A new session, to be watched in the `fast` tier until the policy says
    /// otherwise, and assessed at the next tick.
    pub fn new(
        id: SessionId,
        peer: SocketAddr,
        identity: Option<String>,
        class: Arc<str>,
        endpoint: Endpoint,
        first_ping_in: Duration,
    ) -> Self {
        let now = Instant::now();
        let connected_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Session {
            id,
            peer,
            identity,
            class,
            endpoint,
            slot: AtomicUsize::new(usize::MAX),
            connected_at: now,
            connected_unix_ms,
            state: Mutex::new(SessionState {
                last_inbound: now,
                last_app: None,
                last_pong: None,
                pings: VecDeque::new(),
                last_ping_at: None,
                last_rtt_ms: None,
                send_errors: 0,
                transport_errors: 0,
                queue: VecDeque::new(),
                queued_bytes: 0,
                backlog_since: None,
                dropped_frames: 0,
                tier: Tier::Fast,
                health: 100,
                next_ping_at: now + first_ping_in,
                reassess_at: now,
                significant: false,
                overdue_reported: false,
                ping_requested: None,
                close: None,
                tcp: None,
            }),
            wake: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the session's task to look at its queue and control state.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the session's task to close the connection; returns false if a
    /// close was already requested.
    pub(crate) fn request_close(&self, request: CloseRequest) -> bool {
        let requested = {
            let mut state = self.lock();
            if state.close.is_some() {
                false
            } else {
                state.close = Some(request);
                true
            }
        };
        self.wake();
        requested
    }

    /// Offers a message for delivery, within the queue's limits.
    pub(crate) fn enqueue(
        &self,
        message: Message,
        size: usize,
        soft: usize,
        hard: usize,
    ) -> Enqueued {
        let outcome = {
            let mut state = self.lock();
            if state.close.is_some() {
                return Enqueued::Closing;
            }
            if state.queued_bytes.saturating_add(size) > hard {
                state.dropped_frames = state.dropped_frames.saturating_add(1);
                state.significant = true;
                return Enqueued::Dropped;
            }
            let mut outcome = if state.queue.is_empty() {
                Enqueued::Immediate
            } else {
                Enqueued::Behind
            };
            state.queue.push_back(message);
            state.queued_bytes += size;
            if state.queued_bytes > soft && state.backlog_since.is_none() {
                state.backlog_since = Some(Instant::now());
                state.significant = true;
                outcome = Enqueued::CrossedSoftMark(state.queued_bytes);
            }
            outcome
        };
        self.wake();
        outcome
    }

    /// The facts the policy sees, as of `now`.
    pub(crate) fn facts(
        &self,
        state: &SessionState,
        now: Instant,
        pong_timeout: Duration,
    ) -> SessionFacts {
        let since = |at: Instant| now.saturating_duration_since(at).as_millis() as u64;
        let oldest_ping = state.pings.front().map(|ping| ping.requested);
        let pong_overdue = state.pong_overdue(now, pong_timeout);
        SessionFacts {
            id: self.id,
            client_class: Arc::clone(&self.class),
            age_ms: since(self.connected_at),
            idle_ms: since(state.last_inbound),
            app_idle_ms: since(state.last_app.unwrap_or(self.connected_at)),
            since_pong_ms: state.last_pong.map(since),
            outstanding_pings: state.pings.len() as u32,
            oldest_ping_ms: oldest_ping.map(since),
            pong_overdue,
            last_rtt_ms: state.last_rtt_ms,
            send_errors: state.send_errors,
            transport_errors: state.transport_errors,
            queued_bytes: state.queued_bytes as u64,
            queued_frames: state.queue.len() as u32,
            backlog_ms: state.backlog_since.map(since).unwrap_or(0),
            dropped_frames: state.dropped_frames,
            tier: state.tier,
            tcp: state.tcp,
        }
    }

    /// Tier, health, RTT, queue and last inbound activity, for the API.
    pub fn snapshot(&self) -> SessionSnapshot {
        let state = self.lock();
        SessionSnapshot {
            tier: state.tier,
            health: state.health,
            rtt_ms: state.last_rtt_ms,
            queued_bytes: state.queued_bytes,
            last_seen_ms: state.last_inbound.elapsed().as_millis() as u64,
            tcp: state.tcp,
        }
    }
}

/// A point-in-time view of a session for the API.
#[derive(Debug, Clone, Copy)]
pub struct SessionSnapshot {
    /// Current tier.
    pub tier: Tier,
    /// Last health the policy gave.
    pub health: u8,
    /// Last ping/pong round trip.
    pub rtt_ms: Option<u32>,
    /// Outbound bytes waiting.
    pub queued_bytes: usize,
    /// Time since the last inbound frame.
    pub last_seen_ms: u64,
    /// Kernel TCP facts as of the last ping.
    pub tcp: Option<TcpFacts>,
}

/// Why a session's task ended.
#[derive(Debug)]
enum SessionEnd {
    /// The host asked (policy eviction, supersede, admin, capacity, shutdown).
    Requested(CloseRequest),
    /// The client sent a close frame.
    ClientClosed(u16),
    /// EOF without a close frame, reset, or a read error.
    Transport(String),
    /// A write failed.
    SendFailed(String),
    /// The client broke the protocol; close with this code.
    Protocol(u16, String),
    /// The client sent frames faster than allowed.
    RateLimited,
}

/// What the tick's probe request turns into for this session.
enum Probe {
    /// A WebSocket Ping with this sequence number.
    Ping(u64),
    /// Only a `TCP_INFO` refresh: the endpoint takes no pings.
    Silent,
}

/// A simple token bucket over inbound frames.
struct InboundLimiter {
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl InboundLimiter {
    fn new(per_second: u32) -> Self {
        let capacity = f64::from(per_second.max(1));
        InboundLimiter {
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.capacity).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type WsSink = SplitSink<WebSocket, Message>;
type WsStream = SplitStream<WebSocket>;

/// Writes whatever is queued (pings first), then flushes. Pending leaves
/// nothing half-done: a message leaves the queue only once the sink has
/// accepted it, so a cancelled poll loses nothing.
fn drive_writes(
    cx: &mut Context<'_>,
    sink: &mut WsSink,
    session: &Session,
    control: &mut Option<Message>,
    needs_flush: &mut bool,
    soft_mark: usize,
) -> Poll<Result<(), axum::Error>> {
    loop {
        let has_data = control.is_some() || !session.lock().queue.is_empty();
        if !has_data {
            break;
        }
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        let message = match control.take() {
            Some(message) => Some(message),
            None => {
                let mut state = session.lock();
                let message = state.queue.pop_front();
                if let Some(message) = &message {
                    state.queued_bytes = state.queued_bytes.saturating_sub(message_len(message));
                    if state.queued_bytes <= soft_mark {
                        state.backlog_since = None;
                    }
                }
                message
            }
        };
        if let Some(message) = message {
            Pin::new(&mut *sink).start_send(message)?;
            *needs_flush = true;
        }
    }
    if *needs_flush {
        ready!(Pin::new(&mut *sink).poll_flush(cx))?;
        *needs_flush = false;
    }
    Poll::Ready(Ok(()))
}

/// Payload size of a data message, as queues count it.
pub(crate) fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

fn frame_kind(message: &Message) -> FrameKind {
    match message {
        Message::Text(_) => FrameKind::Text,
        Message::Binary(_) => FrameKind::Binary,
        Message::Ping(_) => FrameKind::Ping,
        Message::Pong(_) => FrameKind::Pong,
        Message::Close(_) => FrameKind::Close,
    }
}

/// The close code for a read error: 1009 for an oversized message, 1007 for
/// invalid UTF-8, 1002 for other protocol violations; `None` for plain
/// transport failures (there is no one to tell).
fn protocol_close_code(error: &axum::Error) -> Option<u16> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
    use tokio_tungstenite::tungstenite::Error as WsError;
    let source = std::error::Error::source(error)?;
    let ws_error = source.downcast_ref::<WsError>()?;
    match ws_error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => {
            Some(1009)
        }
        WsError::Utf8(_) => Some(1007),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(1002),
        _ => None,
    }
}

/// Starts the task that owns an accepted session's socket. A task of its
/// own rather than the upgrade's: the upgrade task's state (the HTTP
/// upgrade, the handshake config, the socket before it was split) would
/// otherwise stay allocated for the session's whole life.
pub(crate) fn start(hub: Arc<Hub>, session: Arc<Session>, socket: WebSocket, fd: RawFd) {
    let (sink, stream) = socket.split();
    tokio::spawn(run(hub, session, sink, stream, fd));
}

/// Runs a session until it ends, then tells the hub why.
async fn run(
    hub: Arc<Hub>,
    session: Arc<Session>,
    mut sink: WsSink,
    mut stream: WsStream,
    fd: RawFd,
) {
    let soft_mark = hub.config.sessions.queue_soft_bytes;
    let mut limiter = InboundLimiter::new(hub.config.sessions.max_inbound_frames_per_sec);
    // A ping waiting to jump the queue (the only control frame the host
    // originates; a newer one replaces an unsent older one).
    let mut control: Option<Message> = None;
    let mut needs_flush = false;

    let end = loop {
        // Host requests first: a close ends the loop, a ping jumps the queue.
        let (close, probe) = {
            let mut state = session.lock();
            let close = state.close.clone();
            let requested = state.ping_requested.take();
            let probe = if let (Some(requested_at), None) = (requested, &close) {
                if session.endpoint.sends_pings() {
                    let sequence = hub.next_ping_sequence();
                    let send_delay = Instant::now().saturating_duration_since(requested_at);
                    state.pings.push_back(PingInFlight {
                        sequence,
                        requested: requested_at,
                        send_delay_us: send_delay.as_micros().min(u128::from(u32::MAX)) as u32,
                    });
                    while state.pings.len() > MAX_OUTSTANDING_PINGS {
                        state.pings.pop_front();
                    }
                    state.last_ping_at = Some(requested_at);
                    Some(Probe::Ping(sequence))
                } else {
                    Some(Probe::Silent)
                }
            } else {
                None
            };
            (close, probe)
        };
        if let Some(close) = close {
            break SessionEnd::Requested(close);
        }
        if let Some(probe) = probe {
            // Either way the kernel's view of the socket is refreshed: for a
            // session without pings it is the probe.
            let tcp = crate::tcp::tcp_info(fd);
            session.lock().tcp = tcp;
            if let Probe::Ping(sequence) = probe {
                control = Some(Message::Ping(sequence.to_be_bytes().to_vec().into()));
                hub.metrics.pings_sent.inc();
                hub.event(EventKind::PingSent {
                    session: session.id,
                });
            }
        }
        let has_writes = needs_flush || control.is_some() || !session.lock().queue.is_empty();

        tokio::select! {
            biased;
            () = session.wake.notified() => {}
            inbound = stream.next() => {
                let message = match inbound {
                    None => break SessionEnd::Transport("connection ended without a close frame".to_owned()),
                    Some(Err(error)) => match protocol_close_code(&error) {
                        Some(code) => break SessionEnd::Protocol(code, error.to_string()),
                        None => break SessionEnd::Transport(error.to_string()),
                    },
                    Some(Ok(message)) => message,
                };
                let now = Instant::now();
                if !limiter.allow(now) {
                    break SessionEnd::RateLimited;
                }
                if let Some(end) = on_inbound(&hub, &session, message, now) {
                    break end;
                }
            }
            written = std::future::poll_fn(|cx| {
                drive_writes(cx, &mut sink, &session, &mut control, &mut needs_flush, soft_mark)
            }), if has_writes => {
                if let Err(error) = written {
                    break SessionEnd::SendFailed(error.to_string());
                }
            }
        }
    };
    // Boxed: the closing handshake's state (a send, a read, a timer) would
    // otherwise be part of every idle session's task, for its whole life.
    Box::pin(finish(&hub, &session, sink, stream, end)).await;
}

/// Records an inbound frame; `Some` when it ends the session.
fn on_inbound(
    hub: &Arc<Hub>,
    session: &Arc<Session>,
    message: Message,
    now: Instant,
) -> Option<SessionEnd> {
    let kind = frame_kind(&message);
    let size = match &message {
        Message::Ping(payload) | Message::Pong(payload) => payload.len(),
        other => message_len(other),
    };
    if hub.config.sessions.frame_events {
        hub.event(EventKind::FrameReceived {
            session: session.id,
            kind,
            size_bytes: size as u32,
        });
    }
    let mut state = session.lock();
    state.last_inbound = now;
    match message {
        Message::Text(_) | Message::Binary(_) => {
            state.last_app = Some(now);
            drop(state);
            hub.count_app_frame();
            if let Endpoint::OneBot { role, .. } = session.endpoint {
                if role.answers_actions() {
                    let frame: &[u8] = match &message {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(bytes) => bytes,
                        _ => &[],
                    };
                    crate::onebot::on_action(hub, session, frame);
                }
            }
        }
        Message::Ping(_) => {}
        Message::Pong(payload) => {
            let Ok(bytes) = <[u8; 8]>::try_from(payload.as_ref()) else {
                return None; // an unsolicited pong: activity, nothing to match
            };
            let sequence = u64::from_be_bytes(bytes);
            // A pong for a ping no longer tracked is activity, nothing more.
            let position = state
                .pings
                .iter()
                .position(|ping| ping.sequence == sequence)?;
            let ping = state.pings[position];
            let sent = ping.requested + Duration::from_micros(u64::from(ping.send_delay_us));
            // A pong answers its ping and every earlier one.
            state.pings.drain(..=position);
            let rtt = now.saturating_duration_since(sent);
            let rtt_ms = rtt.as_millis().min(u128::from(u32::MAX - 1)) as u32;
            state.last_rtt_ms = Some(rtt_ms);
            state.last_pong = Some(now);
            state.overdue_reported = false;
            drop(state);
            hub.metrics.pongs_received.inc();
            hub.metrics.rtt_seconds.observe(rtt.as_secs_f64());
            hub.event(EventKind::PongReceived {
                session: session.id,
                rtt_ms,
            });
        }
        Message::Close(frame) => {
            let code = frame.map(|f| f.code).unwrap_or(1005);
            return Some(SessionEnd::ClientClosed(code));
        }
    }
    None
}

/// Closes the connection as `end` requires and removes the session.
async fn finish(
    hub: &Hub,
    session: &Arc<Session>,
    mut sink: WsSink,
    mut stream: WsStream,
    end: SessionEnd,
) {
    let grace = Duration::from_millis(hub.config.sessions.close_grace_ms);
    match end {
        SessionEnd::Requested(request) => {
            let clean =
                close_handshake(&mut sink, &mut stream, request.code, &request.reason, grace).await;
            hub.session_closed(clean);
        }
        SessionEnd::ClientClosed(code) => {
            // axum answers the client's close frame itself; flush it out.
            let _ = tokio::time::timeout(grace, futures_util::SinkExt::flush(&mut sink)).await;
            hub.remove_ended(
                session,
                "closed",
                EventKind::CloseReceived {
                    session: session.id,
                    code,
                },
            );
            hub.session_closed(true);
        }
        SessionEnd::Transport(detail) => {
            session.lock().transport_errors += 1;
            tracing::debug!(session_id = session.id, peer = %session.peer, %detail, "transport failure");
            hub.remove_ended(
                session,
                "transport",
                EventKind::TransportError {
                    session: session.id,
                    detail,
                },
            );
            hub.session_closed(false);
        }
        SessionEnd::SendFailed(detail) => {
            session.lock().send_errors += 1;
            hub.metrics.send_failures.inc();
            tracing::debug!(session_id = session.id, peer = %session.peer, %detail, "write failed");
            hub.remove_ended(
                session,
                "send-failed",
                EventKind::SendFailed {
                    session: session.id,
                    detail,
                },
            );
            hub.session_closed(false);
        }
        SessionEnd::Protocol(code, detail) => {
            session.lock().transport_errors += 1;
            tracing::info!(session_id = session.id, peer = %session.peer, code, %detail, "protocol violation");
            hub.remove_ended(
                session,
                "protocol",
                EventKind::TransportError {
                    session: session.id,
                    detail: detail.clone(),
                },
            );
            let clean =
                close_handshake(&mut sink, &mut stream, code, "protocol error", grace).await;
            hub.session_closed(clean);
        }
        SessionEnd::RateLimited => {
            tracing::info!(session_id = session.id, peer = %session.peer, "inbound frame rate exceeded");
            hub.remove_ended(
                session,
                "rate-limit",
                EventKind::TransportError {
                    session: session.id,
                    detail: "inbound frame rate exceeded".to_owned(),
                },
            );
            let clean =
                close_handshake(&mut sink, &mut stream, 1008, "rate limit exceeded", grace).await;
            hub.session_closed(clean);
        }
    }
}

/// Sends a close frame and waits, within `grace`, for the client's. True
/// when the client answered: a clean close.
async fn close_handshake(
    sink: &mut WsSink,
    stream: &mut WsStream,
    code: u16,
    reason: &str,
    grace: Duration,
) -> bool {
    let reason = truncate_reason(reason);
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let handshake = async {
        if futures_util::SinkExt::send(sink, Message::Close(Some(frame)))
            .await
            .is_err()
        {
            return false;
        }
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Close(_)) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    };
    tokio::time::timeout(grace, handshake)
        .await
        .unwrap_or(false)
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(vigil_policy_sdk::MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

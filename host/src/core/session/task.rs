//! The one task that owns a session's socket: reads, writes and host
//! requests (close, ping) in one `select!`, then the closing handshake. What
//! it learns it records on the session's state and reports to the hub.

use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{Sink, StreamExt};
use vigil_policy_runtime::EventKind;

use crate::core::hub::Hub;
use crate::core::session::queue::{frame_kind, frame_sent, frame_size};
use crate::core::session::state::{ping_payload, CloseRequest, Probe};
use crate::core::session::Session;

/// What the task does with a client's data frame, beyond recording it: the
/// endpoint's handler (a profile's action requests, say). Called on the
/// session's own task, so it must not block; long work goes to a task of
/// its own.
pub(crate) type InboundData = Box<dyn FnMut(&[u8]) + Send>;

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

/// Writes whatever is queued (pings first), then flushes. Pending leaves
/// nothing half-done: a message leaves the queue only once the sink has
/// accepted it, so a cancelled poll loses nothing.
fn drive_writes(
    cx: &mut Context<'_>,
    sink: &mut WebSocket,
    hub: &Hub,
    session: &Session,
    control: &mut Option<Message>,
    needs_flush: &mut bool,
) -> Poll<Result<(), axum::Error>> {
    let soft_mark = hub.config.sessions.queue_soft_bytes;
    loop {
        let has_data = control.is_some() || session.lock().has_outbound();
        if !has_data {
            break;
        }
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        let message = match control.take() {
            Some(message) => Some(message),
            None => {
                let mut state = session.lock();
                let message = state.pop_outbound(soft_mark);
                // Claimed under the lock that direct writers of data hold:
                // none can pass the message on its way through the stack.
                if let (Some(_), Some(meter)) = (&message, &session.meter) {
                    meter.gate.stream_writes();
                }
                message
            }
        };
        if let Some(message) = message {
            if hub.config.sessions.frame_events {
                hub.event(frame_sent(session.id, &message));
            }
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
pub(crate) fn start(
    hub: Arc<Hub>,
    session: Arc<Session>,
    socket: WebSocket,
    fd: RawFd,
    on_data: Option<InboundData>,
) {
    // Boxed: tokio's task cells are 128-byte aligned, and the socket inline
    // pushed this task's cell up a size; measured at 10 000 idle sessions,
    // 3.65 KB per session inline against 3.31 KB boxed.
    tokio::spawn(run(hub, session, Box::new(socket), fd, on_data));
}

/// Closes a socket that never became a session, with `code` and `reason`.
pub(crate) async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = close_handshake(&mut socket, code, reason, Duration::from_secs(1)).await;
}

/// What woke the session's task.
enum Step {
    /// The host asked it to look at its control state (a close, a probe).
    Woken,
    /// A frame, the end of the stream, or a read error.
    Inbound(Option<Result<Message, axum::Error>>),
    /// A write failed.
    WriteFailed(axum::Error),
}

/// Runs a session until it ends, then tells the hub why. The socket is not
/// split: reads and writes are polled in turn from one future, so neither
/// goes through a lock shared with the other.
async fn run(
    hub: Arc<Hub>,
    session: Arc<Session>,
    mut socket: Box<WebSocket>,
    fd: RawFd,
    mut on_data: Option<InboundData>,
) {
    let mut limiter = (!session.endpoint.operator_link)
        .then(|| InboundLimiter::new(hub.config.sessions.max_inbound_frames_per_sec));
    if let Some(meter) = &session.meter {
        meter.activate();
    }
    // A ping waiting to jump the queue (the only control frame the host
    // originates; a newer one replaces an unsent older one).
    let mut control: Option<Message> = None;
    let mut needs_flush = false;
    let tcp_max_age = hub.config.sessions.tcp_info_max_age();

    // Whether to look at the control state (a close, a probe, queued data)
    // before waiting again: at the start and after every wake, since a
    // wake is how all of them arrive (`Session::wake`). A frame read or a
    // write finished changes none of them, so those go straight back to
    // waiting.
    let mut look = true;
    let mut has_writes = false;

    let end = loop {
        if look {
            look = false;
            let now = Instant::now();
            let (close, probe, read_tcp, queued) = {
                let mut state = session.lock();
                let close = state.close_request().cloned();
                let probe =
                    state.take_probe(session.endpoint.pinged, now, || hub.next_ping_sequence());
                let read_tcp = probe.is_some_and(|probe| {
                    session.socket_is_the_clients() && state.tcp_due(probe, now, tcp_max_age)
                });
                (close, probe, read_tcp, state.has_outbound())
            };
            if let Some(close) = close {
                break SessionEnd::Requested(close);
            }
            if let Some(probe) = probe {
                // The kernel's view of the socket, when it can tell the policy
                // something (for a session without pings it is the probe).
                if read_tcp {
                    let tcp = crate::core::tcp::tcp_info(fd);
                    // Through the registry: for a silent heartbeat the reading
                    // is its answer, which brings the session's assessment forward.
                    hub.registry
                        .update(&session, |state| state.set_tcp(tcp, now));
                }
                if let Probe::Ping(sequence) = probe {
                    control = Some(Message::Ping(ping_payload(sequence).to_vec().into()));
                    hub.ping_sent(session.id, now);
                }
            }
            // A direct write's tail goes out with the next flush.
            if session
                .meter
                .as_ref()
                .is_some_and(|meter| meter.gate.has_tail())
            {
                needs_flush = true;
            }
            has_writes = needs_flush || control.is_some() || queued;
        }

        // In this order: host requests, then reads, then writes. Writes that
        // finish end nothing: the same poll goes on waiting for the rest.
        let step = std::future::poll_fn(|cx| {
            if session.poll_woken(cx).is_ready() {
                return Poll::Ready(Step::Woken);
            }
            if let Poll::Ready(inbound) = socket.poll_next_unpin(cx) {
                return Poll::Ready(Step::Inbound(inbound));
            }
            if has_writes {
                let written = drive_writes(
                    cx,
                    &mut socket,
                    &hub,
                    &session,
                    &mut control,
                    &mut needs_flush,
                );
                match written {
                    Poll::Ready(Ok(())) => has_writes = false,
                    Poll::Ready(Err(error)) => return Poll::Ready(Step::WriteFailed(error)),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Woken => look = true,
            Step::Inbound(inbound) => {
                let message = match inbound {
                    None => {
                        break SessionEnd::Transport(
                            "connection ended without a close frame".to_owned(),
                        )
                    }
                    Some(Err(error)) => match protocol_close_code(&error) {
                        Some(code) => break SessionEnd::Protocol(code, error.to_string()),
                        None => break SessionEnd::Transport(error.to_string()),
                    },
                    Some(Ok(message)) => message,
                };
                if let Some(meter) = &session.meter {
                    meter.message_complete();
                }
                let now = Instant::now();
                if limiter.as_mut().is_some_and(|limiter| !limiter.allow(now)) {
                    break SessionEnd::RateLimited;
                }
                if let Some(end) = on_inbound(&hub, &session, message, now, &mut on_data) {
                    break end;
                }
            }
            Step::WriteFailed(error) => break SessionEnd::SendFailed(error.to_string()),
        }
    };
    // No more pings from the tick: the closing handshake's frames come
    // next, and then the descriptor closes.
    if let Some(meter) = &session.meter {
        meter.gate.close();
    }
    // Boxed: the closing handshake's state (a send, a read, a timer) would
    // otherwise be part of every idle session's task, for its whole life.
    Box::pin(finish(&hub, &session, *socket, end)).await;
}

/// Records an inbound frame; `Some` when it ends the session.
fn on_inbound(
    hub: &Hub,
    session: &Session,
    message: Message,
    now: Instant,
    on_data: &mut Option<InboundData>,
) -> Option<SessionEnd> {
    if hub.config.sessions.frame_events {
        hub.event(EventKind::FrameReceived {
            session: session.id,
            kind: frame_kind(&message),
            size_bytes: frame_size(&message) as u32,
        });
    }
    match message {
        Message::Text(_) | Message::Binary(_) => {
            session.lock().record_inbound(now, true);
            hub.count_app_frame();
            if let Some(handler) = on_data.as_mut() {
                let frame: &[u8] = match &message {
                    Message::Text(text) => text.as_bytes(),
                    Message::Binary(bytes) => bytes,
                    _ => &[],
                };
                handler(frame);
            }
        }
        Message::Ping(_) => session.lock().record_inbound(now, false),
        Message::Pong(payload) => {
            // Through the registry: a heartbeat's answer brings the
            // session's assessment forward (`SessionState::record_pong`).
            let pong = hub.registry.update(session, |state| {
                state.record_inbound(now, false);
                state.record_pong(&payload, now)
            });
            if let Some(pong) = pong {
                hub.metrics.pongs_received.inc();
                hub.metrics.rtt_seconds.observe(pong.rtt.as_secs_f64());
                hub.event_at(
                    EventKind::PongReceived {
                        session: session.id,
                        rtt_ms: pong.rtt_ms,
                    },
                    now,
                );
            }
        }
        Message::Close(frame) => {
            session.lock().record_inbound(now, false);
            let code = frame.map(|f| f.code).unwrap_or(1005);
            return Some(SessionEnd::ClientClosed(code));
        }
    }
    None
}

/// Closes the connection as `end` requires and removes the session.
async fn finish(hub: &Hub, session: &Arc<Session>, mut socket: WebSocket, end: SessionEnd) {
    let grace = Duration::from_millis(hub.config.sessions.close_grace_ms);
    match end {
        SessionEnd::Requested(request) => {
            let clean = close_handshake(&mut socket, request.code, &request.reason, grace).await;
            hub.session_closed(clean);
        }
        SessionEnd::ClientClosed(code) => {
            // axum answers the client's close frame itself; flush it out.
            let _ = tokio::time::timeout(grace, futures_util::SinkExt::flush(&mut socket)).await;
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
            session.lock().count_transport_error();
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
            session.lock().count_send_error();
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
            session.lock().count_transport_error();
            tracing::info!(session_id = session.id, peer = %session.peer, code, %detail, "protocol violation");
            hub.remove_ended(
                session,
                "protocol",
                EventKind::TransportError {
                    session: session.id,
                    detail: detail.clone(),
                },
            );
            let clean = close_handshake(&mut socket, code, "protocol error", grace).await;
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
            let clean = close_handshake(
                &mut socket,
                crate::core::close_codes::POLICY_VIOLATION,
                "rate limit exceeded",
                grace,
            )
            .await;
            hub.session_closed(clean);
        }
    }
}

/// Sends a close frame and waits, within `grace`, for the client's. True
/// when the client answered: a clean close.
async fn close_handshake(socket: &mut WebSocket, code: u16, reason: &str, grace: Duration) -> bool {
    let reason = truncate_reason(reason);
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let handshake = async {
        if futures_util::SinkExt::send(&mut *socket, Message::Close(Some(frame)))
            .await
            .is_err()
        {
            return false;
        }
        while let Some(message) = socket.next().await {
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

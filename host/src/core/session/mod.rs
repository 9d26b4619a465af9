//! One WebSocket session: who it is ([`Session`]), its liveness state
//! machine ([`state`]), its bounded outbound queue ([`queue`]), and the one
//! task that owns its socket ([`task`]).
//!
//! Memory per session is kept small on purpose: one task (reading, writing
//! and control in one `select!`), one small lock, no timer of its own — the
//! shared tick ([`crate::core::tick`]) decides when to ping and when to ask
//! the policy.

mod pings;
pub mod queue;
pub mod state;
pub(crate) mod task;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use vigil_policy_runtime::SessionId;

use crate::core::inbound::InboundMeter;
use crate::core::prefetch::prefetch_shared;
use state::{CloseRequest, SessionState};

/// Cache lines a session's prefetch asks for at most: the whole session,
/// with room to spare.
const SESSION_LINES: usize = 12;

/// What a session's endpoint makes of it, beyond liveness: whether published
/// messages reach it, whether it gets WebSocket Pings, and which profile's
/// endpoint (if any) it came in on. Chosen by whoever accepts the session
/// (the HTTP API for `/ws`, a profile for its own routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether publishes to a matching target reach it.
    pub receives_published: bool,
    /// Whether the host sends it WebSocket Pings. Without them a probe only
    /// refreshes the kernel's view of the socket (`TCP_INFO`), and no pong
    /// can be overdue.
    pub pinged: bool,
    /// The profile whose endpoint it is, so the profile can address its own
    /// sessions (`Target::Profile`); `None` for `/ws`.
    pub profile: Option<&'static str>,
    /// The profile's own subdivision of its sessions, so it can address one
    /// part of them (`Target::ProfileGroup`; a bot protocol: the bot account.s
    /// id); 0 for none.
    pub group: u64,
    /// A connection the operator configured and authenticated (a bot
    /// protocol's upstream), not a client: exempt from the per-session
    /// inbound frame rate, never chosen to make room at the session limit,
    /// and admitted past it. Liveness (pings, pong deadlines, the policy)
    /// applies as to any session.
    pub operator_link: bool,
}

impl Endpoint {
    /// `/ws`: published messages go out; pinged by tier.
    pub const PLAIN: Endpoint = Endpoint {
        receives_published: true,
        pinged: true,
        profile: None,
        group: 0,
        operator_link: false,
    };
}

/// Who a new session is, as its endpoint and authentication established.
pub(crate) struct Admitted {
    pub(crate) peer: SocketAddr,
    pub(crate) identity: Option<String>,
    pub(crate) identity_proven: bool,
    pub(crate) proxied: bool,
    pub(crate) class: Arc<str>,
    pub(crate) endpoint: Endpoint,
    pub(crate) expires_at: Option<std::time::SystemTime>,
    pub(crate) meter: Option<Arc<InboundMeter>>,
}

/// What is known about a session, shared between its task, the tick, the
/// publish path and the API.
///
/// Laid out in this order on purpose (`repr(C)`): a heartbeat's pong first
/// touches the task's waker, the tick first the reference counts in front
/// of the session, and both go on to the id, the slot and the state's lock.
/// Those come first, so both paths find them in the first two cache lines
/// instead of spread over the whole session (BENCHMARKS.md, issue 16,
/// ninth part). What only the API reads comes last.
#[repr(C)]
pub struct Session {
    /// The session's task, to wake when `woken` is set.
    task: AtomicWaker,
    /// Set by [`Session::wake`], taken by the task: look at the state.
    woken: AtomicBool,
    /// Through a trusted proxy: no TCP facts (they are the proxy's).
    pub proxied: bool,
    /// Whether the identity was proven (a verified token), not just claimed:
    /// an unproven claim never supersedes a proven holder.
    pub identity_proven: bool,
    /// Unique for the life of the process.
    pub id: SessionId,
    /// Its entry in the registry's schedule (`usize::MAX` until registered).
    pub(crate) slot: AtomicUsize,
    state: Mutex<SessionState>,
    /// Its share of the inbound budget.
    pub(crate) meter: Option<Arc<InboundMeter>>,
    /// Which endpoint it came in on.
    pub endpoint: Endpoint,
    /// When the session was accepted.
    pub connected_at: Instant,
    /// Client class, as policies see it.
    pub class: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's identity, used to supersede a dead twin.
    pub identity: Option<String>,
    /// The same as `connected_at`, as Unix time in ms, for the API.
    pub connected_unix_ms: u64,
}

impl Session {
    /// A new session, to be watched in the `fast` tier until the policy says
    /// otherwise, and assessed at the next tick.
    pub(crate) fn new(id: SessionId, admitted: Admitted, first_ping_in: Duration) -> Self {
        let now = Instant::now();
        let mut state = SessionState::new(now, first_ping_in);
        if let Some(expires_at) = admitted.expires_at {
            // A token that expires while the clocks disagree still expires:
            // the wall clock's distance, measured once, on the host's clock.
            let left = expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            state.expire_at(now + left);
        }
        Session {
            id,
            peer: admitted.peer,
            identity: admitted.identity,
            identity_proven: admitted.identity_proven,
            proxied: admitted.proxied,
            class: admitted.class,
            endpoint: admitted.endpoint,
            slot: AtomicUsize::new(usize::MAX),
            connected_at: now,
            connected_unix_ms: vigil_policy_runtime::clock::unix_ms_now(),
            meter: admitted.meter,
            state: Mutex::new(state),
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        }
    }

    /// The state, locked. Changes that can bring the session's due time
    /// forward go through [`crate::core::registry::Registry::update`]
    /// instead, which keeps the schedule in step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the session's task to look at its queue and control state. A
    /// wake while the task is busy is kept for its next wait, not lost.
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Ready once [`Session::wake`] was called since the last ready poll
    /// (the task then looks at its state); registers the task to be woken
    /// otherwise. Cheaper than a `Notify`: no waiter list, no lock.
    pub(crate) fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read, so a wake in between is seen.
        self.task.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Starts loading the session's memory (all of it: its state is inline)
    /// ahead of the tick's visit ([`crate::core::prefetch`]): the first
    /// touch of a session idle for a heartbeat's interval otherwise waits
    /// for main memory. (Tried on the session's task too, ahead of a
    /// frame's arrival: no difference measured, so not there.)
    pub(crate) fn prefetch(self: &Arc<Self>) {
        prefetch_shared(self, SESSION_LINES);
    }

    /// Whether the socket's kernel facts (`TCP_INFO`) describe the client's
    /// connection: not through a proxy, whose connection they would be,
    /// misleading the policy about the client.
    pub(crate) fn socket_is_the_clients(&self) -> bool {
        !self.proxied
    }

    /// Asks the session's task to close the connection; returns false if a
    /// close was already requested.
    pub(crate) fn request_close(&self, request: CloseRequest) -> bool {
        let requested = self.lock().request_close(request);
        self.wake();
        requested
    }
}

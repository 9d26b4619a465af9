//! The hub: what every part of the running core shares — configuration,
//! registry, policy thread, metrics, the event buffer — and the operations
//! that span sessions: admitting, evicting, publishing, shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use vigil_policy_runtime::recorder::Recording;
use vigil_policy_runtime::{
    Event, EventKind, PolicyEngine, PolicyHandle, SessionColumns, SessionFacts, SessionId,
};

use crate::core::classes::ClientClasses;
use crate::core::close_codes;
use crate::core::config::HostConfig;
use crate::core::event_buffer::{Added, EventBuffer};
use crate::core::flush::{self, FlushJobs, FlushLane};
use crate::core::inbound::InboundBudget;
use crate::core::metrics::Metrics;
use crate::core::observer::{OpenedSession, SessionObserver};
use crate::core::registry::{Refused, Registry};
use crate::core::removals::{RecentRemovals, Removal};
use crate::core::session::queue::{frame_sent, message_len, Enqueued};
use crate::core::session::state::CloseRequest;
use crate::core::session::Session;

/// Ticks over which sessions are re-assessed after a swap.
pub const REASSESS_SPREAD_TICKS: u64 = 10;

/// Sessions a candidate policy is dry-run on before a swap: a snapshot of
/// the current sessions, up to this many (`vigil policy check` covers
/// batches of 10 000).
pub const DRY_RUN_SESSIONS: usize = 2_000;

/// Events buffered between ticks at most; beyond it events are dropped (and
/// counted) rather than grow memory while the policy is slow.
const EVENT_BUFFER: usize = 65_536;

/// Shared by every task of the running host; private to the core. Everything
/// outside the core reaches it through [`crate::core::SessionHost`].
pub(crate) struct Hub {
    /// The configuration in force.
    pub(crate) config: HostConfig,
    /// Live sessions.
    pub(crate) registry: Registry,
    /// The policy thread.
    pub(crate) policy: PolicyHandle,
    /// The wasm engine candidates are compiled with.
    pub(crate) engine: PolicyEngine,
    /// Prometheus metrics.
    pub(crate) metrics: Metrics,
    /// Inbound bytes held in unfinished messages, all sessions together.
    pub(crate) inbound: Arc<InboundBudget>,
    /// Told of sessions opening and leaving (cluster mode), once installed.
    pub(crate) observer: std::sync::OnceLock<Arc<dyn SessionObserver>>,
    /// The current or last recording of the policy's calls.
    pub(crate) recording: tokio::sync::Mutex<Option<Recording>>,
    /// The last removals, whole, for operators.
    pub(crate) removals: RecentRemovals,
    /// Where publishes' writes take turns ([`crate::core::flush`]).
    flush_lane: FlushLane,
    /// Class names, one copy for all the sessions naming each.
    pub(crate) classes: ClientClasses,
    started: Instant,
    events: EventBuffer,
    ping_sequence: AtomicU64,
    app_frames: AtomicU64,
    live_tasks: AtomicUsize,
    tasks_done: Notify,
    clean_closes: AtomicU64,
    shutting_down: AtomicBool,
}

/// What `POST /publish` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishReport {
    /// Sessions the message was accepted for.
    pub delivered: u64,
    /// Of those, how many had earlier messages still waiting (a backlog).
    pub queued: u64,
    /// Sessions whose queue was full: the message was dropped for them.
    pub dropped: u64,
    /// Sessions found closing or dead: not written to.
    pub evicted: u64,
}

impl PublishReport {
    /// Adds another node's (or round's) counts to these.
    pub fn add(&mut self, other: &PublishReport) {
        self.delivered += other.delivered;
        self.queued += other.queued;
        self.dropped += other.dropped;
        self.evicted += other.evicted;
    }
}

/// Whom to publish to.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every session.
    All,
    /// These sessions.
    Ids(Vec<SessionId>),
    /// The session of a client identity.
    Identity(String),
    /// Every session of a client class.
    Class(String),
    /// Every session accepted on one profile's endpoints.
    Profile(&'static str),
    /// The sessions of one profile's endpoints in one of its groups
    /// ([`crate::core::Endpoint::group`]).
    ProfileGroup(&'static str, u64),
}

impl Hub {
    /// A hub around a running policy thread.
    pub(crate) fn new(
        config: HostConfig,
        engine: PolicyEngine,
        policy: PolicyHandle,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Hub {
            registry: Registry::new(config.tiers),
            inbound: InboundBudget::new(config.server.inbound_budget_bytes),
            observer: std::sync::OnceLock::new(),
            recording: tokio::sync::Mutex::new(None),
            removals: RecentRemovals::default(),
            flush_lane: FlushLane::default(),
            classes: ClientClasses::default(),
            config,
            policy,
            engine,
            metrics,
            started: Instant::now(),
            events: EventBuffer::new(EVENT_BUFFER),
            ping_sequence: AtomicU64::new(0),
            app_frames: AtomicU64::new(0),
            live_tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            clean_closes: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// The host's monotonic clock for policies: ms since start.
    pub(crate) fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Records an event for the policy; dropped if the buffer is full.
    pub(crate) fn event(&self, kind: EventKind) {
        self.event_at(kind, Instant::now());
    }

    /// [`Hub::event`] for something that happened at `at`, a time the
    /// caller already read (the hot paths read the clock once).
    pub(crate) fn event_at(&self, kind: EventKind, at: Instant) {
        let event = Event {
            at_ms: self.now_ms(at),
            kind,
        };
        match self.events.add(event) {
            // A sleeping tick hands events over before the buffer fills.
            Added::Buffered { nearly_full: true } => self.registry.schedule().wake_tick(),
            Added::Buffered { nearly_full: false } => {}
            Added::Dropped => {
                self.metrics.policy_events_dropped.inc();
            }
        }
    }

    /// The events since the last call, oldest first, for the tick to hand
    /// to the policy.
    pub(crate) fn take_events(&self) -> Vec<Event> {
        self.events.take()
    }

    /// A ping went out to `session` at `at`, from its task or from the
    /// tick: counted, and told to the policy.
    pub(crate) fn ping_sent(&self, session: SessionId, at: Instant) {
        self.metrics.pings_sent.inc();
        self.event_at(EventKind::PingSent { session }, at);
    }

    pub(crate) fn next_ping_sequence(&self) -> u64 {
        self.ping_sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_app_frame(&self) {
        self.app_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Inbound application frames since start.
    pub(crate) fn app_frames(&self) -> u64 {
        self.app_frames.load(Ordering::Relaxed)
    }

    /// Whether shutdown has begun (new sessions are refused).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Registers a new session; evicts the twin it supersedes, if any.
    /// When the registry refuses it (an unproven claim to an identity
    /// another session proved, or a full schedule) it is not registered,
    /// and the caller closes it.
    pub(crate) fn admit(&self, session: Arc<Session>) -> Result<(), Refused> {
        let twin = match self.registry.insert(Arc::clone(&session)) {
            Ok(twin) => twin,
            Err(refused) => {
                tracing::warn!(session_id = session.id, peer = %session.peer, identity = ?session.identity, %refused, "session refused");
                return Err(refused);
            }
        };
        self.live_tasks.fetch_add(1, Ordering::SeqCst);
        self.metrics.sessions_opened.inc();
        self.metrics.sessions_active.set(self.registry.len() as i64);
        self.event(EventKind::Connected {
            session: session.id,
            client_class: session.class.to_string(),
        });
        tracing::debug!(session_id = session.id, peer = %session.peer, identity = ?session.identity, "session opened");
        if let Some(twin) = twin {
            self.evict(twin.id, "superseded", close_codes::NORMAL);
        }
        if let Some(observer) = self.observer.get() {
            observer.opened(&OpenedSession {
                id: session.id,
                peer: session.peer,
                identity: session.identity.clone(),
                identity_proven: session.identity_proven,
            });
        }
        Ok(())
    }

    /// Removes a session and asks its task to close it with `code`. Counted
    /// by reason and tier and logged. False if it was already gone.
    pub(crate) fn evict(&self, id: SessionId, reason: &str, code: u16) -> bool {
        let Some(session) = self.registry.remove(id) else {
            return false;
        };
        self.count_removal(&session, reason, Some(code));
        session.request_close(CloseRequest {
            code,
            reason: reason.to_owned(),
        });
        true
    }

    /// Called by a session's task when the session ended by itself (client
    /// close, transport failure): removes and counts it unless an eviction
    /// already did.
    pub(crate) fn remove_ended(&self, session: &Session, reason: &str, event: EventKind) {
        self.event(event);
        if self.registry.remove(session.id).is_some() {
            self.count_removal(session, reason, None);
        }
    }

    /// Gauge, counter by reason and tier, log line and `removed` event for a
    /// session just taken out of the registry; `code` when the host closes it.
    fn count_removal(&self, session: &Session, reason: &str, code: Option<u16>) {
        let tier = session.lock().tier();
        self.metrics.sessions_active.set(self.registry.len() as i64);
        self.metrics.evicted(reason, tier.as_str());
        tracing::info!(
            session_id = session.id,
            peer = %session.peer,
            reason,
            tier = tier.as_str(),
            code,
            "session removed"
        );
        self.removals.record(Removal {
            seq: 0,
            at: vigil_policy_runtime::clock::unix_ms_now(),
            session: session.id,
            identity: session.identity.clone(),
            class: Arc::clone(&session.class),
            peer: session.peer,
            reason: reason.to_owned(),
            tier: tier.as_str(),
            code,
        });
        self.event(EventKind::Removed {
            session: session.id,
            reason: reason.to_owned(),
        });
        if let Some(observer) = self.observer.get() {
            observer.closed(session.id, session.identity.as_deref(), reason);
        }
    }

    /// Called when a session's task is done with its connection.
    pub(crate) fn session_closed(&self, clean: bool) {
        if clean {
            self.clean_closes.fetch_add(1, Ordering::Relaxed);
        }
        if self.live_tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.tasks_done.notify_waiters();
        }
    }

    /// Session tasks still running (sessions not yet fully closed).
    pub(crate) fn live_tasks(&self) -> usize {
        self.live_tasks.load(Ordering::SeqCst)
    }

    /// The facts of one session as of `now`.
    pub(crate) fn facts(&self, session: &Session, now: Instant) -> SessionFacts {
        let state = session.lock();
        let timeout = self.config.tiers.timing(state.tier()).pong_timeout();
        state.facts(
            session.id,
            &session.class,
            session.connected_at,
            now,
            timeout,
        )
    }

    /// Has every session assessed by the new policy within the next
    /// [`REASSESS_SPREAD_TICKS`] ticks after a swap, rather than at each
    /// session's next scheduled assessment; spread so that no single tick
    /// carries every session at once.
    pub(crate) fn reassess_all(&self) {
        let now = Instant::now();
        let tick = Duration::from_millis(self.config.sessions.tick_ms);
        self.registry.for_each(|session| {
            let slot = (session.id % REASSESS_SPREAD_TICKS) as u32;
            self.registry
                .update(session, |state| state.reassess_by(now + tick * slot));
        });
    }

    /// Every live session's facts as of now.
    pub(crate) fn facts_snapshot(&self) -> (u64, SessionColumns) {
        self.facts_sample(usize::MAX)
    }

    /// Up to `limit` live sessions' facts as of now.
    pub(crate) fn facts_sample(&self, limit: usize) -> (u64, SessionColumns) {
        let now = Instant::now();
        let mut facts = SessionColumns::with_capacity(self.registry.len().min(limit));
        self.registry.for_each(|session| {
            if facts.len() < limit {
                facts.push(&self.facts(session, now));
            }
        });
        (self.now_ms(now), facts)
    }

    /// Delivers one message to one session: queued within the queue's
    /// limits, and written to the socket from here when nothing was ahead
    /// of it ([`crate::core::flush`]); tells the policy of backpressure and
    /// counts what was dropped.
    pub(crate) fn deliver(&self, session: &Session, message: Message) -> Enqueued {
        self.deliver_within(session, message, self.config.sessions.queue_max_bytes)
    }

    /// [`Hub::deliver`] without the hard limit (the soft mark still counts):
    /// for answers to a client's own requests, which must not be dropped.
    pub(crate) fn deliver_unbounded(&self, session: &Session, message: Message) -> Enqueued {
        self.deliver_within(session, message, usize::MAX)
    }

    fn deliver_within(&self, session: &Session, message: Message, hard: usize) -> Enqueued {
        let outcome = self.enqueue(session, message, hard);
        if outcome == Enqueued::Immediate {
            self.flush(session);
        }
        outcome
    }

    /// Writes what `session` has queued to its socket directly where it
    /// can ([`crate::core::flush`]), and wakes its task for the rest.
    fn flush(&self, session: &Session) {
        let frame_events = self.config.sessions.frame_events;
        let now = frame_events.then(Instant::now);
        let flushed =
            flush::write_queued(session, self.config.sessions.queue_soft_bytes, |message| {
                if let Some(now) = now {
                    self.event_at(frame_sent(session.id, message), now);
                }
            });
        if flushed.written > 0 {
            self.metrics
                .messages_written_directly
                .inc_by(flushed.written as u64);
        }
        if flushed.wake_task {
            session.wake();
        }
    }

    /// Queues `message` for `session`. Whoever queues a message into an
    /// empty queue (`Immediate`) sees that it is written: flushes the
    /// queue or has it flushed. Messages queued behind it go with it.
    fn enqueue(&self, session: &Session, message: Message, hard: usize) -> Enqueued {
        let size = message_len(&message);
        let soft = self.config.sessions.queue_soft_bytes;
        let now = Instant::now();
        // Backpressure and drops make the session due at once (the registry
        // writes the schedule under the same lock): the policy hears of it
        // at the next tick, not at the next scheduled assessment.
        let outcome = self
            .registry
            .update(session, |state| state.offer(message, size, soft, hard, now));
        match outcome {
            Enqueued::CrossedSoftMark(queued_bytes) => self.event(EventKind::Backpressure {
                session: session.id,
                queued_bytes: queued_bytes as u64,
            }),
            Enqueued::Dropped => {
                self.metrics.messages_dropped.inc();
            }
            Enqueued::Immediate | Enqueued::Behind | Enqueued::Closing => {}
        }
        if outcome.accepted() {
            self.metrics.messages_queued.inc();
        }
        outcome
    }

    /// Offers `data` to the targeted sessions' queues. Sessions whose
    /// endpoint takes no published messages are skipped.
    pub(crate) fn publish(self: &Arc<Self>, target: &Target, data: Message) -> PublishReport {
        let mut report = PublishReport::default();
        let hard = self.config.sessions.queue_max_bytes;
        let hub = Arc::clone(self);
        let mut flushes = FlushJobs::new(
            move |session: &Session| hub.flush(session),
            &self.flush_lane,
        );
        let mut offer = |session: &Arc<Session>| {
            if !session.endpoint.receives_published {
                return;
            }
            match self.enqueue(session, data.clone(), hard) {
                Enqueued::Immediate => {
                    report.delivered += 1;
                    // Only a socket that takes direct writes waits for a
                    // job; any other's task writes it, woken now.
                    if flush::direct_gate(session).is_some() {
                        flushes.add(session);
                    } else {
                        session.wake();
                    }
                }
                Enqueued::Behind | Enqueued::CrossedSoftMark(_) => {
                    report.delivered += 1;
                    report.queued += 1;
                }
                Enqueued::Dropped => report.dropped += 1,
                Enqueued::Closing => report.evicted += 1,
            }
        };
        match target {
            Target::All => self.registry.for_each(&mut offer),
            Target::Ids(ids) => {
                for id in ids {
                    if let Some(session) = self.registry.get(*id) {
                        offer(&session);
                    }
                }
            }
            Target::Identity(identity) => {
                if let Some(session) = self.registry.by_identity(identity) {
                    offer(&session);
                }
            }
            Target::Class(class) => self.registry.for_each(|session| {
                if &*session.class == class.as_str() {
                    offer(session);
                }
            }),
            Target::Profile(profile) => self.registry.for_each(|session| {
                if session.endpoint.profile == Some(*profile) {
                    offer(session);
                }
            }),
            Target::ProfileGroup(profile, group) => self.registry.for_each(|session| {
                if session.endpoint.profile == Some(*profile) && session.endpoint.group == *group {
                    offer(session);
                }
            }),
        }
        flushes.finish();
        report
    }

    /// Keeps the inbound budget: past it, closes the sessions holding the
    /// most unfinished inbound bytes (1009) until the rest fit in nine
    /// tenths of it; then lets paused connections read again.
    pub(crate) fn enforce_inbound_budget(&self) {
        let budget = &self.inbound;
        self.metrics.inbound_held_bytes.set(budget.held() as i64);
        if budget.exceeded() {
            let mut holders: Vec<(usize, SessionId)> = Vec::new();
            self.registry.for_each(|session| {
                if let Some(meter) = &session.meter {
                    let held = meter.held();
                    if held > 0 {
                        holders.push((held, session.id));
                    }
                }
            });
            holders.sort_unstable_by(|a, b| b.cmp(a));
            let target = budget.limit() / 10 * 9;
            for (_, id) in holders {
                if budget.held() <= target {
                    break;
                }
                if let Some(session) = self.registry.get(id) {
                    if let Some(meter) = &session.meter {
                        // Its bytes go back to the budget now, not when its
                        // task has finished closing.
                        meter.forfeit();
                    }
                    self.evict(id, "inbound-budget", close_codes::MESSAGE_TOO_BIG);
                }
            }
        }
        budget.resume_paused();
    }

    /// Graceful shutdown: closes every session with 1001 and waits up to the
    /// drain timeout for them to finish. Returns (clean closes, sessions).
    pub(crate) async fn shutdown(&self) -> (u64, usize) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let clean_before = self.clean_closes.load(Ordering::Relaxed);
        let sessions = self.registry.snapshot();
        let total = sessions.len();
        for session in &sessions {
            self.evict(session.id, "shutdown", close_codes::SHUTDOWN);
        }
        let drain = Duration::from_millis(self.config.sessions.drain_timeout_ms);
        let deadline = tokio::time::Instant::now() + drain;
        while self.live_tasks() > 0 {
            let notified = self.tasks_done.notified();
            if self.live_tasks() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let clean = self.clean_closes.load(Ordering::Relaxed) - clean_before;
        (clean, total)
    }
}

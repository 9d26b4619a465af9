//! The hub: what every part of the running host shares — configuration,
//! registry, policy thread, metrics, the event buffer — and the operations
//! that span sessions: admitting, evicting, publishing, shutting down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use serde::Serialize;
use tokio::sync::{mpsc, Notify};
use vigil_policy_sdk::{Event, EventKind, SessionFacts, SessionId};

use crate::config::VigilConfig;
use crate::metrics::Metrics;
use crate::onebot::OneBotProfile;
use crate::policy::{
    validate_off_runtime, PluginReport, PluginSource, PolicyEngine, PolicyHandle,
    RejectedCandidate, Supervisor, Validated,
};
use crate::registry::Registry;
use crate::session::{message_len, CloseRequest, Endpoint, Enqueued, Session};

/// Ticks over which sessions are re-assessed after a swap.
pub const REASSESS_SPREAD_TICKS: u64 = 10;

/// Sessions a candidate policy is dry-run on before a swap: a snapshot of
/// the current sessions, up to this many (`vigil policy check` covers
/// batches of 10 000).
pub const DRY_RUN_SESSIONS: usize = 2_000;

/// Events buffered between ticks at most; beyond it events are dropped (and
/// counted) rather than grow memory while the policy is slow.
const EVENT_BUFFER: usize = 65_536;

/// Close codes the host itself uses.
pub mod close_codes {
    /// Shutdown ("going away").
    pub const SHUTDOWN: u16 = 1001;
    /// A newer session of the same client took over; or an operator's removal.
    pub const NORMAL: u16 = 1000;
    /// Dropped to make room under the session limit ("try again later").
    pub const CAPACITY: u16 = 1013;
}

/// Shared by every task of the running host.
pub struct Hub {
    /// The configuration in force.
    pub config: VigilConfig,
    /// Live sessions.
    pub registry: Registry,
    /// The policy thread.
    pub policy: PolicyHandle,
    /// The wasm engine candidates are compiled with.
    pub engine: PolicyEngine,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The OneBot v11 profile, when enabled.
    pub onebot: Option<OneBotProfile>,
    started: Instant,
    events: mpsc::Sender<Event>,
    event_inbox: Mutex<Option<mpsc::Receiver<Event>>>,
    events_dropped: AtomicU64,
    ping_sequence: AtomicU64,
    app_frames: AtomicU64,
    live_tasks: AtomicUsize,
    tasks_done: Notify,
    clean_closes: AtomicU64,
    shutting_down: AtomicBool,
}

/// What `POST /publish` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// A completed swap.
#[derive(Debug, Clone)]
pub struct SwapReport {
    /// The new active policy.
    pub plugin: PluginReport,
    /// Compile (or cache hit), instantiate, configure and dry run.
    pub load_time: Duration,
    /// From the request to the new policy serving.
    pub swap_time: Duration,
    /// Sessions in the dry run.
    pub dry_run_sessions: usize,
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
}

impl Hub {
    /// A hub around a running policy thread.
    pub fn new(
        config: VigilConfig,
        engine: PolicyEngine,
        policy: PolicyHandle,
        onebot: Option<OneBotProfile>,
    ) -> Arc<Self> {
        let (events, inbox) = mpsc::channel(EVENT_BUFFER);
        Arc::new(Hub {
            config,
            registry: Registry::default(),
            policy,
            engine,
            metrics: Metrics::new(),
            onebot,
            started: Instant::now(),
            events,
            event_inbox: Mutex::new(Some(inbox)),
            events_dropped: AtomicU64::new(0),
            ping_sequence: AtomicU64::new(0),
            app_frames: AtomicU64::new(0),
            live_tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            clean_closes: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// The host's monotonic clock for policies: ms since start.
    pub fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Records an event for the policy; dropped if the buffer is full.
    pub fn event(&self, kind: EventKind) {
        let event = Event {
            at_ms: self.now_ms(Instant::now()),
            kind,
        };
        if self.events.try_send(event).is_err() {
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The receiving end of the event buffer, for the tick (taken once).
    pub(crate) fn take_event_inbox(&self) -> Option<mpsc::Receiver<Event>> {
        self.event_inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn next_ping_sequence(&self) -> u64 {
        self.ping_sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_app_frame(&self) {
        self.app_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Inbound application frames since start.
    pub fn app_frames(&self) -> u64 {
        self.app_frames.load(Ordering::Relaxed)
    }

    /// Whether shutdown has begun (new sessions are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Registers a new session; evicts the twin it supersedes, if any.
    pub(crate) fn admit(&self, session: Arc<Session>) {
        self.live_tasks.fetch_add(1, Ordering::SeqCst);
        let twin = self.registry.insert(Arc::clone(&session));
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
    }

    /// Removes a session and asks its task to close it with `code`. Counted
    /// by reason and tier and logged. False if it was already gone.
    pub fn evict(&self, id: SessionId, reason: &str, code: u16) -> bool {
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
        let tier = session.lock().tier;
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
        self.event(EventKind::Removed {
            session: session.id,
            reason: reason.to_owned(),
        });
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
    pub fn live_tasks(&self) -> usize {
        self.live_tasks.load(Ordering::SeqCst)
    }

    /// The facts of one session as of `now`.
    pub fn facts(&self, session: &Session, now: Instant) -> SessionFacts {
        let state = session.lock();
        let timeout = Duration::from_millis(self.config.tiers.timing(state.tier).pong_timeout_ms);
        session.facts(&state, now, timeout)
    }

    /// Has every session assessed by the new policy within the next
    /// [`REASSESS_SPREAD_TICKS`] ticks after a swap, rather than at each
    /// session's next scheduled assessment; spread so that no single tick
    /// carries every session at once.
    pub fn reassess_all(&self) {
        let now = Instant::now();
        let tick = Duration::from_millis(self.config.sessions.tick_ms);
        self.registry.for_each(|session| {
            let mut state = session.lock();
            let slot = (session.id % REASSESS_SPREAD_TICKS) as u32;
            state.reassess_at = state.reassess_at.min(now + tick * slot);
            // An overdue pong the old policy kept is news to the new one.
            state.overdue_reported = false;
            let timeout =
                Duration::from_millis(self.config.tiers.timing(state.tier).pong_timeout_ms);
            self.registry.set_due(session, state.next_due(timeout));
        });
    }

    /// Loads a candidate and dry-runs it on the current sessions' facts, off
    /// the async runtime; nothing running is touched.
    pub async fn validate_candidate(
        &self,
        source: PluginSource,
        config_json: String,
    ) -> Result<Validated, RejectedCandidate> {
        let (now_ms, snapshot) = self.facts_sample(DRY_RUN_SESSIONS);
        validate_off_runtime(
            self.engine.clone(),
            source,
            config_json,
            self.config.policy.limits.clone(),
            now_ms,
            snapshot,
        )
        .await
    }

    /// Validates a candidate against the current sessions and, if it passes,
    /// makes it the active policy; counts and logs either way. Used by the
    /// admin API and the file watch alike.
    pub async fn swap_policy(
        &self,
        source: PluginSource,
        config_json: String,
    ) -> Result<SwapReport, RejectedCandidate> {
        let received = Instant::now();
        let validated = self.validate_candidate(source, config_json).await;
        let validated = match validated {
            Ok(validated) => validated,
            Err(rejected) => {
                self.metrics.swap(false);
                tracing::warn!(reason = %rejected, "policy swap rejected; the active policy stays");
                return Err(rejected);
            }
        };
        let load_time = validated.validation_time;
        let dry_run_sessions = validated.dry_run_sessions;
        let supervisor = Supervisor::new(validated.sandbox, self.config.policy.faults.clone());
        let plugin = self
            .policy
            .swap(supervisor)
            .await
            .map_err(|gone| RejectedCandidate::Internal(gone.to_string()))?;
        // The new policy serves from here; bringing every session's next
        // assessment forward is follow-up work, not part of the swap.
        let swap_time = received.elapsed();
        self.reassess_all();
        self.metrics.swap(true);
        self.metrics.swap_seconds.observe(swap_time.as_secs_f64());
        tracing::info!(
            plugin = %plugin.name,
            sha256 = %plugin.sha256,
            swap_ms = swap_time.as_secs_f64() * 1e3,
            "policy swapped"
        );
        Ok(SwapReport {
            plugin,
            load_time,
            swap_time,
            dry_run_sessions,
        })
    }

    /// Every live session's facts as of now.
    pub fn facts_snapshot(&self) -> (u64, Vec<SessionFacts>) {
        self.facts_sample(usize::MAX)
    }

    /// Up to `limit` live sessions' facts as of now.
    pub fn facts_sample(&self, limit: usize) -> (u64, Vec<SessionFacts>) {
        let now = Instant::now();
        let mut facts = Vec::with_capacity(self.registry.len().min(limit));
        self.registry.for_each(|session| {
            if facts.len() < limit {
                facts.push(self.facts(session, now));
            }
        });
        (self.now_ms(now), facts)
    }

    /// Offers one message to one session's queue, within the queue's limits;
    /// tells the policy of backpressure and counts what was dropped.
    pub(crate) fn deliver(&self, session: &Session, message: Message) -> Enqueued {
        self.deliver_within(session, message, self.config.sessions.queue_max_bytes)
    }

    /// [`Hub::deliver`] without the hard limit (the soft mark still counts):
    /// for answers to a client's own requests, which must not be dropped.
    pub(crate) fn deliver_unbounded(&self, session: &Session, message: Message) -> Enqueued {
        self.deliver_within(session, message, usize::MAX)
    }

    fn deliver_within(&self, session: &Session, message: Message, hard: usize) -> Enqueued {
        let size = message_len(&message);
        let soft = self.config.sessions.queue_soft_bytes;
        let outcome = session.enqueue(message, size, soft, hard);
        if matches!(outcome, Enqueued::CrossedSoftMark(_) | Enqueued::Dropped) {
            // The policy hears of it at the next tick, not at the session's
            // next scheduled assessment.
            self.registry.set_due(session, None);
        }
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
        if matches!(
            outcome,
            Enqueued::Immediate | Enqueued::Behind | Enqueued::CrossedSoftMark(_)
        ) {
            self.metrics.messages_queued.inc();
        }
        outcome
    }

    /// Offers `data` to the targeted sessions' queues. Sessions whose
    /// endpoint takes no published messages (OneBot `/api`) are skipped.
    pub fn publish(&self, target: &Target, data: Message) -> PublishReport {
        let mut report = PublishReport::default();
        let mut offer = |session: &Arc<Session>| {
            if !session.endpoint.receives_published() {
                return;
            }
            match self.deliver(session, data.clone()) {
                Enqueued::Immediate => report.delivered += 1,
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
        }
        report
    }

    /// Offers a OneBot meta event (a heartbeat) to every `/` and `/event`
    /// session.
    pub(crate) fn publish_onebot_meta(&self, data: Message) {
        self.registry.for_each(|session| {
            if let Endpoint::OneBot { role, .. } = session.endpoint {
                if role.receives_events() {
                    self.deliver(session, data.clone());
                }
            }
        });
    }

    /// Graceful shutdown: closes every session with 1001 and waits up to the
    /// drain timeout for them to finish. Returns (clean closes, sessions).
    pub async fn shutdown(&self) -> (u64, usize) {
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
